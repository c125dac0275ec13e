"""A real aiohttp server speaking Africa's Talking's documented SMS wire format.

``GET /version1/user`` answers the account's balance (``SimulatorConfig.balance``).
``POST /version1/messaging`` takes the form fields ``username``, ``to`` (comma-separated),
``message``, ``from``, ``bulkSMSMode`` and ``enqueue`` with an ``apiKey`` header, and answers
like the real API: HTTP 201, ``Content-Type: application/json`` exactly (the official Python
SDK only decodes JSON when the header is exactly that) and ``{"SMSMessageData": {"Message":
"Sent to 1/1 Total Cost: KES 0.8000", "Recipients": [{"statusCode": 101, "number": ...,
"status": "Success", "cost": "KES 0.8000", "messageId": "ATXid_..."}]}}``. A wrong or missing
key gets HTTP 401 with a plain-text body. Outcomes come from ``SimulatorConfig`` (see
``channels.africastalking.simconfig``).

For every accepted message it later POSTs a form-encoded delivery report (``id``, ``status``,
``phoneNumber``, ``networkCode``, ``failureReason`` when failed) to ``delivery_report_url``,
from a bounded pool of workers that retry while the receiver errs or is down.

What it received, for tests and benchmarks:

- ``received``: the last ``max_records`` requests (``ReceivedRequest``), oldest dropped first;
  ``records_dropped`` counts the dropped ones.
- ``sent_count``: a ``RecipientCounter`` of every accepted message per number, never bounded
  but stored as integers (~70 bytes per distinct number, so a million numbers fit in ~70 MB);
  ``sent_count.duplicates()`` names numbers that were sent more than once.
- ``requests_total``, ``recipients_total`` and the delivery report counters.
- ``balance``: the account's credit left (``SimulatorConfig.balance``; None: no limit), read
  and set at ``GET``/``POST /simulator/balance`` (``{"balance": "5000"}``, or null for no
  limit): an agency's balance running out mid-broadcast, and its top-up, on demand.
- ``faults``: the fault schedule (``channels.simfaults``: 5xx bursts, 429s, resets, hangs, an
  outage, on demand at ``/simulator/faults``) and its ``arrivals``, every send request's time.

Nothing here logs a phone number or a key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from channels.africastalking.simconfig import (
    ACCEPTED_CODES,
    RECIPIENT_STATUS,
    REQUEST_OUTCOMES,
    SimulatorConfig,
    count_segments,
    split_report_outcome,
)
from channels.simdraws import draw, seconds
from channels.simfaults import FaultSchedule, invalid_body
from channels.simserver import LaterWork, SimulatorServer, post_until_taken

__all__ = [
    "AfricasTalkingSimulator",
    "ReceivedRequest",
    "RecipientCounter",
    "SimulatorConfig",
    "serve_forever",
]

log = logging.getLogger(__name__)

MESSAGING_PATH = "/version1/messaging"
USER_PATH = "/version1/user"
# Not Africa's Talking's: the simulator's own view of one handset, for ``warta phone``.
PHONE_PATH = "/simulator/phones/{number}/messages"
BALANCE_PATH = "/simulator/balance"
_E164 = re.compile(r"\+[1-9]\d{6,14}")
UNAUTHORIZED_TEXT = "The supplied authentication is invalid"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the simulator received it. ``fields`` is the exact form."""

    fields: Mapping[str, str] = field(repr=False)
    recipients: tuple[str, ...] = field(repr=False)
    message: str
    sender: str | None
    received_at: float
    http_status: int
    authenticated: bool


class RecipientCounter:
    """Messages accepted per number; numbers kept as integers to stay small at scale."""

    def __init__(self) -> None:
        self._by_digits: Counter[int] = Counter()
        self._other: Counter[str] = Counter()

    @staticmethod
    def _key(number: str) -> int | str:
        digits = number[1:] if number.startswith("+") else number
        return int(digits) if digits.isdigit() and digits[:1] != "0" else number

    def add(self, number: str) -> None:
        key = self._key(number)
        if isinstance(key, int):
            self._by_digits[key] += 1
        else:
            self._other[key] += 1

    def __getitem__(self, number: str) -> int:
        key = self._key(number)
        return self._by_digits[key] if isinstance(key, int) else self._other[key]

    def __len__(self) -> int:
        return len(self._by_digits) + len(self._other)

    def __repr__(self) -> str:
        return f"<RecipientCounter numbers={len(self)} messages={self.total()}>"

    def items(self) -> Iterator[tuple[str, int]]:
        for digits, count in self._by_digits.items():
            yield f"+{digits}", count
        yield from self._other.items()

    def total(self) -> int:
        return self._by_digits.total() + self._other.total()

    def duplicates(self) -> dict[str, int]:
        """Numbers that were sent more than once, with their counts."""
        return {number: count for number, count in self.items() if count > 1}


class AfricasTalkingSimulator(SimulatorServer):
    """The simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SimulatorConfig()
        self.delivery_report_url = self.config.delivery_report_url
        self.received: deque[ReceivedRequest] = deque(maxlen=self.config.max_records)
        self.records_dropped = 0
        self.sent_count = RecipientCounter()
        self.requests_total = 0
        self.recipients_total = 0
        self.reports_delivered = 0
        self.reports_refused = 0
        self.reports_failed = 0
        self.used_outcomes: set[str] = set()
        self.balance: Decimal | None = self.config.balance
        self._rng = random.Random(self.config.seed)
        self._message_seq = 0
        self._suffixes = sorted(self.config.suffix_outcomes, key=len, reverse=True)
        self._reports = LaterWork(
            self._post_report,
            concurrency=self.config.delivery_report_concurrency,
            failed=self._report_failed,
            what="delivery report",
        )
        self.faults = FaultSchedule(
            is_send=lambda request: request.path == MESSAGING_PATH,
            recipients=_recipients_of,
            throttled=_throttled,
        )
        self.app = web.Application(
            client_max_size=32 * 1024 * 1024, middlewares=[self.faults.middleware]
        )
        self.app.router.add_post(MESSAGING_PATH, self._handle_send)
        self.faults.add_routes(self.app)
        self.app.router.add_get(USER_PATH, self._handle_user)
        self.app.router.add_get(PHONE_PATH, self._handle_phone)
        self.app.router.add_get(BALANCE_PATH, self._handle_balance)
        self.app.router.add_post(BALANCE_PATH, self._handle_balance)
        self.app.cleanup_ctx.append(self._reports.run)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<AfricasTalkingSimulator requests={self.requests_total}>"

    def unused_outcomes(self) -> set[str]:
        """Numbers with a canned outcome that no request has used yet."""
        return set(self.config.outcomes) - self.used_outcomes

    async def wait_for_reports(self) -> None:
        """Return once every delivery report queued so far was posted or given up on."""
        await self._reports.join()

    def _report_failed(self, _report: dict[str, str]) -> None:
        self.reports_failed += 1

    async def _post_report(self, session: aiohttp.ClientSession, report: dict[str, str]) -> None:
        posted = await post_until_taken(
            session,
            lambda: self.delivery_report_url,
            data=report,
            attempts=self.config.delivery_report_attempts,
            backoff=self.config.delivery_report_backoff,
            what="delivery report",
        )
        if posted == "delivered":
            self.reports_delivered += 1
        elif posted == "refused":
            self.reports_refused += 1
        elif posted == "failed":
            self.reports_failed += 1

    def _outcome_for(self, number: str) -> str | None:
        outcome = self.config.outcomes.get(number)
        if outcome is not None:
            self.used_outcomes.add(number)
            return outcome
        for suffix in self._suffixes:
            if number.endswith(suffix):
                return self.config.suffix_outcomes[suffix]
        if not _E164.fullmatch(number):
            return "invalid_number"
        return None

    def _record(
        self, fields: dict[str, str], recipients: tuple[str, ...], status: int, arrived: float
    ) -> None:
        if len(self.received) == self.received.maxlen:
            self.records_dropped += 1
        self.received.append(
            ReceivedRequest(
                fields=fields,
                recipients=recipients,
                message=fields.get("message", ""),
                sender=fields.get("from"),
                received_at=arrived,
                http_status=status,
                authenticated=status != 401,
            )
        )

    async def _handle_phone(self, request: web.Request) -> web.StreamResponse:
        """The messages accepted for one number, oldest first (``?after=`` a ``seq``)."""
        number = request.match_info["number"]
        try:
            after = int(request.query.get("after", "-1"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer") from None
        first = self.records_dropped  # a record's number stays the same as older ones drop
        messages = [
            {"seq": seq, "from": record.sender, "text": record.message, "at": record.received_at}
            for seq, record in enumerate(self.received, start=first)
            if seq > after and 200 <= record.http_status < 300 and number in record.recipients
        ]
        return web.json_response({"messages": messages, "last": first + len(self.received) - 1})

    async def _handle_user(self, request: web.Request) -> web.StreamResponse:
        """Africa's Talking's application data: ``{"UserData": {"balance": "KES 1785.5000"}}``.
        With no limit set the simulator names no balance."""
        config = self.config
        if not credentials_ok(request, request.query.get("username"), config):
            return web.Response(status=401, text=UNAUTHORIZED_TEXT)
        data = {} if self.balance is None else {"balance": f"{config.currency} {self.balance:.4f}"}
        return exact_json({"UserData": data})

    async def _handle_balance(self, request: web.Request) -> web.StreamResponse:
        """The account's credit left; a POST sets it (``{"balance": "5000"}``, null: no
        limit)."""
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return invalid_body(None, "the body must be JSON")
            if not isinstance(body, dict) or "balance" not in body:
                return invalid_body("balance", "balance is required (an amount, or null)")
            value = body["balance"]
            if value is None:
                self.balance = None
            else:
                try:
                    amount = Decimal(str(value))
                except ArithmeticError:
                    amount = Decimal(-1)
                if not amount.is_finite() or amount < 0 or isinstance(value, bool):
                    return invalid_body("balance", "balance must be an amount of 0 or more")
                self.balance = amount
                log.info("simulated account balance set")
        left = None if self.balance is None else f"{self.balance:.4f}"
        return web.json_response({"balance": left, "currency": self.config.currency})

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        # A provider counts a request against its rate when it arrives, before its own work.
        arrived = time.time()
        config = self.config
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        recipients = tuple(part.strip() for part in fields.get("to", "").split(",") if part.strip())
        self.requests_total += 1
        latency = seconds(config.latency, self._rng)
        if latency > 0:
            await asyncio.sleep(latency)

        if not credentials_ok(request, fields.get("username"), config):
            self._record(fields, recipients, 401, arrived)
            return web.Response(status=401, text=UNAUTHORIZED_TEXT)
        missing = [name for name in ("username", "to", "message") if not fields.get(name)]
        if missing or not recipients:
            self._record(fields, recipients, 400, arrived)
            name = missing[0] if missing else "to"
            return web.Response(status=400, text=f"Missing required field: {name}")

        outcomes = [self._outcome_for(number) for number in recipients]
        request_outcome = next((o for o in outcomes if o in REQUEST_OUTCOMES), None)
        if request_outcome is None:
            request_outcome = draw(config.request_failure_shares, self._rng)
        if request_outcome == "throttled":
            self._record(fields, recipients, 429, arrived)
            return _throttled(config.retry_after_seconds)
        if request_outcome == "server_error":
            self._record(fields, recipients, 500, arrived)
            return web.Response(status=500, text="Internal Server Error")
        if request_outcome == "timeout":
            self._record(fields, recipients, 504, arrived)
            await self.hang(config.timeout_hang)
            return web.Response(status=504, text="Gateway Timeout")

        self._record(fields, recipients, 201, arrived)
        return self._answer(fields["message"], recipients, outcomes)

    def _answer(
        self, message: str, recipients: tuple[str, ...], outcomes: list[str | None]
    ) -> web.Response:
        config = self.config
        price = config.cost_per_segment * count_segments(message)
        price_text = f"{config.currency} {price:.4f}"
        loop = asyncio.get_running_loop()
        report_due = None
        if self.delivery_report_url is not None and self._reports.running:
            report_due = loop.time() + seconds(config.delivery_report_delay, self._rng)
        entries = []
        accepted = 0
        for number, outcome in zip(recipients, outcomes, strict=True):
            if outcome is None:
                outcome = draw(config.recipient_failure_shares, self._rng) or "success"
            code, word = RECIPIENT_STATUS[outcome]
            if code in ACCEPTED_CODES and self.balance is not None:
                if self.balance < price:
                    code, word = RECIPIENT_STATUS["insufficient_balance"]
                else:
                    self.balance -= price
            if code in ACCEPTED_CODES:
                accepted += 1
                self._message_seq += 1
                message_id = f"ATXid_{self._message_seq:032x}"
                self.sent_count.add(number)
                cost = price_text
                if report_due is not None:
                    self._queue_report(report_due, message_id, number)
            else:
                message_id, cost = "None", "0"
            entries.append(
                {
                    "statusCode": code,
                    "number": number,
                    "status": word,
                    "cost": cost,
                    "messageId": message_id,
                }
            )
        self.recipients_total += len(recipients)
        total = price * accepted if accepted else Decimal(0)
        total_text = f"{config.currency} {total:.4f}" if accepted else "0"
        body = {
            "SMSMessageData": {
                "Message": f"Sent to {accepted}/{len(recipients)} Total Cost: {total_text}",
                "Recipients": entries,
            }
        }
        return exact_json(body, status=201)

    def _queue_report(self, due: float, message_id: str, number: str) -> None:
        canned = self.config.delivery_report_outcomes.get(number)
        key = canned or draw(self.config.delivery_report_shares, self._rng) or "Success"
        status, reason = split_report_outcome(key)
        report = {
            "id": message_id,
            "status": status,
            "phoneNumber": number,
            "networkCode": self.config.network_code,
        }
        if reason is not None:
            report["failureReason"] = reason
        self._reports.put(report, due=due)


def credentials_ok(request: web.Request, username: str | None, config: Any) -> bool:
    """The ``apiKey`` header and ``username`` are the account's (``config``: a simulator's,
    with ``api_key`` and ``username``)."""
    key_ok = hmac.compare_digest(request.headers.get("apiKey", ""), config.api_key)
    return key_ok and username == config.username


def exact_json(body: object, *, status: int = 200) -> web.Response:
    """``body`` as JSON with ``Content-Type`` exactly ``application/json``: the official SDK
    decodes nothing else. Bytes plus a content_type without charset give exactly that."""
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


async def _recipients_of(request: web.Request) -> tuple[str, ...]:
    form = await request.post()  # aiohttp keeps the parsed form for the handler
    return tuple(part.strip() for part in str(form.get("to", "")).split(",") if part.strip())


def _throttled(retry_after: int) -> web.Response:
    headers = {"Retry-After": str(retry_after)}
    return web.Response(status=429, text="Too Many Requests", headers=headers)


async def serve_forever(host: str, port: int, config: SimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate africastalking``)."""
    simulator = AfricasTalkingSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("Africa's Talking simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
