"""One error shape for every API failure: ``{"error": {"code", "message", "field"}}``.

Handlers raise ``ApiError``; the middleware turns it, aiohttp's own HTTP errors, malformed
bodies and anything unexpected into that shape. An unexpected exception is logged with its
type and traceback only (never request data) and answered with a 500 that says nothing more.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

log = logging.getLogger("warta.api")


class ApiError(Exception):
    """An answer the client can act on."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.field)


def error_response(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    body.update(extra)
    return web.json_response({"error": body}, status=status)


def not_found(what: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found", field)


def conflict(message: str, field: str | None = None) -> ApiError:
    return ApiError(409, "conflict", message, field)


def unprocessable(message: str, field: str | None) -> ApiError:
    return ApiError(422, "invalid", message, field)


def from_validation_error(exc: ValidationError) -> ApiError:
    """The first problem, with a dotted path to the field (``facts.link``, ``channels.1``).

    A check across fields (a model validator) has no location of its own; it names its field
    in the error's context (see ``gateway.api.models.invalid``).
    """
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    context = first.get("ctx") or {}
    if field is None and isinstance(context.get("field"), str):
        field = context["field"]
        return ApiError(422, "invalid", f"{field}: {context.get('reason', first['msg'])}", field)
    kind = first["type"]
    if kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        message = f"{field} is not a known field"
    else:
        message = f"{field}: {first['msg']}" if field else first["msg"]
    return ApiError(422, "invalid", message, field)


async def read_body(request: web.Request, *, limit: int, too_large: str) -> bytes:
    """The whole request body, or a 413 with ``too_large`` once it passes ``limit`` bytes.

    A single ``content.read(n)`` returns only what has arrived so far, so a body that comes in
    several pieces (chunked, or just larger than one network read) is read to its end here.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", too_large)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, *, limit: int) -> Any:
    """The request body as JSON, or an ApiError that says what is wrong with it."""
    raw = await read_body(
        request, limit=limit, too_large=f"request body is larger than {limit} bytes"
    )
    if not raw.strip():
        raise ApiError(400, "bad_json", "request body is empty; JSON expected")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "bad_json",
            f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})",
        ) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unknown_charset(request: web.Request) -> bool:
    charset = request.charset
    if not charset:
        return False
    try:
        codecs.lookup(charset)
    except LookupError:
        return True
    return False


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    json_errors = request.path.startswith("/api/")
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if not json_errors or exc.status < 400:
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except ValidationError as exc:
        return from_validation_error(exc).response()
    except Exception as exc:
        from gateway.db.errors import unavailable_reason

        if isinstance(exc, LookupError) and _unknown_charset(request):
            # aiohttp decodes a form or text body with the charset the client named.
            return error_response(
                415, "unsupported_charset", "the Content-Type names an unknown charset", "charset"
            )
        reason = unavailable_reason(exc)
        if reason is not None:
            log.warning("database unavailable: %s (%s)", type(exc).__name__, reason)
            return error_response(503, "unavailable", reason)
        log.exception("unexpected error on %s %s", request.method, request.rel_url.path)
        if json_errors:
            return error_response(500, "internal", "internal error; it has been logged")
        raise web.HTTPInternalServerError() from None
