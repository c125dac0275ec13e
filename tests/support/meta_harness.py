"""Courier-style table harness for Meta's channels: a batch in, exact requests and results out.

Each ``MetaCase`` runs the real channel (real aiohttp client, real HTTP) against the real Meta
simulator on 127.0.0.1. A case fails when:

- the simulator received any request not listed in ``expected_requests`` (or missed one);
  requests are compared as (path node id, exact JSON body or form fields), in any order,
  because a channel sends a batch's requests concurrently;
- a canned outcome was never used (the case did not test what it claims);
- the results or the raised error differ from the expected ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from channels.base import Channel, OutgoingMessage, SendResult
from channels.facebook import FacebookChannel, FacebookConfig
from channels.meta.simulator import MetaSimulator, SimulatorConfig
from channels.whatsapp import WhatsAppChannel, WhatsAppConfig
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, Throttled

PHONE_NUMBER_ID = "106540352242922"
WA_TOKEN = "EAAwa-test-token-5b1c9e0d7f"
APP_SECRET = "app-secret-0c4d7e2a9b13"
VERIFY_TOKEN = "verify-token-64f0aa1b"
TEMPLATE = "warta_announcement"
PAGE_ID = "310000000000001"
PAGE_TOKEN = "EAApage-token-1-a8e3f2"
PAGE2_ID = "310000000000002"
PAGE2_TOKEN = "EAApage-token-2-c7d19b"
SECRETS = (WA_TOKEN, APP_SECRET, VERIFY_TOKEN, PAGE_TOKEN, PAGE2_TOKEN)


class Outcome(NamedTuple):
    """A ``SendResult`` reduced to comparable values."""

    delivery_id: int
    state: DeliveryState
    provider_message_id: Any = None
    url: str | None = None
    error: tuple[str, str] | None = None  # (error class name, reason)


def outcome_of(result: SendResult) -> Outcome:
    error = None
    if result.error is not None:
        error = (type(result.error).__name__, result.error.reason)
    return Outcome(result.delivery_id, result.state, result.provider_message_id, result.url, error)


def wamid(seq: int) -> str:
    """The simulator's message id for its ``seq``-th id (errors use sequence numbers too)."""
    return f"wamid.SIM{seq:012d}"


def messages(
    recipients: Sequence[str], text: str, *, first_id: int = 1, language: str = "id"
) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            delivery_id=first_id + index,
            recipient=recipient,
            text=text,
            idempotency_key=f"warta-{first_id + index}",
            language=language,
        )
        for index, recipient in enumerate(recipients)
    ]


def wa_request(to: str, text: str, *, key: str, language: str = "id") -> tuple[str, dict[str, Any]]:
    """The exact Cloud API request the channel must send for one message."""
    return PHONE_NUMBER_ID, {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": TEMPLATE,
            "language": {"code": language},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": text}]}],
        },
        "biz_opaque_callback_data": key,
    }


def fb_request(page_id: str, text: str, link: str | None = None) -> tuple[str, dict[str, Any]]:
    """The exact feed request (form fields) the channel must send for one post."""
    form = {"message": text}
    if link is not None:
        form["link"] = link
    return page_id, form


@dataclass
class MetaCase:
    """One row of a channel's table.

    Attributes:
        label: the pytest id.
        batch: what the dispatcher hands to ``send``.
        expected_requests: (node id, exact body) of every request the simulator must receive.
        expected_results: the results, in any order; None when an error is expected.
        expected_error: the error ``send`` must raise (class, reason and ``retry_after``).
        outcomes: canned outcomes per recipient or Page; each must be used.
        simulator: other ``SimulatorConfig`` fields.
        channel: other channel config fields.
    """

    label: str
    batch: Sequence[OutgoingMessage]
    expected_requests: Sequence[tuple[str, Mapping[str, Any]]]
    expected_results: Sequence[Outcome] | None = None
    expected_error: ChannelError | None = None
    outcomes: Mapping[str, str] = field(default_factory=dict)
    simulator: Mapping[str, Any] = field(default_factory=dict)
    channel: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseRun:
    simulator: MetaSimulator
    channel: Channel
    results: list[SendResult] | None
    error: ChannelError | None


def simulator_config(**overrides: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {
        "phone_number_id": PHONE_NUMBER_ID,
        "whatsapp_token": WA_TOKEN,
        "app_secret": APP_SECRET,
        "templates": frozenset({(TEMPLATE, "id"), (TEMPLATE, "en_US")}),
        "page_tokens": {PAGE_ID: PAGE_TOKEN, PAGE2_ID: PAGE2_TOKEN},
    }
    settings.update(overrides)
    return SimulatorConfig(**settings)


def whatsapp_channel(base_url: str, **overrides: Any) -> WhatsAppChannel:
    settings: dict[str, Any] = {
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": WA_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "template_name": TEMPLATE,
        "template_languages": {"id": "id", "en": "en_US"},
        "base_url": base_url,
    }
    settings.update(overrides)
    return WhatsAppChannel(WhatsAppConfig(**settings))


def facebook_channel(base_url: str, **overrides: Any) -> FacebookChannel:
    settings: dict[str, Any] = {
        "page_tokens": {PAGE_ID: PAGE_TOKEN, PAGE2_ID: PAGE2_TOKEN},
        "base_url": base_url,
    }
    settings.update(overrides)
    return FacebookChannel(FacebookConfig(**settings))


async def run_case(case: MetaCase, kind: str) -> CaseRun:
    """Run ``case`` on the ``whatsapp`` or ``facebook`` channel, without checking it."""
    simulator = MetaSimulator(simulator_config(outcomes=case.outcomes, **case.simulator))
    base_url = await simulator.start()
    build = whatsapp_channel if kind == "whatsapp" else facebook_channel
    channel = build(base_url, **case.channel)
    results: list[SendResult] | None = None
    error: ChannelError | None = None
    try:
        await channel.start()
        results = await channel.send(case.batch)
    except ChannelError as exc:
        error = exc
    finally:
        await channel.close()
        await simulator.stop()
    return CaseRun(simulator=simulator, channel=channel, results=results, error=error)


def _request_key(node_id: str, body: Mapping[str, Any]) -> str:
    return json.dumps([node_id, body], sort_keys=True)


def check_case(case: MetaCase, run: CaseRun) -> None:
    """Assert that ``run`` is exactly what ``case`` expects."""
    received = sorted(_request_key(r.node_id, r.body) for r in run.simulator.received)
    expected = sorted(_request_key(node, body) for node, body in case.expected_requests)
    assert run.simulator.records_dropped == 0, "simulator dropped records: raise max_records"
    assert received == expected, "the provider received other requests than expected"
    unused = run.simulator.unused_outcomes()
    assert not unused, f"{len(unused)} canned outcome(s) were never used"
    if case.expected_error is not None:
        want = case.expected_error
        assert run.error is not None, "expected an error, send returned results"
        assert type(run.error) is type(want), repr(run.error)
        assert run.error.reason == want.reason
        if isinstance(want, Throttled):
            assert isinstance(run.error, Throttled)
            assert run.error.retry_after == want.retry_after
    else:
        assert run.error is None, f"unexpected error {run.error!r}"
    if case.expected_results is not None:
        assert run.results is not None
        got = sorted((outcome_of(r) for r in run.results), key=lambda o: o.delivery_id)
        assert got == sorted(case.expected_results, key=lambda o: o.delivery_id)


async def run_and_check(case: MetaCase, kind: str) -> CaseRun:
    run = await run_case(case, kind)
    check_case(case, run)
    return run
