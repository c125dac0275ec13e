"""Turning an announcement's text into something a phone call can speak.

Africa's Talking's ``<Say>`` reads English only (docs.africastalking.com/voice/say), so for any
other language we synthesise the audio ourselves with espeak-ng and let the call ``<Play>`` it
from the gateway. espeak-ng writes WAV (RIFF, 16-bit mono PCM, 22 050 Hz) itself, one of the
formats telephony platforms play, so no sox or ffmpeg is needed.

Audio files are named by a hash of language and text (``audio_name``), so the same
announcement is rendered once however many citizens are called, and the name reveals nothing.
``SpeechRenderer`` owns the cache directory and the espeak-ng runs; everything else here is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from channels.voice.actions import CallScript, Play, Say, Speech
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

# Languages the provider's <Say> speaks.
SAY_LANGUAGES = frozenset({"en"})
# Our language code -> espeak-ng voice, for languages we render ourselves.
ESPEAK_VOICES: Mapping[str, str] = {"id": "id", "ms": "ms", "sw": "sw", "en": "en"}
AUDIO_NAME = re.compile(r"[0-9a-f]{32}\.wav")
AUDIO_MEDIA_TYPE = "audio/wav"
_SECONDS_KEPT = 512


@dataclass(frozen=True, slots=True)
class Wording:
    """The fixed sentences of a call, in one language."""

    prompt: str
    goodbye: str


WORDING: Mapping[str, Wording] = {
    "en": Wording(prompt="Press 1 to hear this message again.", goodbye="Goodbye."),
    "id": Wording(
        prompt="Tekan 1 untuk mendengar pesan ini lagi.",
        goodbye="Terima kasih. Sampai jumpa.",
    ),
}


def wording_for(language: str, repeat_key: str = "1") -> Wording:
    """The call's sentences in ``language`` (English when we have none in it)."""
    wording = WORDING.get(language, WORDING["en"])
    return Wording(prompt=wording.prompt.replace("1", repeat_key, 1), goodbye=wording.goodbye)


def audio_name(text: str, language: str) -> str:
    """The cache file name for ``text`` spoken in ``language``: 32 hex digits + ``.wav``."""
    digest = hashlib.sha256(f"{language}\n{text}".encode()).hexdigest()
    return f"{digest[:32]}.wav"


def is_wav(data: bytes) -> bool:
    """Whether ``data`` starts like a WAV file (``RIFF`` …  ``WAVE``)."""
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def espeak_command(program: str, voice: str, out_path: Path | None) -> list[str]:
    """The espeak-ng command writing WAV to ``out_path`` (None: to standard output); the text
    goes on standard input.

    Reading the text from stdin keeps it out of the process list and means a text starting
    with ``-`` is never taken for an option.
    """
    out = ["--stdout"] if out_path is None else ["-w", str(out_path)]
    return [program, "-b", "1", "-v", voice, *out, "--stdin"]


def estimated_speech_seconds(text: str) -> float:
    """How long ``text`` takes to speak, guessed from the text alone (when espeak-ng cannot
    tell): about 7 letters a second, and 0.6 s per digit, since numbers are read out in words
    ("2026": "two thousand twenty-six"). It errs long: against espeak-ng's own audio it is
    1.0-2.1 times the real length on the sample texts of the tests, the most on short ones."""
    letters = sum(1 for c in text if c.isalpha())
    digits = sum(1 for c in text if c.isdigit())
    return letters / 7 + digits * 0.6


def estimated_call_seconds(
    text: str, language: str, *, repeat_key: str = "1", digits_timeout: int = 10
) -> float:
    """``SpeechRenderer.call_seconds`` guessed from the text alone."""
    spoken = spoken_in_call(text, language, repeat_key)
    return sum(estimated_speech_seconds(part) for part in spoken) + digits_timeout


def spoken_in_call(text: str, language: str, repeat_key: str = "1") -> tuple[str, str, str]:
    """What one play of a call says, in order: the message, the repeat prompt, the goodbye."""
    wording = wording_for(language, repeat_key)
    return text, wording.prompt, wording.goodbye


def wav_seconds(path: Path) -> float:
    """The playing time of a WAV file, from its header."""
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def pcm_seconds(data: bytes) -> float:
    """The playing time of WAV ``data`` written to a pipe, whose header cannot give its size:
    the bytes after the ``data`` chunk's header, over the ``fmt `` chunk's bytes per frame and
    frames per second.

    Raises:
        ValueError: ``data`` is not PCM WAV.
    """
    if not is_wav(data):
        raise ValueError("not WAV")
    frame = rate = 0
    at = 12
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if chunk == b"fmt " and size >= 16:
            channels = int.from_bytes(data[at + 10 : at + 12], "little")
            rate = int.from_bytes(data[at + 12 : at + 16], "little")
            frame = channels * int.from_bytes(data[at + 22 : at + 24], "little") // 8
        elif chunk == b"data":
            if not rate or not frame:
                raise ValueError("no PCM format before the data")
            return (len(data) - at - 8) // frame / rate
        at += 8 + size + size % 2  # chunks are padded to an even size
    raise ValueError("no data chunk")


def _head(path: Path, size: int = 12) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


class SpeechRenderer:
    """Renders and caches call audio, and says what a call should speak.

    Args:
        audio_dir: the cache directory (created when first needed).
        public_url: the gateway's public base URL; audio is at ``{public_url}/audio/{name}``.
        program: the espeak-ng executable.
        say_voice: the ``voice`` attribute for ``<Say>``.
        concurrency: espeak-ng processes at once.
        timeout: seconds one espeak-ng run may take.
    """

    def __init__(
        self,
        audio_dir: Path,
        public_url: str,
        *,
        program: str = "espeak-ng",
        say_voice: str | None = "woman",
        concurrency: int = 2,
        timeout: float = 30.0,
    ) -> None:
        self.audio_dir = Path(audio_dir)
        self.public_url = public_url.rstrip("/")
        self.program = program
        self.say_voice = say_voice
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._rendering: dict[str, asyncio.Task[None]] = {}
        # (language, text) -> seconds espeak-ng takes to speak it: the prompt and goodbye of
        # every call, and an announcement previewed again, are measured once.
        self._seconds_known: LRUCache[tuple[str, str], float] = LRUCache(_SECONDS_KEPT)

    def __repr__(self) -> str:
        return f"<SpeechRenderer audio_dir={str(self.audio_dir)!r}>"

    def executable(self) -> str:
        """The full path of espeak-ng.

        Raises:
            ConfigError: the program is not installed (names it and the Debian package).
        """
        found = shutil.which(self.program)
        if found is None:
            raise ConfigError(
                f"{self.program} not found: install it (Debian: apt-get install espeak-ng) "
                "to call citizens in languages the provider cannot speak"
            )
        return found

    def audio_url(self, name: str) -> str:
        return f"{self.public_url}/audio/{name}"

    def audio_path(self, name: str) -> Path | None:
        """The cached file for a requested name, for the ``/audio/{name}`` route.

        Returns None for a name that is not one of ours (which also stops path traversal) or
        a file not rendered (yet).
        """
        if not AUDIO_NAME.fullmatch(name):
            return None
        path = self.audio_dir / name
        return path if path.is_file() else None

    async def speech(self, text: str, language: str) -> Speech:
        """``<Say>`` for languages the provider speaks, else ``<Play>`` of our rendering.

        Raises:
            ConfigError: espeak-ng is missing or has no voice for ``language``.
        """
        if language in SAY_LANGUAGES:
            return Say(text, voice=self.say_voice)
        path = await self.render(text, language)
        return Play(self.audio_url(path.name))

    async def script(
        self,
        text: str,
        language: str,
        *,
        digits_url: str,
        repeat_key: str = "1",
        digits_timeout: int = 10,
        max_plays: int = 3,
    ) -> CallScript:
        """The whole call for ``text``: message, repeat prompt and goodbye in ``language``."""
        wording = wording_for(language, repeat_key)
        return CallScript(
            message=await self.speech(text, language),
            prompt=await self.speech(wording.prompt, language),
            goodbye=await self.speech(wording.goodbye, language),
            digits_url=digits_url,
            repeat_key=repeat_key,
            digits_timeout=digits_timeout,
            max_plays=max_plays,
        )

    async def seconds(self, text: str, language: str) -> float:
        """How long ``text`` takes to speak in ``language``: the length of espeak-ng's audio,
        else ``estimated_speech_seconds``. Audio a call already rendered is read from the
        cache; otherwise espeak-ng speaks to a pipe and nothing is kept, so a preview redrawn
        as an author types leaves no files behind. For English, which the provider's own voice
        reads, espeak-ng's reading stands in for it."""
        key = (language, text)
        known = self._seconds_known.get(key)
        if known is not None:
            return known
        try:
            path = self.audio_dir / audio_name(text, language)
            if path.is_file():
                seconds = await asyncio.to_thread(wav_seconds, path)
            else:
                voice = ESPEAK_VOICES.get(language)
                if voice is None:
                    raise ConfigError(f"no espeak-ng voice configured for language {language!r}")
                command = espeak_command(self.executable(), voice, None)
                seconds = pcm_seconds(await self._espeak(command, text))
        except (ConfigError, OSError, ValueError, wave.Error, EOFError) as exc:
            log.info("speech length guessed from the text (%s)", type(exc).__name__)
            return estimated_speech_seconds(text)
        # Measured lengths only: espeak-ng installed later is used at once.
        self._seconds_known[key] = seconds
        return seconds

    async def call_seconds(
        self, text: str, language: str, *, repeat_key: str = "1", digits_timeout: int = 10
    ) -> float:
        """How long a call reading ``text`` once lasts: the message, the repeat prompt, the
        wait for a key (a citizen who presses none waits it out) and the goodbye."""
        spoken = [
            await self.seconds(part, language)
            for part in spoken_in_call(text, language, repeat_key)
        ]
        return sum(spoken) + digits_timeout

    async def render(self, text: str, language: str) -> Path:
        """The cached WAV for ``text`` in ``language``, rendering it first if needed.

        Concurrent requests for the same audio share one espeak-ng run.

        Raises:
            ConfigError: espeak-ng is missing, has no voice for ``language``, failed, timed
                out or wrote something that is not WAV.
        """
        voice = ESPEAK_VOICES.get(language)
        if voice is None:
            raise ConfigError(f"no espeak-ng voice configured for language {language!r}")
        name = audio_name(text, language)
        path = self.audio_dir / name
        if path.is_file():
            return path
        task = self._rendering.get(name)
        if task is None:
            task = asyncio.create_task(self._run_espeak(text, voice, path))
            self._rendering[name] = task
            task.add_done_callback(lambda done: self._finished(name, done))
        # Shielded: a caller giving up (a hung-up call) does not waste a rendering others use.
        await asyncio.shield(task)
        return path

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        self._rendering.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not reported twice

    async def _run_espeak(self, text: str, voice: str, path: Path) -> None:
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(suffix=".part", dir=self.audio_dir)
        os.close(handle)
        temp = Path(temp_name)
        try:
            await self._espeak(espeak_command(self.executable(), voice, temp), text)
            if not is_wav(await asyncio.to_thread(_head, temp)):
                raise ConfigError("espeak-ng wrote something that is not WAV")
            # Rename last, so a half-written file is never served or taken for the cache.
            temp.replace(path)
            log.debug("rendered call audio %s", path.name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def _espeak(self, command: list[str], text: str) -> bytes:
        """Run espeak-ng on ``text`` (on standard input) within the concurrency limit and the
        timeout; returns what it wrote to standard output.

        Raises:
            ConfigError: it is missing, failed or timed out.
        """
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                stdout, stderr = await asyncio.wait_for(
                    process.communicate(text.encode()), timeout=self._timeout
                )
            except TimeoutError:
                process.kill()
                await process.wait()
                raise ConfigError("espeak-ng timed out") from None
        if process.returncode != 0:
            # stderr names the problem (e.g. an unknown voice), never the text.
            detail = stderr.decode(errors="replace").strip().splitlines()[:1]
            log.warning("espeak-ng exited with %s: %s", process.returncode, detail)
            raise ConfigError(f"espeak-ng failed (exit {process.returncode})")
        return stdout
