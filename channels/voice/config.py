"""Settings for voice calls through Africa's Talking: the account, our number, our audio."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Voice has its own host; the SDK's VoiceService picks one of these from the username.
PRODUCTION_VOICE_URL = "https://voice.africastalking.com"
SANDBOX_VOICE_URL = "https://voice.sandbox.africastalking.com"


class VoiceSettings(Protocol):
    """What ``VoiceConfig.from_settings`` reads: the lead's ``[voice]`` config section."""

    @property
    def base_url(self) -> str: ...
    @property
    def caller_number(self) -> str: ...
    @property
    def audio_dir(self) -> str: ...
    @property
    def espeak_program(self) -> str: ...
    @property
    def say_voice(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def rate_per_second(self) -> float: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def executor_workers(self) -> int: ...


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """How to place calls and what the gateway serves while a call plays.

    Attributes:
        username: the Africa's Talking application username.
        api_key: the application's API key; never shown in ``repr``.
        caller_number: our Africa's Talking virtual number (E.164 with '+'), sent as ``from``.
            Not personal data, but kept out of ``repr`` all the same: it is a phone number.
        base_url: scheme and host of the voice API (``/call`` is appended), so a simulator's
            ``start()`` result can be passed as is.
        public_url: the gateway's public base URL; audio is served at
            ``{public_url}/audio/{name}``, which Africa's Talking must be able to fetch.
        audio_dir: where rendered audio is cached (created on first use).
        espeak_program: the espeak-ng executable (a name looked up on PATH, or a path).
        say_voice: the ``voice`` attribute of ``<Say>`` (Africa's Talking: ``man`` or
            ``woman``; Say reads English only).
        batch_size: numbers per call request.
        rate_per_second: calls per second we place (calls are long and billed per minute;
            the dispatcher's token bucket enforces it).
        request_timeout: seconds for connecting and, separately, for each read.
        executor_workers: threads running the synchronous SDK, hence the most call requests
            in flight at once.
        repeat_key: the key a citizen presses to hear the message again.
        digits_timeout: seconds ``<GetDigits>`` waits for that key.
        max_plays: how many times one call plays the message at most (first play included).
        synthesis_timeout: seconds one espeak-ng run may take.
        synthesis_concurrency: espeak-ng processes at once.
    """

    username: str
    api_key: str = field(repr=False)
    caller_number: str = field(repr=False)
    base_url: str = PRODUCTION_VOICE_URL
    public_url: str = "http://127.0.0.1:8080"
    audio_dir: Path = Path("warta-audio")
    espeak_program: str = "espeak-ng"
    say_voice: str = "woman"
    batch_size: int = 50
    rate_per_second: float = 5.0
    request_timeout: float = 10.0
    executor_workers: int = 4
    repeat_key: str = "1"
    digits_timeout: int = 10
    max_plays: int = 3
    synthesis_timeout: float = 30.0
    synthesis_concurrency: int = 2

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.executor_workers < 1 or self.synthesis_concurrency < 1:
            raise ValueError("executor_workers and synthesis_concurrency must be at least 1")
        if self.request_timeout <= 0 or self.synthesis_timeout <= 0:
            raise ValueError("request_timeout and synthesis_timeout must be positive")
        if not 1 <= self.max_plays <= 10:
            raise ValueError("max_plays must be between 1 and 10")
        if len(self.repeat_key) != 1 or self.repeat_key not in "0123456789*#":
            raise ValueError("repeat_key must be one phone key")
        if self.digits_timeout < 1:
            raise ValueError("digits_timeout must be at least 1 second")

    @classmethod
    def from_settings(
        cls, section: VoiceSettings, *, username: str, api_key: str, public_url: str
    ) -> VoiceConfig:
        """Build from the ``[voice]`` settings, the Africa's Talking account (the same
        username and key as SMS) and the gateway's public URL (``[http] public_url``)."""
        return cls(
            username=username,
            api_key=api_key,
            caller_number=section.caller_number,
            base_url=section.base_url,
            public_url=public_url,
            audio_dir=Path(section.audio_dir),
            espeak_program=section.espeak_program,
            say_voice=section.say_voice,
            batch_size=section.batch_size,
            rate_per_second=section.rate_per_second,
            request_timeout=section.request_timeout_s,
            executor_workers=section.executor_workers,
        )
