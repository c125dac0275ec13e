"""Announcements API: create, list, read with stats, the approval workflow, auth and isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.codes import ALPHABET, LENGTH
from gateway.db.schema import api_tokens, audit_events
from gateway.domain import DeliveryState, Role
from tests.support.api_helpers import error_of, local_mobile, queue_deliveries
from tests.support.world import World

API = "/api/v1/announcements"
# Far enough ahead that the dispatcher leaves an approved announcement alone during a test.
LATER = (datetime.now(UTC) + timedelta(days=30)).isoformat()

ROLE_FOR = {
    "submit": Role.AUTHOR,
    "approve": Role.APPROVER,
    "reject": Role.APPROVER,
    "cancel": Role.AUTHOR,
}
# How to reach each status from a fresh draft.
PATH_TO = {
    "draft": [],
    "pending_approval": ["submit"],
    "approved": ["submit", "approve"],
    "cancelled": ["cancel"],
}


async def act(world: World, announcement_id: int, action: str, role: Role | None = None) -> Any:
    return await world.call(
        "POST", f"{API}/{announcement_id}/{action}", role=role or ROLE_FOR[action]
    )


async def reach(world: World, status: str) -> dict[str, Any]:
    created = await world.announce(send_at=LATER)
    for action in PATH_TO[status]:
        answer = await act(world, created["id"], action)
        assert answer.status == 200, answer.body
    got = await world.call("GET", f"{API}/{created['id']}", role=Role.AUTHOR)
    assert got.body["status"] == status
    return dict(got.body)


async def test_create_answers_201_with_a_draft_and_a_verification_code(world: World) -> None:
    answer = await world.call(
        "POST",
        API,
        role=Role.AUTHOR,
        json={
            "title": "Banjir di Kampung Melayu",
            "body": "Warga diminta mengungsi.",
            "channels": ["sms", "telegram_channel"],
            "urgency": "emergency",
            "facts": {"what": "Banjir", "link": "https://bpbd.example.go.id/banjir"},
        },
    )

    assert answer.status == 201, answer.body
    created = answer.body
    code = created["verification_code"]
    assert isinstance(created["id"], int)
    assert created["status"] == "draft"
    assert len(code) == LENGTH
    assert set(code) <= set(ALPHABET)
    assert created["urgency"] == "emergency"
    assert created["channels"] == ["sms", "telegram_channel"]
    assert created["facts"]["link"] == "https://bpbd.example.go.id/banjir"
    assert created["public_url"].endswith(f"/a/{code}")


async def test_verification_codes_differ(world: World) -> None:
    codes = {(await world.announce())["verification_code"] for _ in range(20)}

    assert len(codes) == 20


async def test_list_is_newest_first_and_pages_with_before_id(world: World) -> None:
    ids = [(await world.announce(title=f"Pengumuman {i}"))["id"] for i in range(5)]
    newest_first = list(reversed(ids))

    everything = await world.call("GET", API, role=Role.AUTHOR)
    first = await world.call("GET", f"{API}?limit=2", role=Role.AUTHOR)
    second = await world.call(
        "GET", f"{API}?limit=2&before_id={first.body['next_before_id']}", role=Role.AUTHOR
    )
    third = await world.call(
        "GET", f"{API}?limit=2&before_id={second.body['next_before_id']}", role=Role.AUTHOR
    )

    assert [a["id"] for a in everything.body["items"]] == newest_first
    assert everything.body["next_before_id"] is None
    assert [a["id"] for a in first.body["items"]] == newest_first[:2]
    assert [a["id"] for a in second.body["items"]] == newest_first[2:4]
    assert [a["id"] for a in third.body["items"]] == newest_first[4:]
    assert third.body["next_before_id"] is None


async def test_list_filters_by_status(world: World) -> None:
    draft = await world.announce()
    submitted = await reach(world, "pending_approval")

    drafts = await world.call("GET", f"{API}?status=draft", role=Role.AUTHOR)
    pending = await world.call("GET", f"{API}?status=pending_approval", role=Role.AUTHOR)

    assert [a["id"] for a in drafts.body["items"]] == [draft["id"]]
    assert [a["id"] for a in pending.body["items"]] == [submitted["id"]]


async def test_get_shows_delivery_counts_per_channel_and_state(world: World) -> None:
    created = await world.announce()
    subscriber_ids = []
    for n in range(3):
        answer = await world.subscribe(local_mobile(n))
        assert answer.status == 201, answer.body
        subscriber_ids.append(answer.body["id"])
    await queue_deliveries(world, announcement_id=created["id"], subscriber_ids=subscriber_ids)

    got = await world.call("GET", f"{API}/{created['id']}", role=Role.OPERATOR)

    assert got.status == 200, got.body
    expected_counts = {state.value: 0 for state in DeliveryState} | {"queued": 3}
    assert got.body["stats"] == [{"channel": "sms", "counts": expected_counts, "total": 3}]


async def test_get_without_deliveries_has_empty_stats(world: World) -> None:
    created = await world.announce()

    got = await world.call("GET", f"{API}/{created['id']}", role=Role.AUTHOR)

    assert got.status == 200
    assert got.body["stats"] == []


async def test_the_whole_approval_path(world: World) -> None:
    created = await world.announce(send_at=LATER)

    submitted = await act(world, created["id"], "submit")
    approved = await act(world, created["id"], "approve")
    cancelled = await act(world, created["id"], "cancel")

    assert (submitted.status, submitted.body["status"]) == (200, "pending_approval")
    assert (approved.status, approved.body["status"]) == (200, "approved")
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert submitted.body["submitted_at"] is not None
    assert approved.body["approved_at"] is not None
    assert cancelled.body["cancelled_at"] is not None


async def test_reject_sends_back_to_draft_and_it_can_be_resubmitted(world: World) -> None:
    pending = await reach(world, "pending_approval")

    rejected = await act(world, pending["id"], "reject")
    resubmitted = await act(world, pending["id"], "submit")

    assert (rejected.status, rejected.body["status"]) == (200, "draft")
    assert (resubmitted.status, resubmitted.body["status"]) == (200, "pending_approval")


async def test_cancel_after_approve_cancels_queued_deliveries(world: World) -> None:
    approved = await reach(world, "approved")
    subscriber = await world.subscribe(local_mobile(7))
    await queue_deliveries(
        world, announcement_id=approved["id"], subscriber_ids=[subscriber.body["id"]]
    )

    cancelled = await act(world, approved["id"], "cancel", role=Role.APPROVER)
    got = await world.call("GET", f"{API}/{approved['id']}", role=Role.AUTHOR)

    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert got.body["stats"][0]["counts"]["cancelled"] == 1
    assert got.body["stats"][0]["counts"]["queued"] == 0


ILLEGAL = [
    ("draft", "approve"),
    ("draft", "reject"),
    ("pending_approval", "submit"),
    ("approved", "submit"),
    ("approved", "approve"),
    ("approved", "reject"),
    ("cancelled", "submit"),
    ("cancelled", "approve"),
    ("cancelled", "reject"),
    ("cancelled", "cancel"),
]


@pytest.mark.parametrize(("status", "action"), ILLEGAL)
async def test_an_illegal_transition_is_a_409_naming_the_status(
    world: World, status: str, action: str
) -> None:
    announcement = await reach(world, status)

    answer = await act(world, announcement["id"], action)
    after = await world.call("GET", f"{API}/{announcement['id']}", role=Role.AUTHOR)

    assert answer.status == 409, answer.body
    error = error_of(answer.body)
    assert (error["code"], error["field"]) == ("conflict", "status")
    assert error["message"].startswith(f"cannot {action} an announcement that is {status}: ")
    assert after.body["status"] == status


async def test_nobody_approves_their_own_announcement(world: World) -> None:
    # The admin token may both author and approve; the two-person rule still holds.
    created = await world.call(
        "POST", API, role=Role.ADMIN, json={"title": "Sendiri", "channels": ["sms"]}
    )
    await act(world, created.body["id"], "submit", role=Role.ADMIN)

    answer = await act(world, created.body["id"], "approve", role=Role.ADMIN)
    after = await world.call("GET", f"{API}/{created.body['id']}", role=Role.AUTHOR)

    assert answer.status == 403, answer.body
    assert error_of(answer.body)["code"] == "two_person_rule"
    assert after.body["status"] == "pending_approval"


UNAUTHENTICATED = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrt_not-a-real-token"}, id="unknown-token"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
    pytest.param({"Authorization": "Bearer "}, id="empty-token"),
    pytest.param({"Authorization": "Bearer " + "x" * 500}, id="overlong-token"),
]


@pytest.mark.parametrize("headers", UNAUTHENTICATED)
async def test_without_a_valid_token_the_answer_is_401(
    world: World, headers: dict[str, str]
) -> None:
    created = await world.announce()
    requests = [
        ("GET", API),
        ("POST", API),
        ("GET", f"{API}/{created['id']}"),
        ("POST", f"{API}/{created['id']}/cancel"),
        ("GET", "/api/v1/subscribers"),
    ]

    answers = [
        await world.call(
            method, path, role=None, headers=headers, json={"title": "x", "channels": ["sms"]}
        )
        for method, path in requests
    ]

    assert [(a.status, error_of(a.body)["code"]) for a in answers] == [
        (401, "unauthenticated")
    ] * len(requests)


async def test_a_revoked_token_is_refused(world: World) -> None:
    assert (await world.call("GET", API, role=Role.AUTHOR)).status == 200
    async with world.engine.begin() as conn:
        await conn.execute(
            sa.update(api_tokens)
            .where(api_tokens.c.name == "alpha author")
            .values(revoked_at=datetime.now(UTC))
        )

    answer = await world.call("GET", API, role=Role.AUTHOR)

    assert answer.status == 401
    assert error_of(answer.body)["code"] == "unauthenticated"


FORBIDDEN = [
    ("POST", API, Role.OPERATOR),
    ("POST", API, Role.APPROVER),
    ("POST", f"{API}/{{id}}/submit", Role.OPERATOR),
    ("POST", f"{API}/{{id}}/approve", Role.AUTHOR),
    ("POST", f"{API}/{{id}}/reject", Role.OPERATOR),
    ("POST", f"{API}/{{id}}/cancel", Role.OPERATOR),
    ("POST", "/api/v1/subscribers", Role.AUTHOR),
    ("GET", "/api/v1/subscribers", Role.APPROVER),
    ("DELETE", "/api/v1/subscribers/1", Role.AUTHOR),
]


@pytest.mark.parametrize(("method", "path", "role"), FORBIDDEN)
async def test_a_role_without_the_right_gets_403(
    world: World, method: str, path: str, role: Role
) -> None:
    created = await world.announce()

    answer = await world.call(
        method,
        path.format(id=created["id"]),
        role=role,
        json={"title": "x", "channels": ["sms"], "phone": local_mobile(1)},
    )
    after = await world.call("GET", f"{API}/{created['id']}", role=Role.AUTHOR)

    assert answer.status == 403, answer.body
    error = error_of(answer.body)
    assert error["code"] == "forbidden"
    assert f"your token is {role.value}" in error["message"]
    assert after.body["status"] == "draft"


async def test_agencies_never_see_each_others_announcements(world: World) -> None:
    ours = await world.announce(agency=0)
    theirs = await world.announce(agency=1)
    foreign = f"{API}/{ours['id']}"

    answers = {
        "get": await world.call("GET", foreign, role=Role.AUTHOR, agency=1),
        "submit": await world.call("POST", foreign + "/submit", role=Role.AUTHOR, agency=1),
        "cancel": await world.call("POST", foreign + "/cancel", role=Role.ADMIN, agency=1),
        "preview": await world.call("GET", foreign + "/preview", role=Role.AUTHOR, agency=1),
        "deliveries": await world.call("GET", foreign + "/deliveries", role=Role.AUTHOR, agency=1),
    }
    listed = await world.call("GET", API, role=Role.ADMIN, agency=1)
    untouched = await world.call("GET", foreign, role=Role.AUTHOR, agency=0)

    assert {name: a.status for name, a in answers.items()} == {name: 404 for name in answers}
    assert [a["id"] for a in listed.body["items"]] == [theirs["id"]]
    assert untouched.body["status"] == "draft"


async def test_agencies_never_see_each_others_subscribers(world: World) -> None:
    ours = await world.subscribe(local_mobile(1), agency=0)
    theirs = await world.subscribe(local_mobile(2), agency=1)

    erase = await world.call(
        "DELETE", f"/api/v1/subscribers/{ours.body['id']}", role=Role.ADMIN, agency=1
    )
    listed = await world.call("GET", "/api/v1/subscribers", role=Role.OPERATOR, agency=1)
    search = await world.call(
        "POST",
        "/api/v1/subscribers/search",
        role=Role.OPERATOR,
        agency=1,
        json={"phone": local_mobile(1)},
    )
    ours_listed = await world.call("GET", "/api/v1/subscribers", role=Role.OPERATOR, agency=0)

    assert erase.status == 404
    assert [s["id"] for s in listed.body["items"]] == [theirs.body["id"]]
    assert search.body["items"] == []
    assert [(s["id"], s["erased"]) for s in ours_listed.body["items"]] == [(ours.body["id"], False)]


async def test_the_same_number_may_subscribe_to_two_agencies(world: World) -> None:
    first = await world.subscribe(local_mobile(3), agency=0)
    second = await world.subscribe(local_mobile(3), agency=1)

    assert (first.status, second.status) == (201, 201)


async def test_put_replaces_a_draft_for_its_author_only_while_it_is_a_draft(
    world: World,
) -> None:
    created = await world.announce(topics=["banjir"])
    path = f"{API}/{created['id']}"
    edit = {
        "title": "Jalan ditutup sementara",
        "body": "Jalan Merdeka ditutup sampai Jumat.",
        "channels": ["sms"],
        "translations": {"en": {"title": "Road closed", "body": "Until Friday."}},
        "facts": {"where": "Jalan Merdeka"},
    }
    answer = await world.call("PUT", path, role=Role.AUTHOR, json=edit)
    assert answer.status == 200, answer.body
    assert (answer.body["title"], answer.body["status"]) == (edit["title"], "draft")
    assert answer.body["translations"]["en"]["title"] == "Road closed"
    assert answer.body["topics"] == []  # replaced, as PUT says
    assert answer.body["verification_code"] == created["verification_code"]
    async with world.engine.connect() as conn:
        event = (
            await conn.execute(
                sa.select(audit_events.c.before, audit_events.c.after).where(
                    audit_events.c.action == "announcement.update"
                )
            )
        ).one()
    assert event.before == {"status": "draft", "title": created["title"]}
    assert event.after["title"] == edit["title"]
    assert sorted(event.after["changed"]) == ["body", "facts", "title", "topics", "translations"]

    refused = [
        (await world.call("PUT", path, role=Role.APPROVER, json=edit)).status,
        (await world.call("PUT", path, role=Role.OPERATOR, json=edit)).status,
        (await world.call("PUT", path, role=Role.AUTHOR, agency=1, json=edit)).status,
    ]
    assert refused == [403, 403, 404]
    bad = await world.call("PUT", path, role=Role.AUTHOR, json={**edit, "channels": []})
    assert (bad.status, bad.body["error"]["field"]) == (422, "channels")
    again = await world.call(
        "PUT", path, role=Role.AUTHOR, json={**edit, "recurrence": {"cron": "0 7 * * 1"}}
    )
    assert (again.status, again.body["error"]["field"]) == (422, "recurrence")

    await act(world, created["id"], "submit")
    late = await world.call("PUT", path, role=Role.AUTHOR, json=edit)
    assert (late.status, late.body["error"]["field"]) == (409, "status")
    await act(world, created["id"], "reject")
    assert (await world.call("PUT", path, role=Role.AUTHOR, json=edit)).status == 200


async def test_preview_without_saving(world: World) -> None:
    assert (await world.subscribe("+6281255590001", language="en")).status == 201
    body = {
        "title": "Jalan ditutup",
        "body": "Jalan Merdeka ditutup.",
        "channels": ["sms"],
        "translations": {"en": {"title": "Road closed"}},
        "facts": {"where": "Jalan Merdeka"},
    }
    answer = await world.call("POST", f"{API}/preview", role=Role.AUTHOR, json=body)
    assert answer.status == 200, answer.body
    assert [(r["language"], r["recipients"]) for r in answer.body["renditions"]] == [
        ("id", 0),
        ("en", 1),
    ]
    assert all(r["missing_facts"] == [] for r in answer.body["renditions"])
    listed = await world.call("GET", API, role=Role.AUTHOR)
    assert listed.body["items"] == []
    saved = await world.announce(**body)
    stored = await world.call("GET", f"{API}/{saved['id']}/preview", role=Role.AUTHOR)
    keys = ("channel", "language", "characters", "segments", "recipients", "estimated_cost")
    assert [{k: r[k] for k in keys} for r in answer.body["renditions"]] == [
        {k: r[k] for k in keys} for r in stored.body["renditions"]
    ]
    bad = await world.call("POST", f"{API}/preview", role=Role.AUTHOR, json={"title": "x"})
    assert (bad.status, bad.body["error"]["field"]) == (422, "channels")
    assert (await world.call("POST", f"{API}/preview", role=Role.APPROVER, json=body)).status == 403
