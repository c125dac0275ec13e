"""The simulators' fault schedule: its control endpoint, and what a fault touches.

The faults' effect on a running gateway is in tests/gateway/test_provider_faults.py; here, the
control endpoint on both simulators that have one, over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.africastalking.config import AfricasTalkingConfig
from channels.africastalking.sdk import AfricasTalkingClient
from channels.africastalking.simconfig import SimulatorConfig as SmsSimConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from channels.simfaults import CONTROL_PATH
from channels.telegram.simconfig import SimulatorConfig as TelegramSimConfig
from channels.telegram.simulator import TelegramSimulator
from gateway.errors import ConnectionFailed
from tests.support.sms import requests_arrived
from tests.support.telegram_harness import TOKEN, make_channel, messages

API_KEY = "simfaults-test-key"


@pytest.fixture(params=["africastalking", "telegram"])
async def simulator(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[AfricasTalkingSimulator | TelegramSimulator, str]]:
    sim: AfricasTalkingSimulator | TelegramSimulator
    if request.param == "africastalking":
        sim = AfricasTalkingSimulator(SmsSimConfig(api_key=API_KEY))
    else:
        sim = TelegramSimulator(TelegramSimConfig(token=TOKEN))
    url = await sim.start()
    yield sim, url
    await sim.stop()


async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as answer:
        return answer.status, await answer.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param([], None, id="not-an-object"),
        pytest.param({"kind": "nope"}, "kind", id="unknown-kind"),
        pytest.param({}, "kind", id="no-kind"),
        pytest.param({"kind": "status", "count": 0}, "count", id="count-zero"),
        pytest.param({"kind": "status", "count": "3"}, "count", id="count-text"),
        pytest.param({"kind": "status", "status": 200}, "status", id="status-not-error"),
        pytest.param({"kind": "throttle"}, "seconds", id="throttle-without-seconds"),
        pytest.param({"kind": "down", "seconds": -1}, "seconds", id="negative-seconds"),
        pytest.param({"kind": "slow", "seconds": True}, "seconds", id="seconds-bool"),
        pytest.param({"kind": "status", "colour": "red"}, "colour", id="unknown-field"),
    ],
)
async def test_a_bad_fault_is_refused_naming_the_field_and_nothing_is_scheduled(
    simulator: tuple[AfricasTalkingSimulator | TelegramSimulator, str],
    body: Any,
    field: str | None,
) -> None:
    sim, url = simulator
    status, answer = await _call("POST", url + CONTROL_PATH, json=body)
    assert status == 400
    assert answer["error"]["code"] == "invalid"
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]
    assert list(sim.faults.pending) == []


async def test_a_body_that_is_not_json_is_refused(
    simulator: tuple[AfricasTalkingSimulator | TelegramSimulator, str],
) -> None:
    sim, url = simulator
    status, answer = await _call("POST", url + CONTROL_PATH, data=b"{kind: status")
    assert (status, answer["error"]["field"]) == (400, None)
    assert list(sim.faults.pending) == []


async def test_faults_are_listed_and_cleared(
    simulator: tuple[AfricasTalkingSimulator | TelegramSimulator, str],
) -> None:
    _sim, url = simulator
    assert await _call("POST", url + CONTROL_PATH, json={"kind": "status", "count": 2}) == (
        201,
        {"pending": 1},
    )
    await _call("POST", url + CONTROL_PATH, json={"kind": "hang", "seconds": 1.5})
    status, listed = await _call("GET", url + CONTROL_PATH)
    assert status == 200
    assert listed["pending"] == [
        {"kind": "status", "count": 2, "status": 503, "seconds": 0.0},
        {"kind": "hang", "count": 1, "status": 503, "seconds": 1.5},
    ]
    assert listed["down_for"] == 0
    assert await _call("DELETE", url + CONTROL_PATH) == (200, {"pending": 0})
    assert (await _call("GET", url + CONTROL_PATH))[1]["pending"] == []


async def test_a_fault_meets_send_requests_only() -> None:
    """A pending 5xx leaves the Bot API's getMe alone and meets the next sendMessage."""
    sim = TelegramSimulator(TelegramSimConfig(token=TOKEN))
    url = await sim.start()
    channel = make_channel(url)
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "status", "status": 500})
        await channel.start()  # getMe
        with pytest.raises(ConnectionFailed):
            await channel.send(messages(["4242"], "Banjir"))
        (sent,) = await channel.send(messages(["4242"], "Banjir"))
        assert sent.error is None
    finally:
        await channel.close()
        await sim.stop()
    assert [(a.fault, a.recipients) for a in sim.faults.arrivals] == [
        ("status", ("4242",)),
        (None, ("4242",)),
    ]
    assert [r.method for r in sim.received] == ["getme", "sendmessage"]


async def test_an_sms_request_met_by_a_reset_is_a_connection_failure() -> None:
    sim = AfricasTalkingSimulator(SmsSimConfig(api_key=API_KEY))
    url = await sim.start()
    client = AfricasTalkingClient(
        AfricasTalkingConfig(username="sandbox", api_key=API_KEY, base_url=url)
    )
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "reset"})
        with pytest.raises(ConnectionFailed, match="connection error"):
            await client.send_sms("Banjir", ["+6281200000001"])
        answer = await client.send_sms("Banjir", ["+6281200000001"])
    finally:
        await client.close()
        await sim.stop()
    assert answer["SMSMessageData"]["Recipients"][0]["status"] == "Success"
    assert sim.faults.met == {"reset": 1}
    assert sim.sent_count.total() == 1


async def test_a_slow_answer_past_the_client_timeout_is_sent_and_noted_unanswered() -> None:
    """The provider sends what a slow request asked for even when the client gave up: the
    simulator notes those recipients, so tests can tell a lost answer from a double send."""
    sim = AfricasTalkingSimulator(SmsSimConfig(api_key=API_KEY))
    url = await sim.start()
    client = AfricasTalkingClient(
        AfricasTalkingConfig(username="sandbox", api_key=API_KEY, base_url=url, request_timeout=0.3)
    )
    try:
        await _call("POST", url + CONTROL_PATH, json={"kind": "slow", "seconds": 1.5})
        with pytest.raises(ConnectionFailed):
            await client.send_sms("Banjir", ["+6281200000001"])
        await client.send_sms("Banjir", ["+6281200000002"])  # answered in time
        deadline = asyncio.get_running_loop().time() + 10
        while sim.sent_count.total() < 2:
            assert asyncio.get_running_loop().time() < deadline, "the slow one was never sent"
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        await sim.stop()
    assert sim.faults.unanswered == {"+6281200000001": 1}


async def test_clearing_the_schedule_lets_held_requests_go_on_at_once() -> None:
    """``DELETE`` ends the bad minute: a slow request is processed now and a hanging one gets
    its 504 now, not after their minute (a test or a demo decides when the provider answers)."""
    sim = AfricasTalkingSimulator(SmsSimConfig(api_key=API_KEY))
    url = await sim.start()
    client = AfricasTalkingClient(
        AfricasTalkingConfig(username="sandbox", api_key=API_KEY, base_url=url, request_timeout=30)
    )
    try:
        tasks = []
        for kind, number in (("slow", "+6281200000001"), ("hang", "+6281200000002")):
            # One at a time, so that each request meets its own fault.
            await _call("POST", url + CONTROL_PATH, json={"kind": kind, "seconds": 60})
            tasks.append(asyncio.create_task(client.send_sms("Banjir", [number])))
            await requests_arrived(sim, len(tasks))
        slow, hanging = tasks
        await asyncio.sleep(0.2)
        assert not slow.done() and not hanging.done() and sim.sent_count.total() == 0
        assert await _call("DELETE", url + CONTROL_PATH) == (200, {"pending": 0})
        answer = await asyncio.wait_for(slow, 10)
        with pytest.raises(ConnectionFailed):
            await asyncio.wait_for(hanging, 10)
    finally:
        await client.close()
        await sim.stop()
    assert answer["SMSMessageData"]["Recipients"][0]["status"] == "Success"
    assert [sim.sent_count["+6281200000001"], sim.sent_count["+6281200000002"]] == [1, 0]
    assert sim.faults.met == {"slow": 1, "hang": 1}
