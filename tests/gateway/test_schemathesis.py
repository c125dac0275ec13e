"""Schemathesis against the gateway's own OpenAPI document: every operation, as an admin.

The gateway runs on a real port in a thread of its own (schemathesis sends with ``requests``,
which blocks), on the test's real database. Each operation gets schema-conforming and
schema-violating requests; whatever they are, the gateway must never answer 5xx, and every
4xx must be the one error shape ``{"error": {"code", "message", "field"}}``. Generation is
derandomised so a run is repeatable; bump ``EXAMPLES`` locally to search further.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from gateway.app import create_app
from gateway.config import WartaConfig
from gateway.domain import Role
from tests.support.world import World, seed_agencies

OPENAPI = "/api/v1/openapi.json"
EXAMPLES = {"sqlite": 25, "postgres": 8}


@dataclass
class Served:
    base_url: str
    token: str


@pytest.fixture
def served(config: WartaConfig) -> Iterator[Served]:
    """The real app on 127.0.0.1 in its own event loop, with two seeded agencies."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(create_app(config))

    async def start() -> Served:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        tokens, _ = await seed_agencies(runner.app)
        return Served(base_url=f"http://{host}:{port}", token=tokens[0][Role.ADMIN])

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def problem_with(response: requests.Response) -> str | None:
    """What is wrong with an answer to any request at all, or None."""
    if response.status_code >= 500:
        return f"server error {response.status_code}: {response.text[:300]}"
    if response.status_code < 400:
        return None
    try:
        body: Any = response.json()
    except ValueError:
        return f"{response.status_code} without a JSON body: {response.text[:300]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"{response.status_code} without an error object: {body!r}"
    if not (isinstance(error.get("code"), str) and error["code"]):
        return f"{response.status_code} without an error code: {body!r}"
    if not (isinstance(error.get("message"), str) and error["message"]):
        return f"{response.status_code} without an error message: {body!r}"
    if "field" not in error or not isinstance(error["field"], str | None):
        return f"{response.status_code} without an error field key: {body!r}"
    return None


@pytest.mark.parametrize("backend", ["sqlite"])
def test_openapi_document_loads(served: Served) -> None:
    schema = schemathesis.openapi.from_url(served.base_url + OPENAPI, timeout=10)
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30


def test_no_input_makes_a_server_error(served: Served, backend: str) -> None:
    schema = schemathesis.openapi.from_url(served.base_url + OPENAPI, timeout=10)
    examples = EXAMPLES[backend]
    headers = {"Authorization": f"Bearer {served.token}"}
    found: dict[str, str] = {}
    calls: dict[str, int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            strategy = st.one_of(
                operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            )

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def probe(case: Case) -> None:
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
                response = case.call(
                    base_url=served.base_url, session=session, headers=headers, timeout=30
                )
                problem = problem_with(response)
                assert problem is None, f"{problem}\n{case.as_curl_command()}"

            try:
                probe()
            except AssertionError as exc:
                found[operation.label] = str(exc)
    report = "\n\n".join(f"{label}: {problem}" for label, problem in sorted(found.items()))
    assert not found, report
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert set(calls) == operations
    assert sum(calls.values()) >= examples * len(operations) // 2


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/announcements?before_id=9223372036854775808",
        "/api/v1/subscribers?after_id=9223372036854775808",
        "/api/v1/inbox?before_id=9223372036854775808",
        "/api/v1/announcements/1/deliveries?after_id=9223372036854775808",
    ],
)
async def test_an_id_past_64_bits_is_invalid_not_an_overflow(world: World, path: str) -> None:
    answer = await world.call("GET", path)
    assert answer.status == 422, answer.body
    assert answer.body["error"]["code"] == "invalid"


async def test_a_telegram_chat_id_past_64_bits_is_invalid(world: World) -> None:
    answer = await world.subscribe("0812-3456-7890", channels=["telegram"], telegram_chat_id=2**63)
    assert answer.status == 422, answer.body
    assert answer.body["error"]["field"] == "telegram_chat_id"
