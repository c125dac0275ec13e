"""Health, readiness, the OpenAPI document and code verification."""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from gateway.api import models
from gateway.api.announcements import public_url
from gateway.api.errors import ApiError
from gateway.api.routing import ApiRoutes
from gateway.appkeys import CLOCK, ENGINE
from gateway.attempts import AttemptLimit
from gateway.codes import normalise_code
from gateway.db.engine import reading
from gateway.store.announcements import find_by_code

routes = ApiRoutes()
# Against enumeration: 887 million codes at 1 per second per address is a lifetime. Counted in
# the database, so the limit holds across every process behind the load balancer.
VERIFY_LIMITER = web.AppKey("verify_limiter", AttemptLimit)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def verify_code(request: web.Request, raw: str) -> models.VerifyOut:
    """Shared by the API and the public /verify page."""
    limiter = request.app[VERIFY_LIMITER]
    allowed = await limiter.allow(
        request.app[ENGINE], client_address(request), now=request.app[CLOCK].now()
    )
    if not allowed:
        raise ApiError(429, "rate_limited", "too many checks from this address; wait a minute")
    code = normalise_code(raw)
    if code is None:
        return models.VerifyOut(
            code=raw[:12],
            genuine=False,
            message="This is not a Warta verification code (6 letters and digits).",
        )
    async with reading(request.app[ENGINE]) as conn:
        row = await find_by_code(conn, code)
    if row is None or row["status"] in ("draft", "pending_approval"):
        return models.VerifyOut(
            code=code,
            genuine=False,
            message="No announcement has this code: the message did not come from this gateway.",
        )
    return models.VerifyOut(
        code=code,
        genuine=True,
        message=f"Genuine: issued by {row.agency_name}.",
        agency=row.agency_name,
        title=row["title"],
        issued_at=row["approved_at"] or row["created_at"],
        public_url=public_url(request, code),
    )


@routes.get(
    "/verify/{code}",
    summary="Is this verification code genuine, and who issued it?",
    roles=None,
    response=models.VerifyOut,
    tags=("public",),
)
async def verify(request: web.Request) -> models.VerifyOut:
    return await verify_code(request, request.match_info["code"])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with reading(request.app[ENGINE]) as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; the reason is the class only
        return web.json_response(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status=503
        )
    return web.json_response({"status": "ok"})
