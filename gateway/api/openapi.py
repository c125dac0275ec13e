"""The OpenAPI 3.1 document, built from the route declarations and their pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.api.routing import Route

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
    models: set[type[BaseModel]] = set()
    for route in routes:
        models.update(m for m in (route.body, route.response) if m is not None)
    _, schema = models_json_schema(
        [
            (m, "serialization" if m is not None else "validation")
            for m in sorted(models, key=lambda m: m.__name__)
        ],
        ref_template=_REF,
    )
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
            query_schema = route.query.model_json_schema()
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                prop = {k: v for k, v in prop.items() if k != "title"}
                parameters.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=route.body.__name__)}}
                },
            }
        elif route.content_type is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {route.content_type: {"schema": {"type": "string"}}},
            }
        if route.response is not None:
            operation["responses"][str(route.status)] = {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {"$ref": _REF.format(model=route.response.__name__)}
                    }
                },
            }
        else:
            operation["responses"][str(route.status)] = {"description": "Done"}
        if route.roles is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = (
                "Roles: " + ", ".join(sorted(r.value for r in route.roles)) + " (or admin)."
            )
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Warta gateway API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
