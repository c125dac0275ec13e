"""The OpenAPI 3.1 document, built from the route declarations and their pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__
from gateway.api.routing import Route

OPENAPI_PATH = "/api/v1/openapi.json"
_REF = "#/components/schemas/{model}"
_ERROR = {
    "description": "Error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "field"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": ["string", "null"]},
                        },
                    }
                },
            }
        }
    },
}


def build_openapi(routes: list[Route]) -> dict[str, Any]:
    """The document for ``routes``, plus its own path (``/api/v1/openapi.json``).

    Request bodies and query strings are described as pydantic validates them, responses as
    it serialises them; every ``$ref`` points into ``components.schemas``.
    """
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for route in routes:
        for model in (route.body, route.query):
            if model is not None:
                wanted[(model, "validation")] = None
        if route.response is not None:
            wanted[(route.response, "serialization")] = None
    refs, schema = models_json_schema(
        sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1])), ref_template=_REF
    )
    schemas: dict[str, Any] = schema.get("$defs", {})

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    def properties_of(model: type[BaseModel]) -> tuple[dict[str, Any], set[str]]:
        name = ref(model, "validation")["$ref"].rsplit("/", 1)[-1]
        body = schemas[name]
        return body.get("properties", {}), set(body.get("required", []))

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "tags": list(route.tags),
            "responses": {"4XX": _ERROR},
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1} if name == "id" else {"type": "string"},
            }
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.query is not None:
            query_properties, required = properties_of(route.query)
            for name, prop in query_properties.items():
                prop = {k: v for k, v in prop.items() if k != "title"}
                parameters.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        elif route.content_type is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {route.content_type: {"schema": {"type": "string"}}},
            }
        if route.response is not None:
            operation["responses"][str(route.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref(route.response, "serialization")}},
            }
        else:
            operation["responses"][str(route.status)] = {"description": "Done"}
        if route.roles is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = (
                "Roles: " + ", ".join(sorted(r.value for r in route.roles)) + " (or admin)."
            )
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths[OPENAPI_PATH] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "tags": ["public"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Warta gateway API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
