"""Declaring API endpoints once: route, roles, request and response models, and the OpenAPI
document all come from the same declaration, so the document cannot drift from the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.api.errors import ApiError, from_validation_error, read_json
from gateway.auth import Principal, principal_of
from gateway.domain import Role

JSON_LIMIT = 1024 * 1024

Endpoint = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Endpoint
    summary: str
    roles: frozenset[Role] | None
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    content_type: str | None
    tags: tuple[str, ...] = field(default=())


class ApiRoutes:
    """A list of routes, each registered with ``@routes.post(...)`` and friends."""

    def __init__(self, prefix: str = "/api/v1") -> None:
        self.prefix = prefix
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        roles: Sequence[Role] | None = tuple(Role),
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        content_type: str | None = None,
        tags: Sequence[str] = (),
    ) -> Callable[[Endpoint], Endpoint]:
        """Register ``handler(request, principal, [body], [query])``.

        ``roles=None`` makes the endpoint public. The handler returns a pydantic model (sent as
        JSON with ``status``), a ``web.StreamResponse`` (sent as is) or None (204).
        """

        def register(handler: Endpoint) -> Endpoint:
            self.routes.append(
                Route(
                    method=method,
                    path=self.prefix + path,
                    handler=handler,
                    summary=summary,
                    roles=None if roles is None else frozenset(roles),
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    content_type=content_type,
                    tags=tuple(tags),
                )
            )
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("POST", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.route("DELETE", path, **options)

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, route.path, _wrap(route))


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        args: list[Any] = [request]
        if route.roles is not None:
            principal: Principal = principal_of(request)
            if principal.role not in route.roles and principal.role is not Role.ADMIN:
                allowed = ", ".join(sorted(r.value for r in route.roles))
                raise ApiError(
                    403,
                    "forbidden",
                    f"this needs the role {allowed}; your token is {principal.role}",
                )
            args.append(principal)
        if route.body is not None:
            payload = await read_json(request, limit=JSON_LIMIT)
            args.append(_validate(route.body, payload))
        if route.query is not None:
            args.append(_validate(route.query, dict(request.query)))
        result = await route.handler(*args)
        if result is None:
            return web.Response(status=204)
        if isinstance(result, web.StreamResponse):
            return result
        assert isinstance(result, BaseModel)
        return web.json_response(
            text=result.model_dump_json(), status=route.status, content_type="application/json"
        )

    handle.__name__ = route.handler.__name__
    return handle


def _validate(model: type[BaseModel], payload: Any) -> BaseModel:
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid", "a JSON object is expected", None)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def path_id(request: web.Request, name: str = "id") -> int:
    """An integer id from the path, or a 404 (an id that is not a number names nothing)."""
    raw = request.match_info[name]
    # isdigit() alone accepts other scripts' digits and superscripts, which int() may refuse.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(404, "not_found", f"{name} {raw[:20]!r} does not exist", name)
    return int(raw)
