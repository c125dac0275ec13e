"""CAP 1.2 in and out: import creates, updates and cancels announcements; export and the Atom
feed publish them; every unusable document is a 422 naming the element and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from lxml import etree

from gateway.cap import CAP_NS, CapProblem
from gateway.cap.document import MAX_CAP_BYTES, cap_schema, parse_cap
from gateway.cap.geography import areas_in_circle, areas_in_polygon, parse_circle, parse_polygon
from gateway.cap.tables import cap_alerts
from gateway.db.schema import audit_events
from gateway.domain import Role
from tests.support.api_helpers import error_of, local_mobile, queue_deliveries, row_counts
from tests.support.world import Answer, World

DATA = Path(__file__).resolve().parent.parent / "data" / "cap"
CAP = "/api/v1/cap"
ANNOUNCEMENTS = "/api/v1/announcements"
TABLES = ("announcements", "audit_events", "cap_alerts", "deliveries")
NS = {"cap": CAP_NS, "atom": "http://www.w3.org/2005/Atom"}


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1


async def post_cap(
    world: World,
    document: str | bytes,
    *,
    agency: int = 0,
    role: Role = Role.AUTHOR,
    content_type: str = "application/cap+xml",
) -> Answer:
    raw = document.encode("utf-8") if isinstance(document, str) else document
    return await world.call(
        "POST", CAP, role=role, agency=agency, data=raw, headers={"Content-Type": content_type}
    )


async def approve(world: World, announcement_id: int, agency: int = 0) -> dict[str, Any]:
    answer = await world.call(
        "POST", f"{ANNOUNCEMENTS}/{announcement_id}/approve", role=Role.APPROVER, agency=agency
    )
    assert answer.status == 200, answer.body
    return dict(answer.body)


async def fetch(world: World, path: str) -> tuple[int, str, bytes]:
    async with world.client.get(path) as response:
        return response.status, response.content_type, await response.read()


async def test_alert_becomes_an_announcement_waiting_for_a_second_person(world: World) -> None:
    answer = await post_cap(world, sample("bmkg_gempa_tsunami.xml"))

    assert answer.status == 201, answer.body
    got = answer.body
    assert got["status"] == "pending_approval"
    assert len(got["verification_code"]) == 6
    assert (got["language"], got["title"]) == ("id", "Peringatan Dini Tsunami Selat Sunda")
    assert got["body"].startswith("Gempa M7,1 pukul 09.28 WIB")
    assert got["facts"] == {
        "what": "Gempa M7,1 berpotensi tsunami",
        "when": "2030-01-14T09:28:00+07:00",
        "where": "Pantai Banten dan Kepulauan Seribu",
        "action": "Segera menjauhi pantai menuju tempat tinggi",
        "link": "https://warning.bmkg.go.id/tsunami/20300114",
    }
    english = got["translations"]["en"]
    assert english["title"] == "Tsunami early warning: Sunda Strait"
    assert english["facts"]["what"] == "M7.1 earthquake, tsunami possible"
    assert english["facts"]["where"] == "Banten coast and Thousand Islands"
    assert got["areas"] == ["36.02", "31.01"]
    assert got["channels"] == ["sms"]
    assert got["urgency"] == "emergency"
    assert got["send_at"].startswith("2030-01-14T02:31:00")
    assert got["expires_at"].startswith("2030-01-14T06:31:00")
    async with world.engine.connect() as conn:
        stored = (await conn.execute(sa.select(cap_alerts))).mappings().one()
        actions = list(
            await conn.scalars(sa.select(audit_events.c.action).order_by(audit_events.c.id))
        )
    assert (stored["identifier"], stored["sender"], stored["msg_type"]) == (
        "BMKG-GEMPA-20300114-0931",
        "info@bmkg.go.id",
        "Alert",
    )
    assert stored["announcement_id"] == got["id"]
    assert stored["details"]["category"] == ["Geo"]
    assert actions == ["announcement.create", "announcement.submit"]
    # The two-person rule stands: an approver (not the posting author) approves.
    assert (await approve(world, got["id"]))["status"] in ("approved", "scheduled")


async def test_polygon_reaches_the_areas_whose_centroid_it_holds(world: World) -> None:
    answer = await post_cap(world, sample("banjir_jakarta_polygon.xml"))

    assert answer.status == 201, answer.body
    assert answer.body["areas"] == ["31.71", "31.72"]
    assert answer.body["channels"] == ["sms", "telegram"]
    assert answer.body["urgency"] == "normal"
    assert answer.body["language"] == "id"
    assert answer.body["translations"] == {}


async def test_export_is_valid_cap_and_round_trips_the_facts(world: World) -> None:
    created = (await post_cap(world, sample("bmkg_gempa_tsunami.xml"))).body
    await approve(world, created["id"])

    status, content_type, document = await fetch(world, f"/a/{created['verification_code']}.cap")

    assert (status, content_type) == (200, "application/cap+xml")
    root = etree.fromstring(document)
    assert cap_schema().validate(root), cap_schema().error_log
    assert root.findtext("cap:msgType", namespaces=NS) == "Alert"
    infos = root.findall("cap:info", namespaces=NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["id-ID", "en-US"]
    web = infos[0].findtext("cap:web", namespaces=NS)
    assert web.endswith(f"/a/{created['verification_code']}")
    assert infos[0].findtext("cap:severity", namespaces=NS) == "Severe"
    geocodes = infos[0].findall("cap:area/cap:geocode/cap:value", namespaces=NS)
    assert [g.text for g in geocodes] == ["36.02", "31.01"]

    again = await post_cap(world, document, agency=1)

    assert again.status == 201, again.body
    for key in ("title", "body", "language", "facts", "areas", "urgency", "channels"):
        assert again.body[key] == created[key], key
    assert again.body["translations"]["en"]["facts"] == {
        **created["facts"],
        **created["translations"]["en"]["facts"],
    }
    assert again.body["translations"]["en"]["title"] == created["translations"]["en"]["title"]
    assert again.body["expires_at"] == created["expires_at"]
    assert again.body["send_at"] == created["send_at"]


async def test_update_rewrites_the_announcement_and_asks_for_approval_again(
    world: World,
) -> None:
    created = (await post_cap(world, sample("bmkg_gempa_tsunami.xml"))).body
    await approve(world, created["id"])

    updated = await post_cap(world, sample("bmkg_gempa_update.xml"))

    assert updated.status == 200, updated.body
    assert updated.body["id"] == created["id"]
    assert updated.body["verification_code"] == created["verification_code"]
    assert updated.body["status"] == "pending_approval"
    assert updated.body["approved_at"] is None
    assert updated.body["title"] == "Pemutakhiran: Peringatan Dini Tsunami Selat Sunda"
    assert updated.body["facts"]["what"] == "Gempa M6,8 berpotensi tsunami"
    assert updated.body["areas"] == ["36.02", "36.01"]
    assert updated.body["translations"] == {}
    assert (await approve(world, created["id"]))["status"] in ("approved", "scheduled")


async def test_cancel_cancels_the_announcement_and_its_queued_deliveries(world: World) -> None:
    created = (await post_cap(world, sample("bmkg_gempa_tsunami.xml"))).body
    await approve(world, created["id"])
    subscriber = await world.subscribe(local_mobile(11), area_code="36.02")
    await queue_deliveries(
        world, announcement_id=created["id"], subscriber_ids=[subscriber.body["id"]]
    )

    cancelled = await post_cap(world, sample("bmkg_gempa_cancel.xml"))
    got = await world.call("GET", f"{ANNOUNCEMENTS}/{created['id']}", role=Role.AUTHOR)
    status, _, document = await fetch(world, f"/a/{created['verification_code']}.cap")

    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["status"] == "cancelled"
    assert got.body["stats"][0]["counts"]["cancelled"] == 1
    assert got.body["stats"][0]["counts"]["queued"] == 0
    root = etree.fromstring(document)
    assert status == 200
    assert cap_schema().validate(root), cap_schema().error_log
    assert root.findtext("cap:msgType", namespaces=NS) == "Cancel"
    assert root.findtext("cap:references", namespaces=NS).count(",") == 2


async def test_the_same_alert_twice_is_409_and_creates_nothing(world: World) -> None:
    first = await post_cap(world, sample("bmkg_gempa_tsunami.xml"))
    before = await row_counts(world, TABLES)

    second = await post_cap(world, sample("bmkg_gempa_tsunami.xml"))

    assert first.status == 201
    assert second.status == 409
    assert error_of(second.body)["field"] == "alert/identifier"
    assert await row_counts(world, TABLES) == before


async def test_an_update_after_cancel_is_refused(world: World) -> None:
    await post_cap(world, sample("bmkg_gempa_tsunami.xml"))
    assert (await post_cap(world, sample("bmkg_gempa_cancel.xml"))).status == 200
    before = await row_counts(world, TABLES)

    update = await post_cap(world, sample("bmkg_gempa_update.xml"))

    assert update.status == 409
    assert await row_counts(world, TABLES) == before


Mutation = Callable[[str], str]


def _replace(old: str, new: str, count: int = 1) -> Mutation:
    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, count)

    return mutate


TSUNAMI = "bmkg_gempa_tsunami.xml"
# (case, sample, mutation, expected field, needle whose line the message must name)
INVALID: list[tuple[str, str, Mutation, str, str | None]] = [
    (
        "not well-formed",
        TSUNAMI,
        _replace("</headline>", "</headlin>"),
        "alert",
        "</headlin>",
    ),
    (
        "wrong namespace",
        TSUNAMI,
        _replace(CAP_NS, "urn:oasis:names:tc:emergency:cap:1.1"),
        "alert",
        "<alert",
    ),
    ("billion laughs", "billion_laughs.xml", lambda text: text, "alert", "<!DOCTYPE"),
    (
        "urgency outside the list",
        TSUNAMI,
        _replace("<urgency>Immediate</urgency>", "<urgency>Now</urgency>"),
        "alert/info[1]/urgency",
        "<urgency>Now",
    ),
    (
        "sent in UTC with Z",
        TSUNAMI,
        _replace("<sent>2030-01-14T09:31:00+07:00", "<sent>2030-01-14T02:31:00Z"),
        "alert/sent",
        "<sent>",
    ),
    (
        "elements out of order",
        TSUNAMI,
        _replace("<event>Gempa M7,1 berpotensi tsunami</event>", ""),
        "alert/info[1]/responseType[1]",
        "<responseType>",
    ),
    (
        "a language Warta does not send in",
        TSUNAMI,
        _replace("<language>en-US</language>", "<language>jv-ID</language>"),
        "alert/info[2]/language",
        "<language>jv-ID",
    ),
    (
        "two infos in one language",
        TSUNAMI,
        _replace("<language>en-US</language>", "<language>in-ID</language>"),
        "alert/info[2]/language",
        "<language>in-ID",
    ),
    (
        "geocode that is no area code",
        TSUNAMI,
        _replace("<value>36.02</value>", "<value>Lebak</value>"),
        "alert/info[1]/area[1]/geocode[1]/value",
        "<value>Lebak",
    ),
    (
        "polygon that does not close",
        "banjir_jakarta_polygon.xml",
        _replace("-6.21,106.78 -6.33,106.78</polygon>", "-6.21,106.78</polygon>"),
        "alert/info[1]/area[1]/polygon[1]",
        "<polygon>",
    ),
    (
        "polygon far from any known area",
        "banjir_jakarta_polygon.xml",
        _replace(
            "-6.33,106.78 -6.33,106.95 -6.21,106.95 -6.21,106.78 -6.33,106.78",
            "10,10 10,11 11,11 11,10 10,10",
        ),
        "alert/info[1]/area[1]",
        "<area>",
    ),
    (
        "a test alert",
        TSUNAMI,
        _replace("<status>Actual</status>", "<status>Exercise</status>"),
        "alert/status",
        "<status>",
    ),
    (
        "headline too long",
        TSUNAMI,
        _replace("Peringatan Dini Tsunami Selat Sunda", "Peringatan " * 25),
        "alert/info[1]/headline",
        "<headline>",
    ),
    (
        "unknown channel",
        "banjir_jakarta_polygon.xml",
        _replace("sms, telegram", "sms, pager"),
        "alert/info[1]/parameter[1]",
        "<parameter>",
    ),
    (
        "expired already",
        TSUNAMI,
        _replace("<expires>2030-01-14T13:31:00+07:00", "<expires>2020-01-14T13:31:00+07:00"),
        "alert/info[1]/expires",
        "<expires>2020",
    ),
    (
        "update of an alert never received",
        "bmkg_gempa_update.xml",
        lambda text: text,
        "alert/references",
        "<references>",
    ),
]


@pytest.mark.parametrize(
    ("sample_name", "mutate", "field", "needle"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
async def test_an_unusable_document_is_422_naming_element_and_line_and_creates_nothing(
    world: World, sample_name: str, mutate: Mutation, field: str, needle: str | None
) -> None:
    document = mutate(sample(sample_name))
    before = await row_counts(world, TABLES)

    answer = await post_cap(world, document)

    assert answer.status == 422, answer.body
    error = error_of(answer.body)
    assert error["field"] == field, error
    if needle is not None:
        assert f"line {line_of(document, needle)}" in error["message"], error
    assert await row_counts(world, TABLES) == before


async def test_huge_and_mislabelled_documents_are_refused_without_a_500(world: World) -> None:
    padding = "<note>" + "x" * (MAX_CAP_BYTES + 10) + "</note>"
    huge = sample(TSUNAMI).replace("<note>Contoh untuk pengujian Warta</note>", padding)
    before = await row_counts(world, TABLES)

    too_big = await post_cap(world, huge)
    as_json = await post_cap(world, sample(TSUNAMI), content_type="application/json")
    empty = await post_cap(world, b"")
    operator = await post_cap(world, sample(TSUNAMI), role=Role.OPERATOR)

    assert (too_big.status, error_of(too_big.body)["code"]) == (413, "too_large")
    assert as_json.status == 415
    assert (empty.status, error_of(empty.body)["field"]) == (422, "alert")
    assert operator.status == 403
    assert await row_counts(world, TABLES) == before


async def test_application_xml_is_accepted_too(world: World) -> None:
    answer = await post_cap(
        world, sample("banjir_jakarta_polygon.xml"), content_type="application/xml"
    )
    assert answer.status == 201, answer.body


async def test_feed_lists_public_announcements_with_page_and_cap_links(world: World) -> None:
    shown = (await post_cap(world, sample("bmkg_gempa_tsunami.xml"))).body
    hidden = (await post_cap(world, sample("banjir_jakarta_polygon.xml"))).body
    await approve(world, shown["id"])

    status, content_type, document = await fetch(world, "/feed.atom")

    assert (status, content_type) == (200, "application/atom+xml")
    feed = etree.fromstring(document)
    assert feed.tag == "{http://www.w3.org/2005/Atom}feed"
    for required in ("atom:id", "atom:title", "atom:updated"):
        assert feed.find(required, namespaces=NS) is not None
    entries = feed.findall("atom:entry", namespaces=NS)
    assert [e.findtext("atom:title", namespaces=NS) for e in entries] == [shown["title"]]
    links = {
        link.get("type"): link.get("href")
        for link in entries[0].findall("atom:link", namespaces=NS)
    }
    assert links["text/html"].endswith(f"/a/{shown['verification_code']}")
    assert links["application/cap+xml"].endswith(f"/a/{shown['verification_code']}.cap")
    cap_path = "/a/" + links["application/cap+xml"].rsplit("/a/", 1)[1]
    page_path = "/a/" + links["text/html"].rsplit("/a/", 1)[1]
    assert (await fetch(world, cap_path))[0] == 200
    assert (await fetch(world, page_path))[0] == 200
    assert (await fetch(world, f"/a/{hidden['verification_code']}.cap"))[0] == 404


# -- without a database -------------------------------------------------------------------


def test_entities_are_never_expanded() -> None:
    with pytest.raises(CapProblem) as caught:
        parse_cap(sample("billion_laughs.xml").encode())
    assert caught.value.field == "alert"
    external = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>'
    )
    with pytest.raises(CapProblem):
        parse_cap(external)


def test_every_sample_is_valid_cap() -> None:
    for path in sorted(DATA.glob("*.xml")):
        if path.name == "billion_laughs.xml":
            continue
        root = parse_cap(path.read_bytes())
        assert root.tag == f"{{{CAP_NS}}}alert", path.name


def test_shapes_choose_regencies_over_their_province() -> None:
    mainland = parse_polygon("-6.36,106.74 -6.36,106.97 -6.0,106.97 -6.0,106.74 -6.36,106.74")
    with_islands = parse_polygon("-6.36,106.5 -6.36,106.97 -5.5,106.97 -5.5,106.5 -6.36,106.5")
    one_street = parse_polygon(
        "-6.261,106.801 -6.261,106.802 -6.262,106.802 -6.262,106.801 -6.261,106.801"
    )

    assert areas_in_polygon(mainland) == ["31.71", "31.72", "31.73", "31.74", "31.75"]
    assert "31" in areas_in_polygon(with_islands)
    assert not [a for a in areas_in_polygon(with_islands) if a.startswith("31.")]
    assert areas_in_polygon(one_street) == ["31.71"]
    assert areas_in_circle(*parse_circle("-6.92,107.62 3")) == ["32.73"]
    assert areas_in_circle(*parse_circle("-60,10 5")) == []
