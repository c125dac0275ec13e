"""The Africa's Talking simulator: wire format, counters, delivery reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import requests
from africastalking.SMS import SMSService
from aiohttp import web

from channels.africastalking.config import AfricasTalkingConfig
from channels.africastalking.simconfig import count_segments
from channels.africastalking.simulator import AfricasTalkingSimulator, SimulatorConfig
from channels.sms import SmsChannel, parse_delivery_report
from gateway.domain import DeliveryState
from tests.support.provider_harness import API_KEY, USERNAME, message_id, messages

N1, N2, N3, N4 = (f"+25471200000{i}" for i in range(1, 5))


@asynccontextmanager
async def running(config: SimulatorConfig) -> AsyncIterator[tuple[AfricasTalkingSimulator, str]]:
    simulator = AfricasTalkingSimulator(config)
    base_url = await simulator.start()
    try:
        yield simulator, base_url
    finally:
        await simulator.stop()


def sim_config(**overrides: Any) -> SimulatorConfig:
    return SimulatorConfig(username=USERNAME, api_key=API_KEY, **overrides)


class StockSdk(SMSService):  # type: ignore[misc]
    """The unmodified SDK request path, only pointed at the simulator."""

    def __init__(self, base_url: str) -> None:
        self._test_base_url = base_url
        super().__init__(USERNAME, API_KEY)

    def _init_service(self) -> None:
        self._baseUrl = self._test_base_url + "/version1"


async def test_stock_sdk_decodes_the_answer_as_json() -> None:
    async with running(sim_config()) as (_simulator, base_url):
        answer = await asyncio.to_thread(StockSdk(base_url).send, "Hello", [N1, N2])
    assert answer == {
        "SMSMessageData": {
            "Message": "Sent to 2/2 Total Cost: KES 1.6000",
            "Recipients": [
                {
                    "statusCode": 101,
                    "number": N1,
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": message_id(1),
                },
                {
                    "statusCode": 101,
                    "number": N2,
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": message_id(2),
                },
            ],
        }
    }


def _post(url: str, data: dict[str, str], key: str | None) -> requests.Response:
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["apiKey"] = key
    return requests.post(url + "/version1/messaging", data=data, headers=headers, timeout=5)


@pytest.mark.parametrize("key", [None, "wrong"])
async def test_wrong_or_missing_key_is_401_plain_text(key: str | None) -> None:
    async with running(sim_config()) as (simulator, base_url):
        data = {"username": USERNAME, "to": N1, "message": "Hi"}
        response = await asyncio.to_thread(_post, base_url, data, key)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "The supplied authentication is invalid"
    (record,) = simulator.received
    assert (record.authenticated, record.http_status) == (False, 401)
    assert simulator.sent_count.total() == 0


async def test_answer_headers_and_status_are_the_real_apis() -> None:
    async with running(sim_config()) as (_simulator, base_url):
        data = {"username": USERNAME, "to": N1, "message": "Hi", "bulkSMSMode": "1"}
        response = await asyncio.to_thread(_post, base_url, data, API_KEY)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"


async def test_missing_field_is_400() -> None:
    async with running(sim_config()) as (_simulator, base_url):
        response = await asyncio.to_thread(_post, base_url, {"username": USERNAME}, API_KEY)
    assert response.status_code == 400


async def test_counters_find_duplicates_and_records_stay_bounded() -> None:
    async with running(sim_config(max_records=2)) as (simulator, base_url):
        sdk = StockSdk(base_url)
        for recipients in ([N1, N2], [N2], [N3, "+254712340000"]):
            await asyncio.to_thread(sdk.send, "Hi", recipients)
    assert [r.recipients for r in simulator.received] == [(N2,), (N3, "+254712340000")]
    assert simulator.records_dropped == 1
    assert (simulator.requests_total, simulator.recipients_total) == (3, 5)
    assert (simulator.sent_count[N1], simulator.sent_count[N2]) == (1, 2)
    assert simulator.sent_count["+254712340000"] == 0  # invalid: never sent
    assert simulator.sent_count.duplicates() == {N2: 2}
    assert simulator.sent_count.total() == 4


def test_same_seed_same_draws() -> None:
    async def statuses() -> list[int]:
        config = sim_config(seed=42, recipient_failure_shares={"invalid_number": 0.5})
        async with running(config) as (_simulator, base_url):
            numbers = [f"+2547130000{i:02d}" for i in range(1, 41)]
            answer = await asyncio.to_thread(StockSdk(base_url).send, "Hi", numbers)
        return [entry["statusCode"] for entry in answer["SMSMessageData"]["Recipients"]]

    first, second = asyncio.run(statuses()), asyncio.run(statuses())
    assert first == second
    assert {101, 403} == set(first)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("{" * 80, 1),  # extension characters take two septets
        ("{" * 81, 2),
        ("é" * 160, 1),  # in the GSM default alphabet
        ("ł" * 70, 1),  # not: UCS-2
        ("ł" * 71, 2),
        ("🌊" * 35, 1),  # two UTF-16 code units each
        ("🌊" * 36, 2),
    ],
)
def test_segment_count(text: str, segments: int) -> None:
    assert count_segments(text) == segments


@pytest.mark.parametrize(
    "overrides",
    [
        {"recipient_failure_shares": {"invalid_number": 0.7, "blacklisted": 0.4}},
        {"request_failure_shares": {"nonsense": 0.1}},
        {"outcomes": {N1: "nonsense"}},
        {"delivery_report_shares": {"Failed:NoSuchReason": 0.1}},
        {"delivery_report_outcomes": {N1: "Delivered"}},
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sim_config(**overrides)


@asynccontextmanager
async def report_receiver(
    status_for: Callable[[int], int] = lambda _attempt: 200,
) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A tiny gateway stand-in that records every delivery report form it gets."""
    received: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        fields = {key: str(value) for key, value in (await request.post()).items()}
        received.append(fields)
        return web.Response(status=status_for(len(received)))

    app = web.Application()
    app.router.add_post("/callbacks/africastalking/sms/delivery", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/callbacks/africastalking/sms/delivery", received
    finally:
        await runner.cleanup()


async def test_delivery_reports_reach_the_gateway_and_parse() -> None:
    async with report_receiver() as (url, received):
        config = sim_config(
            delivery_report_url=url,
            delivery_report_outcomes={
                N2: "Failed:DeliveryFailure",
                N3: "Rejected:UserInBlackList",
                N4: "Expired",
            },
        )
        async with running(config) as (simulator, base_url):
            channel = SmsChannel(
                AfricasTalkingConfig(username=USERNAME, api_key=API_KEY, base_url=base_url)
            )
            results = await channel.send(messages([N1, N2, N3, N4], "Hi"))
            await channel.close()
            await simulator.wait_for_reports()
    by_id = {result.provider_message_id: result.delivery_id for result in results}
    reports = {by_id[r.provider_message_id]: r for r in map(parse_delivery_report, received)}
    assert {k: (r.state, r.status_word, r.reason) for k, r in reports.items()} == {
        1: (DeliveryState.DELIVERED, "Success", None),
        2: (DeliveryState.FAILED, "Failed", "DeliveryFailure"),
        3: (DeliveryState.FAILED, "Rejected", "UserInBlackList"),
        4: (DeliveryState.EXPIRED, "Expired", None),
    }
    assert {r.network_code for r in reports.values()} == {"99999"}
    assert {tuple(sorted(form)) for form in received} >= {
        ("id", "networkCode", "phoneNumber", "status"),
        ("failureReason", "id", "networkCode", "phoneNumber", "status"),
    }
    assert simulator.reports_delivered == 4


async def test_delivery_reports_are_retried_while_the_gateway_errs() -> None:
    # Odd-numbered posts fail: every report needs exactly two tries with one worker.
    async with report_receiver(lambda n: 503 if n % 2 else 200) as (url, received):
        config = sim_config(
            delivery_report_url=url,
            delivery_report_concurrency=1,
            delivery_report_backoff=0.01,
        )
        async with running(config) as (simulator, base_url):
            await asyncio.to_thread(StockSdk(base_url).send, "Hi", [N1, N2, N3])
            await simulator.wait_for_reports()
    assert len(received) == 6
    assert (simulator.reports_delivered, simulator.reports_failed) == (3, 0)


async def test_delivery_reports_give_up_when_the_gateway_stays_down() -> None:
    async with report_receiver(lambda _n: 500) as (url, received):
        config = sim_config(
            delivery_report_url=url, delivery_report_attempts=3, delivery_report_backoff=0.01
        )
        async with running(config) as (simulator, base_url):
            await asyncio.to_thread(StockSdk(base_url).send, "Hi", [N1])
            await simulator.wait_for_reports()
    assert len(received) == 3
    assert (simulator.reports_delivered, simulator.reports_failed) == (0, 1)


async def test_failed_recipients_get_no_report_and_cost_nothing() -> None:
    async with report_receiver() as (url, received):
        config = sim_config(delivery_report_url=url, outcomes={N2: "blacklisted"})
        async with running(config) as (simulator, base_url):
            answer = await asyncio.to_thread(StockSdk(base_url).send, "Hi", [N1, N2])
            await simulator.wait_for_reports()
    assert answer["SMSMessageData"]["Message"] == "Sent to 1/2 Total Cost: KES 0.8000"
    refused = answer["SMSMessageData"]["Recipients"][1]
    assert (refused["cost"], refused["messageId"], refused["statusCode"]) == ("0", "None", 406)
    assert [form["phoneNumber"] for form in received] == [N1]
    assert Decimal(answer["SMSMessageData"]["Recipients"][0]["cost"].split()[1]) == Decimal("0.8")


async def test_a_balance_runs_out_recipient_by_recipient_and_is_topped_up() -> None:
    """Each accepted message takes its price; the first recipient the balance cannot pay for,
    and every one after it, is refused with 405 InsufficientBalance and costs nothing."""
    config = sim_config(balance=Decimal("2.0000"))  # 0.8 a message: two fit
    async with running(config) as (simulator, base_url):
        sdk = StockSdk(base_url)
        answer = await asyncio.to_thread(sdk.send, "Hello", [N1, N2, N3])
        entries = answer["SMSMessageData"]["Recipients"]
        assert [(e["statusCode"], e["status"]) for e in entries] == [
            (101, "Success"),
            (101, "Success"),
            (405, "InsufficientBalance"),
        ]
        assert entries[2]["cost"] == "0" and entries[2]["messageId"] == "None"
        assert simulator.balance == Decimal("0.4000")
        assert simulator.sent_count[N3] == 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url}/simulator/balance") as left:
                assert await left.json() == {"balance": "0.4000", "currency": "KES"}
            async with session.post(f"{base_url}/simulator/balance", json={"balance": "100"}):
                pass
        answer = await asyncio.to_thread(sdk.send, "Hello", [N3])
        assert answer["SMSMessageData"]["Recipients"][0]["statusCode"] == 101
        assert simulator.balance == Decimal("99.2000")


@pytest.mark.parametrize(
    "body", [{}, {"balance": "-1"}, {"balance": "ten"}, {"balance": True}, {"balance": "NaN"}]
)
async def test_a_bad_balance_is_refused_naming_the_field(body: dict[str, Any]) -> None:
    async with running(sim_config(balance=Decimal(5))) as (simulator, base_url):
        url = f"{base_url}/simulator/balance"
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as answer:
            assert answer.status == 400
            assert (await answer.json())["error"]["field"] == "balance"
        assert simulator.balance == Decimal(5)
