"""The OpenAPI document describes every API route, and its references resolve; health probes."""

from __future__ import annotations

from typing import Any

from tests.support.world import World

METHODS = {"get", "post", "put", "patch", "delete"}


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


async def document(world: World) -> dict[str, Any]:
    answer = await world.call("GET", "/api/v1/openapi.json", role=None)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    doc: dict[str, Any] = answer.body
    return doc


async def test_every_api_route_is_documented(world: World) -> None:
    doc = await document(world)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in world.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }

    documented = {
        (method, path) for path, operations in doc["paths"].items() for method in operations
    }

    assert documented == registered


async def test_the_document_is_structurally_openapi_3_1(world: World) -> None:
    doc = await document(world)
    schemas = doc["components"]["schemas"]

    assert doc["openapi"] == "3.1.0"
    assert set(doc["info"]) >= {"title", "version"}
    assert set(doc["components"]["securitySchemes"]) == {"bearer"}
    problems = []
    operation_ids = []
    for path, operations in doc["paths"].items():
        assert path.startswith("/api/v1/")
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            operation_ids.append(operation["operationId"])
            if method not in METHODS:
                problems.append(f"{where}: not an HTTP method")
            if not operation.get("responses"):
                problems.append(f"{where}: no responses")
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            expected = [part[1:-1] for part in path.split("/") if part.startswith("{")]
            if names != expected:
                problems.append(f"{where}: path parameters {names} != {expected}")
            for parameter in operation.get("parameters", []):
                if parameter["in"] not in {"path", "query", "header"} or "schema" not in parameter:
                    problems.append(f"{where}: bad parameter {parameter['name']}")
            for security in operation.get("security", []):
                if set(security) - set(doc["components"]["securitySchemes"]):
                    problems.append(f"{where}: unknown security scheme")
    prefix = "#/components/schemas/"
    for ref in refs_in(doc):
        if not ref.startswith(prefix) or ref[len(prefix) :] not in schemas:
            problems.append(f"unresolved $ref {ref}")

    assert problems == []
    assert len(operation_ids) == len(set(operation_ids))


async def test_query_parameters_and_bodies_are_described(world: World) -> None:
    doc = await document(world)
    listing = doc["paths"]["/api/v1/announcements"]["get"]
    create = doc["paths"]["/api/v1/announcements"]["post"]
    imports = doc["paths"]["/api/v1/subscribers/import"]["post"]

    assert {p["name"] for p in listing["parameters"]} == {"limit", "before_id", "status"}
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AnnouncementIn"
    }
    assert set(create["responses"]) == {"201", "4XX"}
    assert list(imports["requestBody"]["content"]) == ["text/csv"]


async def test_healthz_and_readyz(world: World) -> None:
    health = await world.call("GET", "/healthz", role=None)
    ready = await world.call("GET", "/readyz", role=None)

    assert (health.status, health.body) == (200, {"status": "ok"})
    assert (ready.status, ready.body) == (200, {"status": "ok"})
