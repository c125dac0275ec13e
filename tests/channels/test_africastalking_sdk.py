"""The seam around the official SDK: base URL, pooled sessions, error kinds."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import requests
from aiohttp import web

from channels.africastalking.config import AfricasTalkingConfig
from channels.africastalking.sdk import (
    AfricasTalkingClient,
    WartaSMSService,
    error_for_status,
    parse_retry_after,
)
from channels.africastalking.simulator import SimulatorConfig, serve_forever
from gateway.errors import AccountRefused, ConnectionFailed, HandedBack, Rejected, Throttled
from gateway.ratelimit import SEND_BY
from tests.support.provider_harness import API_KEY, USERNAME

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def config(base_url: str, **overrides: object) -> AfricasTalkingConfig:
    return AfricasTalkingConfig(
        username=USERNAME,
        api_key=API_KEY,
        base_url=base_url,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "kind", "reason"),
    [
        (400, Rejected, "HTTP 400"),
        (401, AccountRefused, "authentication refused (HTTP 401)"),
        (403, AccountRefused, "authentication refused (HTTP 403)"),
        (408, ConnectionFailed, "HTTP 408"),
        (429, Throttled, "HTTP 429"),
        (500, ConnectionFailed, "HTTP 500"),
        (503, ConnectionFailed, "HTTP 503"),
    ],
)
def test_http_status_to_error_kind(status: int, kind: type, reason: str) -> None:
    error = error_for_status(status)
    assert (type(error), error.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_base_url_comes_from_config() -> None:
    service = WartaSMSService(config("http://sim.test:8000/"), requests.Session)
    assert service._make_url("/messaging") == "http://sim.test:8000/version1/messaging"
    assert API_KEY not in repr(service)


def test_config_repr_hides_the_key() -> None:
    assert API_KEY not in repr(config("http://sim.test"))
    assert API_KEY not in repr(AfricasTalkingClient(config("http://sim.test")))


async def test_connection_refused_is_connection_failed() -> None:
    client = AfricasTalkingClient(config(f"http://127.0.0.1:{_free_port()}"))
    try:
        with pytest.raises(ConnectionFailed) as caught:
            await client.send_sms("Hi", ["+254711000001"])
    finally:
        await client.close()
    assert caught.value.reason == "connection error"


async def test_a_number_the_sdk_refuses_is_rejected_without_the_number() -> None:
    client = AfricasTalkingClient(config(f"http://127.0.0.1:{_free_port()}"))
    try:
        with pytest.raises(Rejected) as caught:
            await client.send_sms("Hi", ["0711000001"])
    finally:
        await client.close()
    assert "0711000001" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@contextlib.asynccontextmanager
async def plain_server(status: int, text: str, content_type: str) -> AsyncIterator[str]:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type=content_type)

    async with serving(handle) as base_url:
        yield base_url


@contextlib.asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[str]:
    """A bare server answering Africa's Talking's send path with ``handle``."""
    app = web.Application()
    app.router.add_post("/version1/messaging", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("text", "content_type"),
    [("<xml/>", "application/xml"), ("{not json", JSON), ("[1, 2]", JSON)],
    ids=["xml", "broken-json", "not-an-object"],
)
async def test_an_unreadable_answer_is_connection_failed(text: str, content_type: str) -> None:
    async with plain_server(201, text, content_type) as base_url:
        client = AfricasTalkingClient(config(base_url))
        try:
            with pytest.raises(ConnectionFailed):
                await client.send_sms("Hi", ["+254711000001"])
        finally:
            await client.close()


async def test_sessions_are_reused_per_worker_thread() -> None:
    async with plain_server(201, '{"SMSMessageData": {}}', JSON) as base_url:
        client = AfricasTalkingClient(config(base_url, executor_workers=2))
        try:
            for _ in range(6):
                await client.send_sms("Hi", ["+254711000001"])
            assert 1 <= client._threads.open_sessions <= 2
        finally:
            await client.close()
        assert client._threads.open_sessions == 0


async def test_a_request_still_waiting_for_a_thread_at_its_deadline_is_not_sent() -> None:
    # One worker thread, held by a slow request: the one behind it waits in the pool past the
    # end of the window booked for it (gateway.ratelimit.SEND_BY) and must not go out late.
    arrivals: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        arrivals.append(str((await request.post())["message"]))
        await asyncio.sleep(0.6)
        return web.json_response({"SMSMessageData": {"Message": "Sent", "Recipients": []}})

    async with serving(handle) as base_url:
        client = AfricasTalkingClient(config(base_url, executor_workers=1))

        async def send(message: str, send_by: float | None) -> object:
            SEND_BY.set(send_by)  # this task's own context, as the dispatcher sets it
            return await client.send_sms(message, ["+254711000001"])

        try:
            first = asyncio.create_task(send("first", None))
            deadline = time.monotonic() + 30
            while not arrivals:
                assert time.monotonic() < deadline, "the first request never arrived"
                await asyncio.sleep(0.01)
            late = asyncio.create_task(send("late", time.time() + 0.2))
            in_time = asyncio.create_task(send("in time", time.time() + 60))
            results = await asyncio.gather(first, late, in_time, return_exceptions=True)
        finally:
            await client.close()

    assert isinstance(results[1], HandedBack)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    assert arrivals == ["first", "in time"]


async def test_serve_forever_runs_until_cancelled() -> None:
    port = _free_port()
    task = asyncio.create_task(
        serve_forever("127.0.0.1", port, SimulatorConfig(username=USERNAME, api_key=API_KEY))
    )
    client = AfricasTalkingClient(config(f"http://127.0.0.1:{port}"))
    try:
        for _ in range(50):
            with contextlib.suppress(ConnectionFailed):
                answer = await client.send_sms("Hi", ["+254711000001"])
                break
            await asyncio.sleep(0.05)
        assert answer["SMSMessageData"]["Recipients"][0]["statusCode"] == 101
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
