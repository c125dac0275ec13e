"""Security headers on every response the gateway sends, whichever route made it.

Pages set their own Content-Security-Policy (``gateway.web.public``); everything else gets a
policy that allows nothing, since JSON, XML and audio are never rendered as documents. API
answers are never cached: they carry an agency's data.
"""

from __future__ import annotations

from aiohttp import web

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _ALWAYS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
