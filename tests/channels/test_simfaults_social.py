"""The fault schedule on the Meta, X and Mastodon simulators, met by the real channels.

Each test starts the real simulator, schedules a fault over HTTP at ``/simulator/faults`` and
sends through the real channel adapter (WhatsApp and Facebook share the Meta simulator), so
what is checked is the error the adapter raises for the provider's own answer. The control
endpoint itself (validation, listing, clearing) is in tests/channels/test_simfaults.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from channels.base import Channel, OutgoingMessage
from channels.mastodon import MastodonChannel, MastodonConfig
from channels.mastodon.simulator import MastodonSimulator, MastodonSimulatorConfig
from channels.meta.simulator import MetaSimulator
from channels.simfaults import CONTROL_PATH
from channels.x import XChannel, XConfig
from channels.x.simulator import XSimulator, XSimulatorConfig
from gateway.domain import DeliveryState
from gateway.errors import ConnectionFailed, Throttled
from tests.support.meta_harness import (
    PAGE_ID,
    PHONE_NUMBER_ID,
    WA_TOKEN,
    facebook_channel,
    messages,
    simulator_config,
    whatsapp_channel,
)

NUMBER = "+6281100000001"
X_TOKEN, X_ACCOUNT = "x-user-token-faults-41c2", "bnpb_indonesia"
MASTODON_TOKEN, MASTODON_ACCOUNT = "mastodon-token-faults-9a7e", "bpbd"
ALERT = "Peringatan banjir: segera ke tempat tinggi. Info: https://warta.go.id/a/K7QX"
GRAPH_VERSION = "v23.0"


@dataclass
class Provider:
    """One channel against its running simulator, and what its errors must look like."""

    name: str
    simulator: Any
    url: str
    channel: Channel
    batch: list[OutgoingMessage]
    recipients: tuple[str, ...]  # what the schedule must record for each send request
    delivered: DeliveryState
    reason_503: str
    reason_429: str
    accepted: Callable[[], int]  # messages or posts the provider created


def _post(recipient: str) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            delivery_id=1,
            recipient=recipient,
            text=ALERT,
            idempotency_key="warta-1",
            language="id",
        )
    ]


async def _provider(name: str) -> Provider:
    if name in ("whatsapp", "facebook"):
        meta = MetaSimulator(simulator_config())
        url = await meta.start()
        if name == "whatsapp":
            return Provider(
                name,
                meta,
                url,
                whatsapp_channel(url),
                messages([NUMBER], ALERT),
                (NUMBER,),
                DeliveryState.SENT,
                "http_503",
                "app_rate_limit (#4)",
                lambda: meta.messages_accepted,
            )
        return Provider(
            name,
            meta,
            url,
            facebook_channel(url),
            messages([PAGE_ID], ALERT),
            (PAGE_ID,),
            DeliveryState.DELIVERED,
            "http_503",
            "app_rate_limit (#4)",
            lambda: meta.posts_created,
        )
    if name == "x":
        x = XSimulator(XSimulatorConfig(accounts={X_TOKEN: X_ACCOUNT}))
        url = await x.start()
        channel: Channel = XChannel(XConfig(accounts={X_ACCOUNT: X_TOKEN}, base_url=url))
        return Provider(
            name,
            x,
            url,
            channel,
            _post(X_ACCOUNT),
            (X_ACCOUNT,),
            DeliveryState.DELIVERED,
            "HTTP 503",
            "HTTP 429",
            lambda: len(x.posts),
        )
    mastodon = MastodonSimulator(
        MastodonSimulatorConfig(accounts={MASTODON_TOKEN: MASTODON_ACCOUNT}, max_characters=1000)
    )
    url = await mastodon.start()
    channel = MastodonChannel(
        MastodonConfig(base_url=url, accounts={MASTODON_ACCOUNT: MASTODON_TOKEN})
    )
    return Provider(
        name,
        mastodon,
        url,
        channel,
        _post(MASTODON_ACCOUNT),
        (MASTODON_ACCOUNT,),
        DeliveryState.DELIVERED,
        "HTTP 503",
        "HTTP 429",
        lambda: len(mastodon.statuses),
    )


@pytest.fixture(params=["whatsapp", "facebook", "x", "mastodon"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    made = await _provider(request.param)
    try:
        await made.channel.start()
        yield made
    finally:
        await made.channel.close()
        await made.simulator.stop()


async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as answer:
        return answer.status, await answer.json(content_type=None)


async def _status(method: str, url: str) -> int:
    async with aiohttp.ClientSession() as http, http.request(method, url) as answer:
        return answer.status


async def _schedule(provider: Provider, fault: dict[str, Any]) -> None:
    status, answer = await _call("POST", provider.url + CONTROL_PATH, json=fault)
    assert (status, answer) == (201, {"pending": 1})


async def test_a_503_burst_fails_twice_then_the_send_goes_through(provider: Provider) -> None:
    await _schedule(provider, {"kind": "status", "status": 503, "count": 2})

    for _ in range(2):
        with pytest.raises(ConnectionFailed) as failure:
            await provider.channel.send(provider.batch)
        assert failure.value.reason == provider.reason_503
        assert provider.accepted() == 0
    (result,) = await provider.channel.send(provider.batch)

    assert (result.delivery_id, result.state, result.error) == (1, provider.delivered, None)
    assert result.provider_message_id
    assert provider.accepted() == 1
    faults = provider.simulator.faults
    assert list(faults.pending) == []
    assert faults.met == {"status": 2}
    assert [(a.fault, a.recipients) for a in faults.arrivals] == [
        ("status", provider.recipients),
        ("status", provider.recipients),
        (None, provider.recipients),
    ]
    assert provider.simulator.requests_total == 1, "faulted requests never reach the handler"


async def test_a_throttle_fault_is_the_providers_429_with_its_wait(provider: Provider) -> None:
    await _schedule(provider, {"kind": "throttle", "count": 1, "seconds": 2})

    with pytest.raises(Throttled) as throttled:
        await provider.channel.send(provider.batch)
    (result,) = await provider.channel.send(provider.batch)

    assert throttled.value.reason == provider.reason_429
    wait = throttled.value.retry_after
    assert wait is not None
    if provider.name in ("whatsapp", "facebook"):
        assert wait == 2.0  # Retry-After: 2
    else:
        # A reset time on the first whole second 2 s ahead, read against the adapter's clock.
        assert 1.5 < wait <= 3.0
    assert (result.state, result.error) == (provider.delivered, None)
    assert provider.accepted() == 1
    assert provider.simulator.faults.met == {"throttle": 1}
    assert [a.fault for a in provider.simulator.faults.arrivals] == ["throttle", None]


async def test_a_pending_fault_leaves_other_requests_alone(provider: Provider) -> None:
    """Only the send route meets a fault: the other routes answer as usual, it stays pending."""
    await _schedule(provider, {"kind": "status", "status": 500})
    simulator = provider.simulator
    if provider.name == "whatsapp":
        digits = NUMBER.lstrip("+")
        say = provider.url + f"/simulator/phones/{digits}/say"
        status, said = await _call("POST", say, json={"text": "Halo"})
        assert (status, said["webhook_status"]) == (200, None)
        assert simulator.last_inbound.keys() == {digits}
        inbox = provider.url + f"/simulator/phones/{digits}/messages"
        assert await _call("GET", inbox) == (200, {"messages": [], "count": 0})
    elif provider.name == "facebook":
        # Only POST publishes: a GET on the feed is aiohttp's 405, not the fault's 500.
        assert await _status("GET", f"{provider.url}/{GRAPH_VERSION}/{PAGE_ID}/feed") == 405
    elif provider.name == "x":
        assert await _status("GET", provider.url + "/2/tweets") == 405
    else:
        # channel.start() in the fixture read /api/v2/instance: the server's limit, not 500.
        assert isinstance(provider.channel, MastodonChannel)
        assert provider.channel.max_characters == 1000
        status, instance = await _call("GET", provider.url + "/api/v2/instance")
        assert (status, instance["configuration"]["statuses"]["max_characters"]) == (200, 1000)

    assert [(f.kind, f.count, f.status) for f in simulator.faults.pending] == [("status", 1, 500)]
    assert list(simulator.faults.arrivals) == []
    with pytest.raises(ConnectionFailed) as failure:
        await provider.channel.send(provider.batch)
    assert failure.value.reason == provider.reason_503.replace("503", "500")
    assert list(simulator.faults.pending) == []


async def test_the_meta_throttle_is_a_graph_error_with_code_4() -> None:
    meta = MetaSimulator(simulator_config())
    url = await meta.start()
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "throttle", "seconds": 3})
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/{GRAPH_VERSION}/{PHONE_NUMBER_ID}/messages",
                json={"messaging_product": "whatsapp", "to": NUMBER, "type": "template"},
                headers={"Authorization": f"Bearer {WA_TOKEN}"},
            ) as answer,
        ):
            status, retry_after = answer.status, answer.headers.get("Retry-After")
            body = await answer.json()
    finally:
        await meta.stop()
    assert (status, retry_after) == (429, "3")
    error = body["error"]
    assert (error["code"], error["type"], error["is_transient"]) == (4, "OAuthException", False)
    assert error["message"] == "(#4) Application request limit reached"
    assert (meta.requests_total, list(meta.received)) == (0, []), "answered before the handler"


async def test_the_x_throttle_carries_the_rate_limit_headers() -> None:
    x = XSimulator(XSimulatorConfig(accounts={X_TOKEN: X_ACCOUNT}, window_limit=50))
    url = await x.start()
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "throttle", "seconds": 30})
        before = time.time()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/2/tweets",
                json={"text": ALERT},
                headers={"Authorization": f"Bearer {X_TOKEN}"},
            ) as answer,
        ):
            status, headers, body = answer.status, answer.headers, await answer.json()
    finally:
        await x.stop()
    assert status == 429
    assert body == {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    }
    assert headers["x-rate-limit-limit"] == "50"
    assert headers["x-rate-limit-remaining"] == "0"
    assert (
        math.ceil(before + 30) <= int(headers["x-rate-limit-reset"]) <= math.ceil(time.time() + 30)
    )
    assert [(a.fault, a.recipients) for a in x.faults.arrivals] == [("throttle", (X_ACCOUNT,))]


async def test_the_mastodon_throttle_carries_the_rate_limit_headers() -> None:
    mastodon = MastodonSimulator(
        MastodonSimulatorConfig(accounts={MASTODON_TOKEN: MASTODON_ACCOUNT})
    )
    url = await mastodon.start()
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "throttle", "seconds": 30})
        before = time.time()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/api/v1/statuses",
                data={"status": ALERT},
                headers={"Authorization": "Bearer not-a-known-token"},
            ) as answer,
        ):
            status, headers, body = answer.status, answer.headers, await answer.json()
    finally:
        await mastodon.stop()
    assert (status, body) == (429, {"error": "Too many requests"})
    assert headers["X-RateLimit-Limit"] == "300"
    assert headers["X-RateLimit-Remaining"] == "0"
    reset = headers["X-RateLimit-Reset"]
    assert reset.endswith(".000Z")
    at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
    assert math.ceil(before + 30) <= at <= math.ceil(time.time() + 30)
    # An unknown token names no account: the arrival is recorded without recipients.
    assert [(a.fault, a.recipients) for a in mastodon.faults.arrivals] == [("throttle", ())]
