"""Every provider callback takes malformed input without a 500; USSD always answers a screen.

The callback endpoints are listed from the app's router (everything under ``/callbacks/``),
so a new one is fuzzed without being named here. Each gets bodies Hypothesis draws: forms with
the providers' field names and odd values (huge, control characters, latin-1 or invalid UTF-8
bytes), JSON of any shape, raw bytes, and wrong content types; each body is sent twice (a
provider replays). Requests carry valid credentials (path token, Telegram secret header, Meta
signature), so the parsers behind the authentication are what gets exercised.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import WartaConfig
from tests.support.config import make_config
from tests.support.world import World

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

EXAMPLES = 50
TELEGRAM_SECRET = "tg-fuzz-secret"
META_SECRET = "meta-fuzz-secret"
META_VERIFY = "meta-fuzz-verify"

# Field names the providers send (Africa's Talking SMS, USSD, voice, opt-out).
FIELD_NAMES = [
    "sessionId",
    "serviceCode",
    "phoneNumber",
    "networkCode",
    "text",
    "from",
    "to",
    "id",
    "linkId",
    "date",
    "status",
    "failureReason",
    "retryCount",
    "senderId",
    "isActive",
    "callerNumber",
    "destinationNumber",
    "dtmfDigits",
    "direction",
    "durationInSeconds",
    "amount",
    "recordingUrl",
]
PLAUSIBLE = st.sampled_from(
    [
        "",
        "+6281200000001",
        "0812-0000-0002",
        "*384*123#",
        "1*2*3",
        "1*" * 200,
        "Success",
        "Failed",
        "DeliveryFailure",
        "ATXid_1",
        "1",
        "true",
        "9999999999999999999999",
        "-1",
        "CEK 7BQTYV",
        "STOP",
        "DAFTAR 31.71",
        "\x00\x01\x1b",
        "é€😀",
        "%",
        "*#*#",
    ]
)
VALUE = st.one_of(
    PLAUSIBLE,
    st.text(max_size=60),
    st.builds(
        lambda s, n: s * n, st.text(min_size=1, max_size=3), st.sampled_from([5_000, 50_000])
    ),
)
FORM = st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), VALUE)
JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        PLAUSIBLE,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "update_id",
                        "message",
                        "chat",
                        "id",
                        "text",
                        "from",
                        "my_chat_member",
                        "entry",
                        "changes",
                        "value",
                        "statuses",
                        "status",
                        "recipient_id",
                        "timestamp",
                        "errors",
                        "messages",
                        "contacts",
                        "type",
                        "body",
                        "context",
                    ]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
FORM_TYPE = "application/x-www-form-urlencoded"
# A Cloud API envelope around citizens' messages whose fields are each plausible or odd.
WA_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "from": st.one_of(st.sampled_from(["6281200000001", "999999999", "+62812"]), JSON_VALUE),
        "id": st.one_of(st.sampled_from(["wamid.F1", "wamid.F2", "w" * 200]), JSON_VALUE),
        "timestamp": st.one_of(st.just("1760000000"), JSON_VALUE),
        "type": st.one_of(
            st.sampled_from(["text", "button", "interactive", "image", "reaction", "Text!"]),
            JSON_VALUE,
        ),
        "text": st.one_of(st.fixed_dictionaries({"body": VALUE}), JSON_VALUE),
        "button": st.one_of(st.fixed_dictionaries({"text": VALUE}), JSON_VALUE),
        "interactive": st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("button_reply"), "button_reply": st.just({"title": "Ya"})}
            ),
            JSON_VALUE,
        ),
        "context": st.one_of(st.fixed_dictionaries({"id": VALUE}), JSON_VALUE),
    },
)
WA_WEBHOOK = st.tuples(
    st.lists(WA_MESSAGE, max_size=3),
    st.one_of(st.just([{"profile": {"name": "Ani"}, "wa_id": "6281200000001"}]), JSON_VALUE),
).map(
    lambda t: json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {"field": "messages", "value": {"messages": t[0], "contacts": t[1]}}
                    ],
                }
            ],
        }
    ).encode()
)


def _encode_form(fields: dict[str, str], how: str) -> bytes:
    if how == "utf-8":
        raw = {k.encode(): v.encode("utf-8", "surrogatepass") for k, v in fields.items()}
    elif how == "latin-1":
        raw = {k.encode(): v.encode("latin-1", "replace") for k, v in fields.items()}
    else:  # invalid UTF-8 sequences, percent-encoded and raw
        raw = {
            k.encode(): v.encode("utf-8", "replace") + b"\xff\xfe\xc3" for k, v in fields.items()
        }
    if how == "raw-bytes":
        return b"&".join(k + b"=" + v for k, v in raw.items())
    return b"&".join(
        quote_from_bytes(k).encode() + b"=" + quote_from_bytes(v).encode() for k, v in raw.items()
    )


BODY = st.one_of(
    st.tuples(
        FORM,
        st.sampled_from(["utf-8", "latin-1", "invalid-utf-8", "raw-bytes"]),
        st.sampled_from([FORM_TYPE, FORM_TYPE + "; charset=latin-1", ""]),
    ).map(lambda t: (_encode_form(t[0], t[1]), t[2])),
    st.tuples(
        JSON_VALUE.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(["application/json", FORM_TYPE, "text/plain"]),
    ),
    st.tuples(WA_WEBHOOK, st.just("application/json")),
    st.tuples(
        st.binary(max_size=300),
        st.sampled_from(["application/json", FORM_TYPE, "multipart/form-data", "", "text/xml"]),
    ),
)


@pytest.fixture
def fuzz_config(database_url: str, keys: dict[str, str]) -> WartaConfig:
    secrets = {
        **{k: v for k, v in keys.items() if k != "africastalking_api_key"},
        "telegram_webhook_secret": TELEGRAM_SECRET,
        "meta_app_secret": META_SECRET,
        "meta_verify_token": META_VERIFY,
    }
    return make_config(database_url, secrets, dispatch={"enabled": False})


@pytest.fixture
async def fuzz_world(aiohttp_client: Any, fuzz_config: WartaConfig) -> AsyncIterator[World]:
    yield await World.start(aiohttp_client, fuzz_config)


def callback_paths(world: World, token: str) -> list[tuple[str, str]]:
    """(method, path) of every callback route, with the real path token filled in."""
    found = []
    for resource in world.app.router.resources():
        path = resource.canonical
        if not path.startswith("/callbacks/"):
            continue
        for route in resource:
            if route.method in ("POST", "GET"):
                found.append((route.method, path.replace("{token}", token)))
    return sorted(found)


def _headers(path: str, body: bytes, content_type: str) -> dict[str, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    if path.startswith("/callbacks/telegram/"):
        headers["X-Telegram-Bot-Api-Secret-Token"] = TELEGRAM_SECRET
    if path.startswith("/callbacks/meta/"):
        digest = hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
    return headers


async def test_every_callback_survives_malformed_input(
    fuzz_world: World, keys: dict[str, str]
) -> None:
    routes = callback_paths(fuzz_world, keys["callback_token"])
    posts = [path for method, path in routes if method == "POST"]
    # The documented callbacks: AT delivery, opt-out, inbound, USSD, voice; Meta; Telegram.
    assert len(posts) >= 7, routes
    loop = asyncio.get_running_loop()
    client = fuzz_world.client

    async def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with client.request(method, path, data=body, headers=headers) as response:
            return response.status, await response.text(errors="replace")

    def call(
        method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        future = asyncio.run_coroutine_threadsafe(send(method, path, body, headers or {}), loop)
        return future.result(timeout=60)

    problems: list[str] = []

    def fuzz(path: str) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(body=BODY)
        def one(body: tuple[bytes, str]) -> None:
            raw, content_type = body
            for _replay in range(2):
                status, text = call("POST", path, raw, _headers(path, raw, content_type))
                assert status < 500, f"{path}: {status} {text[:200]}"
                if path.endswith("/ussd"):
                    assert status == 200, f"{path}: {status} {text[:200]}"
                    assert text.startswith(("CON ", "END ")), text[:200]

        try:
            one()
        except AssertionError as exc:
            problems.append(str(exc)[:2000])

    for path in posts:
        await asyncio.to_thread(fuzz, path)

    # Meta's GET verification with odd queries.
    verify_paths = [path for method, path in routes if method == "GET"]

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(
        query=st.dictionaries(
            st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
            st.one_of(PLAUSIBLE, st.text(max_size=60)),
            max_size=4,
        )
    )
    def verify(query: dict[str, str]) -> None:
        from urllib.parse import urlencode

        for path in verify_paths:
            status, text = call("GET", f"{path}?{urlencode(query)}")
            assert status < 500, f"{path}: {status} {text[:200]}"

    try:
        await asyncio.to_thread(verify)
    except AssertionError as exc:
        problems.append(str(exc)[:2000])
    assert problems == []


async def test_an_unknown_charset_is_refused_not_a_500(
    fuzz_world: World, keys: dict[str, str]
) -> None:
    routes = callback_paths(fuzz_world, keys["callback_token"])
    statuses = {}
    for method, path in routes:
        if method != "POST":
            continue
        body = b"text=STOP&from=%2B6281200000001&to=12345&id=1&status=Success"
        headers = _headers(path, body, FORM_TYPE + "; charset=bogus")
        async with fuzz_world.client.post(path, data=body, headers=headers) as response:
            statuses[path] = response.status
    assert all(status < 500 for status in statuses.values()), statuses
    assert set(statuses.values()) <= {200, 400, 404, 415}, statuses  # 404: no such session
