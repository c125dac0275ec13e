"""A real aiohttp server speaking Africa's Talking's documented voice wire format.

``POST /call`` takes the form fields ``username``, ``from`` (our virtual number), ``to``
(comma-separated) and optional ``clientRequestId`` with an ``apiKey`` header, and answers
``{"entries": [{"phoneNumber", "status": "Queued", "sessionId": "ATVId_…"}, …],
"errorMessage": "None"}`` (``Content-Type: application/json`` exactly, which the official SDK
needs). A wrong key gets HTTP 401. Outcomes: ``channels.voice.simconfig``.

Then it plays each queued call as Africa's Talking would, on a bounded pool of workers: after
``answer_delay`` it POSTs the answer callback (``isActive=1``, ``sessionId``, ``direction``,
``callerNumber``, ``destinationNumber``, ``callSessionState``) to ``callback_url`` and walks the
XML it gets back, checking that it parses and uses only documented actions: ``<Say>`` is
"spoken", ``<Play url>`` is fetched and must be WAV (RIFF/WAVE), ``<GetDigits>`` presses the
next key scripted for that number and POSTs it (``dtmfDigits``) to its ``callbackUrl``, which
answers with the next document. When a document runs out it hangs up and POSTs the final
callback (``isActive=0``, ``callSessionState``, ``status``, ``hangupCause``,
``durationInSeconds``, ``amount``, ``currencyCode``). An unanswered call only gets the final one.

Everything is recorded on ``calls`` (one ``SimulatedCall`` per session) and ``received``; nothing
here logs a phone number or a key. ``faults`` is the fault schedule (``channels.simfaults``: 5xx
bursts, 429s, resets, hangs, an outage, on demand at ``/simulator/faults``) for ``POST /call``,
with its ``arrivals``, every call request's time, fault and numbers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from channels.africastalking.simulator import (
    UNAUTHORIZED_TEXT,
    RecipientCounter,
    _recipients_of,
    _throttled,
    credentials_ok,
    exact_json,
)
from channels.simdraws import draw, seconds
from channels.simfaults import FaultSchedule
from channels.simserver import LaterWork, SimulatorServer
from channels.voice.simconfig import (
    ENTRY_STATUS,
    KNOWN_ACTIONS,
    PLAYED_ACTIONS,
    REQUEST_OUTCOMES,
    VoiceSimulatorConfig,
)

__all__ = ["ReceivedCallRequest", "SimulatedCall", "VoiceSimulator", "serve_forever"]

log = logging.getLogger(__name__)

CALL_PATH = "/call"


@dataclass(frozen=True, slots=True)
class ReceivedCallRequest:
    """One call request as received. ``fields`` is the exact form."""

    fields: Mapping[str, str] = field(repr=False)
    numbers: tuple[str, ...] = field(repr=False)
    received_at: float
    http_status: int


@dataclass(slots=True)
class SimulatedCall:
    """One call session and everything that happened in it."""

    session_id: str
    number: str = field(repr=False)
    outcome: str = "answered"
    documents: list[list[str]] = field(default_factory=list)  # action names per document
    spoken: list[str] = field(default_factory=list, repr=False)  # <Say> texts
    audio_fetched: list[str] = field(default_factory=list)  # <Play> URLs, in order
    digits_sent: list[str] = field(default_factory=list)
    callbacks: list[dict[str, str]] = field(default_factory=list, repr=False)  # forms posted
    problems: list[str] = field(default_factory=list)
    duration: int = 0
    final_delivered: bool = False
    done: bool = False


class _CallEnded(Exception):
    """The gateway's answer cannot be played on; the call hangs up."""


class VoiceSimulator(SimulatorServer):
    """The voice simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: VoiceSimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or VoiceSimulatorConfig()
        self.received: deque[ReceivedCallRequest] = deque(maxlen=self.config.max_records)
        self.calls: dict[str, SimulatedCall] = {}
        self.calls_placed = RecipientCounter()
        self.audio_fetches: Counter[str] = Counter()
        self.requests_total = 0
        self.used_outcomes: set[str] = set()
        self._rng = random.Random(self.config.seed)
        self._session_seq = 0
        self._suffixes = sorted(self.config.suffix_outcomes, key=len, reverse=True)
        self._calls = LaterWork(
            self._play_call,
            concurrency=self.config.call_concurrency,
            failed=_went_wrong,
            what="voice call",
        )
        self.faults = FaultSchedule(
            is_send=lambda request: request.method == "POST" and request.path == CALL_PATH,
            recipients=_recipients_of,  # the ``to`` form field, as for SMS
            throttled=_throttled,  # Africa's Talking's 429, the same as for SMS
        )
        self.app = web.Application(middlewares=[self.faults.middleware])
        self.app.router.add_post(CALL_PATH, self._handle_call)
        self.faults.add_routes(self.app)
        self.app.cleanup_ctx.append(self._calls.run)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<VoiceSimulator requests={self.requests_total} calls={len(self.calls)}>"

    def unused_outcomes(self) -> set[str]:
        """Numbers with a canned outcome, call outcome or key script nobody used."""
        canned = {*self.config.outcomes, *self.config.call_outcomes, *self.config.key_presses}
        return canned - self.used_outcomes

    async def wait_for_calls(self) -> None:
        """Return once every call queued so far has been played to its final callback."""
        await self._calls.join()

    # Call requests ---------------------------------------------------------------------

    def _outcome_for(self, number: str) -> str:
        outcome = self.config.outcomes.get(number)
        if outcome is not None:
            self.used_outcomes.add(number)
            return outcome
        for suffix in self._suffixes:
            if number.endswith(suffix):
                return self.config.suffix_outcomes[suffix]
        return "queued"

    def _record(self, fields: dict[str, str], numbers: tuple[str, ...], status: int) -> None:
        self.received.append(ReceivedCallRequest(fields, numbers, time.time(), status))

    async def _handle_call(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        numbers = tuple(part.strip() for part in fields.get("to", "").split(",") if part.strip())
        self.requests_total += 1
        latency = seconds(config.latency, self._rng)
        if latency > 0:
            await asyncio.sleep(latency)
        if not credentials_ok(request, fields.get("username"), config):
            self._record(fields, numbers, 401)
            return web.Response(status=401, text=UNAUTHORIZED_TEXT)
        missing = [name for name in ("username", "from", "to") if not fields.get(name)]
        if missing or not numbers:
            self._record(fields, numbers, 400)
            return web.Response(
                status=400, text=f"Missing required field: {(missing or ['to'])[0]}"
            )
        outcomes = [self._outcome_for(number) for number in numbers]
        request_outcome = next((o for o in outcomes if o in REQUEST_OUTCOMES), None)
        request_outcome = request_outcome or draw(config.request_failure_shares, self._rng)
        if request_outcome == "throttled":
            self._record(fields, numbers, 429)
            return _throttled(config.retry_after_seconds)
        if request_outcome == "server_error":
            self._record(fields, numbers, 500)
            return web.Response(status=500, text="Internal Server Error")
        if request_outcome == "timeout":
            self._record(fields, numbers, 504)
            await self.hang(config.timeout_hang)
            return web.Response(status=504, text="Gateway Timeout")
        self._record(fields, numbers, 200)
        if config.caller_numbers and fields["from"] not in config.caller_numbers:
            return exact_json({"entries": [], "errorMessage": "Invalid callerId"})
        entries = [
            self._entry(number, outcome) for number, outcome in zip(numbers, outcomes, strict=True)
        ]
        return exact_json({"entries": entries, "errorMessage": "None"})

    def _entry(self, number: str, outcome: str) -> dict[str, str]:
        status = ENTRY_STATUS[outcome]
        if status != "Queued":
            return {"phoneNumber": number, "status": status, "sessionId": "None"}
        self._session_seq += 1
        session_id = f"ATVId_{self._session_seq:032x}"
        call = SimulatedCall(session_id=session_id, number=number)
        self.calls[session_id] = call
        self.calls_placed.add(number)
        if self.config.callback_url is not None and self._calls.running:
            due = asyncio.get_running_loop().time() + seconds(self.config.answer_delay, self._rng)
            self._calls.put(call, due=due)
        return {"phoneNumber": number, "status": "Queued", "sessionId": session_id}

    # Playing calls ---------------------------------------------------------------------

    async def _play_call(self, session: aiohttp.ClientSession, call: SimulatedCall) -> None:
        try:
            await self._play(session, call)
        finally:
            call.done = True

    def _form(self, call: SimulatedCall, **extra: str) -> dict[str, str]:
        form = {
            "isActive": "1",
            "sessionId": call.session_id,
            "direction": "Outbound",
            "callerNumber": call.number,
            "destinationNumber": next(iter(self.config.caller_numbers), "+254711082000"),
            "callSessionState": "Active",
        }
        form.update(extra)
        return form

    async def _play(self, session: aiohttp.ClientSession, call: SimulatedCall) -> None:
        config = self.config
        canned = config.call_outcomes.get(call.number)
        if canned is not None:
            self.used_outcomes.add(call.number)
        call.outcome = canned or draw(config.call_outcome_shares, self._rng) or "answered"
        if call.outcome != "answered":
            await self._final(session, call, "NotAnswered", "NotAnswered", call.outcome)
            return
        presses = deque(config.key_presses.get(call.number, ()))
        if presses:
            self.used_outcomes.add(call.number)
        url: str | None = config.callback_url
        form = self._form(call)
        try:
            for _ in range(config.max_steps):
                assert url is not None
                document = await self._post(session, url, form, call, expect_xml=True)
                url, digits = await self._walk(session, document, call, presses)
                if url is None or digits is None:
                    break
                form = self._form(call, dtmfDigits=digits)
            else:
                call.problems.append("call still going after max_steps documents")
        except _CallEnded as ended:
            call.problems.append(str(ended))
        await self._final(session, call, "Completed", "Success", "NORMAL_CLEARING")

    async def _walk(
        self,
        session: aiohttp.ClientSession,
        document: str,
        call: SimulatedCall,
        presses: deque[str],
    ) -> tuple[str | None, str | None]:
        """Play one document; returns (URL, digits) to post next, or (None, None) to hang up."""
        if "<!DOCTYPE" in document or "<!ENTITY" in document:
            # Africa's Talking documents no DTDs; refusing them also rules out entity bombs.
            raise _CallEnded("the answer declares a DTD")
        try:
            root = ET.fromstring(document)  # noqa: S314 - DTDs refused above
        except ET.ParseError:
            raise _CallEnded("the answer is not XML") from None
        if root.tag != "Response":
            raise _CallEnded(f"root element is {root.tag!r}, not 'Response'")
        call.documents.append([child.tag for child in root])
        for action in root:
            if action.tag not in KNOWN_ACTIONS:
                raise _CallEnded(f"unknown action {action.tag!r}")
            if action.tag not in PLAYED_ACTIONS:
                raise _CallEnded(f"action {action.tag!r} is not simulated")
            if action.tag != "GetDigits":
                await self._speak(session, action, call)
                continue
            for prompt in action:
                if prompt.tag not in ("Say", "Play"):
                    raise _CallEnded(f"{prompt.tag!r} inside GetDigits")
                await self._speak(session, prompt, call)
            for name in ("numDigits", "timeout"):
                value = action.get(name)
                if value is not None and not value.isdigit():
                    raise _CallEnded(f"GetDigits {name} is not a whole number")
            key = presses.popleft() if presses else ""
            if key:
                call.digits_sent.append(key)
                return action.get("callbackUrl") or self.config.callback_url, key
            # No key: Africa's Talking moves on to the next action.
        return None, None

    async def _speak(
        self, session: aiohttp.ClientSession, action: ET.Element, call: SimulatedCall
    ) -> None:
        if action.tag == "Say":
            if not (action.text or "").strip():
                raise _CallEnded("empty Say")
            call.spoken.append(action.text or "")
        elif action.tag == "Play":
            url = action.get("url")
            if not url:
                raise _CallEnded("Play without url")
            async with session.get(url) as response:
                head = await response.content.read(12)
                if response.status != 200:
                    raise _CallEnded(f"audio fetch answered HTTP {response.status}")
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise _CallEnded("Play url is not WAV audio")
            call.audio_fetched.append(url)
            self.audio_fetches[url] += 1
        else:
            raise _CallEnded(f"{action.tag!r} cannot be spoken")
        call.duration += self.config.seconds_per_action

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        form: dict[str, str],
        call: SimulatedCall,
        *,
        expect_xml: bool,
    ) -> str:
        call.callbacks.append(form)
        backoff = self.config.callback_backoff
        for attempt in range(self.config.callback_attempts):
            try:
                async with session.post(url, data=form) as response:
                    body = await response.text()
                    if response.status == 200:
                        return body
                    if response.status < 500 and response.status != 429:
                        raise _CallEnded(f"callback answered HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("voice callback attempt failed: %s", type(exc).__name__)
            if attempt + 1 < self.config.callback_attempts:
                await asyncio.sleep(backoff * 2**attempt)
        raise _CallEnded("callback unreachable" if expect_xml else "final callback unreachable")

    async def _final(
        self,
        session: aiohttp.ClientSession,
        call: SimulatedCall,
        state: str,
        status: str,
        cause: str,
    ) -> None:
        minutes = math.ceil(call.duration / 60)
        amount = self.config.price_per_minute * minutes
        form = self._form(
            call,
            isActive="0",
            callSessionState=state,
            status=status,
            hangupCause=cause,
            durationInSeconds=str(call.duration),
            amount=f"{amount:.4f}" if minutes else "0",
            currencyCode=self.config.currency,
        )
        try:
            await self._post(session, self.config.callback_url or "", form, call, expect_xml=False)
            call.final_delivered = True
        except _CallEnded as ended:
            call.problems.append(str(ended))


async def serve_forever(host: str, port: int, config: VoiceSimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate voice``)."""
    simulator = VoiceSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("Africa's Talking voice simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()


def _went_wrong(call: SimulatedCall) -> None:
    call.problems.append("simulator error")
