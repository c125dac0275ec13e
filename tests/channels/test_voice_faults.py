"""The Africa's Talking voice simulator's fault schedule, met by the real voice channel.

Faults are posted over HTTP to ``/simulator/faults`` (as in tests/channels/test_simfaults.py)
and calls are placed through ``VoiceChannel`` (the official SDK's voice service, as in
tests/channels/test_voice.py), so each fault is checked as the gateway would see it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.africastalking.voice_sim import CALL_PATH, VoiceSimulator
from channels.base import OutgoingMessage, SendResult
from channels.simfaults import CONTROL_PATH
from channels.voice import VoiceChannel, VoiceConfig
from channels.voice.simconfig import VoiceSimulatorConfig
from gateway.domain import DeliveryState
from gateway.errors import ConnectionFailed, Throttled

USERNAME = "warta-voice-faults"
API_KEY = "at-voice-faults-key-5e7d"
CALLER = "+254711082999"
N1, N2 = "+254722123401", "+254722123402"


def session(seq: int) -> str:
    return f"ATVId_{seq:032x}"


def messages(numbers: Sequence[str]) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(i, number, "Flood warning. Move to higher ground now.", f"key-{i}", "en")
        for i, number in enumerate(numbers, start=1)
    ]


def sent(results: list[SendResult]) -> list[tuple[int, DeliveryState, Any]]:
    return sorted((r.delivery_id, r.state, r.provider_message_id) for r in results)


@dataclass
class Rig:
    simulator: VoiceSimulator
    channel: VoiceChannel
    url: str

    async def fault(self, **fault: Any) -> None:
        status, answer = await http("POST", self.url + CONTROL_PATH, json=fault)
        assert status == 201, answer

    async def pending(self) -> list[dict[str, Any]]:
        status, listed = await http("GET", self.url + CONTROL_PATH)
        assert status == 200
        pending: list[dict[str, Any]] = listed["pending"]
        return pending


async def http(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.request(method, url, **kwargs) as answer:
        return answer.status, await answer.json()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    simulator = VoiceSimulator(
        VoiceSimulatorConfig(username=USERNAME, api_key=API_KEY, caller_numbers=frozenset({CALLER}))
    )
    url = await simulator.start()
    config = VoiceConfig(
        username=USERNAME,
        api_key=API_KEY,
        caller_number=CALLER,
        base_url=url,
        audio_dir=tmp_path / "audio",
        request_timeout=0.5,
    )
    channel = VoiceChannel(config, languages=("en",))
    try:
        yield Rig(simulator, channel, url)
    finally:
        await channel.close()
        await simulator.stop()


async def test_a_503_burst_fails_two_call_requests_and_the_third_is_queued(rig: Rig) -> None:
    await rig.fault(kind="status", status=503, count=2)
    assert await rig.pending() == [{"kind": "status", "count": 2, "status": 503, "seconds": 0.0}]
    for _ in range(2):
        with pytest.raises(ConnectionFailed) as failed:
            await rig.channel.send(messages([N1, N2]))
        assert failed.value.reason == "HTTP 503"
    results = await rig.channel.send(messages([N1, N2]))

    assert sent(results) == [
        (1, DeliveryState.SENT, session(1)),
        (2, DeliveryState.SENT, session(2)),
    ]
    sim = rig.simulator
    assert {sid: call.number for sid, call in sim.calls.items()} == {
        session(1): N1,
        session(2): N2,
    }
    # The faulted requests never reached the handler: one request, each number called once.
    assert sim.requests_total == 1
    assert [r.http_status for r in sim.received] == [200]
    assert (sim.calls_placed[N1], sim.calls_placed[N2]) == (1, 1)
    assert [(a.fault, a.recipients) for a in sim.faults.arrivals] == [
        ("status", (N1, N2)),
        ("status", (N1, N2)),
        (None, (N1, N2)),
    ]
    assert sim.faults.met == {"status": 2}
    assert await rig.pending() == []


async def test_a_throttle_fault_is_africas_talkings_429_with_its_seconds(rig: Rig) -> None:
    await rig.fault(kind="throttle", seconds=7)
    with pytest.raises(Throttled) as throttled:
        await rig.channel.send(messages([N1]))
    assert (throttled.value.reason, throttled.value.retry_after) == ("HTTP 429", 7.0)

    # On the wire: the same answer as the simulator's own throttled outcome.
    await rig.fault(kind="throttle", seconds=4)
    form = {"username": USERNAME, "from": CALLER, "to": N2}
    async with (
        aiohttp.ClientSession() as client,
        client.post(rig.url + CALL_PATH, data=form, headers={"apiKey": API_KEY}) as answer,
    ):
        wire = (answer.status, answer.headers.get("Retry-After"), await answer.text())
    assert wire == (429, "4", "Too Many Requests")

    (result,) = await rig.channel.send(messages([N1]))
    assert (result.state, result.provider_message_id) == (DeliveryState.SENT, session(1))
    sim = rig.simulator
    assert [(a.fault, a.recipients) for a in sim.faults.arrivals] == [
        ("throttle", (N1,)),
        ("throttle", (N2,)),
        (None, (N1,)),
    ]
    assert sim.faults.met == {"throttle": 2}
    assert sim.requests_total == 1


async def test_a_reset_fault_is_a_connection_failure(rig: Rig) -> None:
    await rig.fault(kind="reset")
    with pytest.raises(ConnectionFailed) as failed:
        await rig.channel.send(messages([N1]))
    assert failed.value.reason == "connection error"
    (result,) = await rig.channel.send(messages([N1]))

    assert (result.state, result.provider_message_id) == (DeliveryState.SENT, session(1))
    assert list(rig.simulator.calls) == [session(1)]
    assert [(a.fault, a.recipients) for a in rig.simulator.faults.arrivals] == [
        ("reset", (N1,)),
        (None, (N1,)),
    ]
    assert rig.simulator.faults.met == {"reset": 1}


async def test_a_pending_fault_leaves_other_requests_alone(rig: Rig) -> None:
    await rig.fault(kind="status", status=500)
    await rig.fault(kind="reset")  # POSTing a second fault is no send request either
    expected = [
        {"kind": "status", "count": 1, "status": 500, "seconds": 0.0},
        {"kind": "reset", "count": 1, "status": 503, "seconds": 0.0},
    ]
    assert await rig.pending() == expected
    async with aiohttp.ClientSession() as client:
        async with client.get(rig.url + CALL_PATH) as answer:
            assert answer.status == 405  # not the send request: answered as usual
        async with client.get(rig.url + "/no/such/path") as answer:
            assert answer.status == 404

    assert await rig.pending() == expected
    assert list(rig.simulator.faults.arrivals) == []
    assert rig.simulator.faults.met == {}

    # The first call request meets the first fault.
    with pytest.raises(ConnectionFailed) as failed:
        await rig.channel.send(messages([N1]))
    assert failed.value.reason == "HTTP 500"
    assert await rig.pending() == expected[1:]


async def test_down_closes_the_port_and_opens_it_again(rig: Rig) -> None:
    await rig.fault(kind="down", seconds=0.4)
    with pytest.raises(ConnectionFailed) as failed:
        await rig.channel.send(messages([N1]))
    assert failed.value.reason == "connection error"
    # Refused at the port (the schedule knows the runner), so it never arrived.
    assert list(rig.simulator.faults.arrivals) == []

    deadline = time.monotonic() + 5
    while True:
        try:
            (result,) = await rig.channel.send(messages([N1]))
            break
        except ConnectionFailed:
            assert time.monotonic() < deadline, "the simulator never came back"
            await asyncio.sleep(0.1)
    assert (result.state, result.provider_message_id) == (DeliveryState.SENT, session(1))
    assert [(a.fault, a.recipients) for a in rig.simulator.faults.arrivals] == [(None, (N1,))]


async def test_stopping_releases_a_hanging_call_request(tmp_path: Path) -> None:
    simulator = VoiceSimulator(VoiceSimulatorConfig(username=USERNAME, api_key=API_KEY))
    url = await simulator.start()
    form = {"username": USERNAME, "from": CALLER, "to": N1}
    status, _ = await http("POST", url + CONTROL_PATH, json={"kind": "hang", "seconds": 30})
    assert status == 201
    async with aiohttp.ClientSession() as client:
        hanging = asyncio.create_task(
            client.post(url + CALL_PATH, data=form, headers={"apiKey": API_KEY})
        )
        deadline = time.monotonic() + 5
        while not simulator.faults.arrivals:
            assert time.monotonic() < deadline, "the call request never met the hang"
            assert not hanging.done(), "the call request was answered instead of hanging"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await simulator.stop()
        stopped_in = time.monotonic() - started
        async with await hanging as answer:
            assert answer.status == 504
    assert stopped_in < 1.0  # released at once, not after the runner's 2 s shutdown timeout
    assert [(a.fault, a.recipients) for a in simulator.faults.arrivals] == [("hang", (N1,))]
    assert simulator.requests_total == 0


async def test_numbers_stay_out_of_logs_and_reprs(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await rig.fault(kind="status", status=502)
    await rig.fault(kind="reset")
    for _ in range(2):
        with pytest.raises(ConnectionFailed):
            await rig.channel.send(messages([N1, N2]))
    await rig.channel.send(messages([N1, N2]))

    faults = rig.simulator.faults
    assert len(faults.arrivals) == 3
    shown = "\n".join([caplog.text, repr(faults), repr(rig.simulator), *map(repr, faults.arrivals)])
    for number in (N1, N2):
        for form in (number, number[1:], number[-9:]):
            assert form not in shown
