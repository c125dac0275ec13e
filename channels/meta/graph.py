"""A small async Graph API client (aiohttp), shared by the WhatsApp and Facebook channels.

The base URL and API version come from configuration, so a simulator can stand in. The access
token travels only in the ``Authorization: Bearer`` header, never in a URL, so it cannot leak
through a logged or raised URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from channels.meta.errors import GraphError, GraphFailure, parse_graph_error
from gateway.errors import ConnectionFailed

log = logging.getLogger(__name__)

PRODUCTION_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
_MAX_BODY = 1024 * 1024


class GraphClient:
    """POSTs to ``{base_url}/{api_version}/{path}`` and returns the decoded JSON answer.

    Args:
        base_url: scheme and host, e.g. ``https://graph.facebook.com`` or a simulator's URL.
        api_version: e.g. ``v23.0``.
        request_timeout: seconds for the whole request.
        max_connections: most connections open at once.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        request_timeout: float,
        max_connections: int,
    ) -> None:
        self._prefix = f"{base_url.rstrip('/')}/{api_version.strip('/')}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<GraphClient {self._prefix!r}>"

    async def _ensure_session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                connector = aiohttp.TCPConnector(limit=self._max_connections)
                self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
            return self._session

    async def start(self) -> None:
        await self._ensure_session()

    async def close(self) -> None:
        async with self._lock:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def post(
        self,
        path: str,
        token: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST ``json_body`` (as JSON) or ``form`` (form-encoded) to ``path``.

        Returns:
            The decoded JSON object of a 2xx answer.

        Raises:
            GraphFailure: the Graph API answered with an error (any non-2xx status).
            ConnectionFailed: timeout, network error, or a 2xx answer that is not a JSON object.
        """
        session = await self._ensure_session()
        url = f"{self._prefix}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with session.post(url, json=json_body, data=form, headers=headers) as response:
                status = response.status
                too_big = (response.content_length or 0) > _MAX_BODY
                raw = b"" if too_big else await response.read()
                answer_headers = {key: value for key, value in response.headers.items()}
        except TimeoutError:
            raise ConnectionFailed("timeout") from None
        except aiohttp.ClientConnectionError:
            raise ConnectionFailed("connection error") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"request error ({type(exc).__name__})") from None
        body = _decode(raw)
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise ConnectionFailed("unreadable response")
            return body
        error: GraphError = parse_graph_error(status, body, answer_headers)
        log.debug(
            "Graph answered HTTP %d code=%s subcode=%s trace=%s",
            status,
            error.code,
            error.subcode,
            error.fbtrace_id,
        )
        raise GraphFailure(error)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
