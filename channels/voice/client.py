"""Placing calls through the official Africa's Talking SDK (``africastalking`` 2.0.x).

The SDK's ``VoiceService`` has the same seams as its SMS service (see
``channels.africastalking.sdk``): ``_init_service`` hard-codes the host and ``_make_request``
calls ``requests.post`` and hides status codes. ``WartaVoiceService`` overrides exactly those
two, so the form (``username``, ``from``, ``to``), the ``apiKey`` header and the SDK's phone
check stay the SDK's, and ``VoiceClient`` runs it on a bounded thread pool.

``clientRequestId`` is not sent: the SDK's ``call()`` has no parameter for it, and it would tag
a whole request (up to ``batch_size`` numbers) while callbacks are matched per call by the
``sessionId`` the answer gives each number.

Errors raised here carry fixed words and status codes only: never numbers, keys or bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from africastalking.Voice import VoiceService

from channels.africastalking.sdk import SdkThreads, request_json
from channels.voice.config import VoiceConfig
from gateway.errors import ConnectionFailed, Rejected


class WartaVoiceService(VoiceService):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's voice service, pointed at ``base_url``, sending through ``session_for_thread``."""

    def __init__(self, config: VoiceConfig, session_for_thread: Any) -> None:
        # Both must exist before the SDK's __init__, which calls _init_service().
        self._warta_base_url = config.base_url.rstrip("/")
        self._session_for_thread = session_for_thread
        super().__init__(config.username, config.api_key)

    def __repr__(self) -> str:
        return f"<WartaVoiceService base_url={self._warta_base_url!r}>"

    def _init_service(self) -> None:
        self._baseUrl = self._warta_base_url

    def _make_request(
        self,
        url: str,
        method: str,
        headers: Mapping[str, str],
        data: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        callback: Any = None,
        timeout: float | tuple[float, float] = 10.0,
    ) -> Any:
        if callback is not None:
            raise RuntimeError("WartaVoiceService supports synchronous calls only")
        return request_json(self._session_for_thread(), method, url, headers, data, params, timeout)


class VoiceClient:
    """Async call requests for one account: a bounded thread pool and pooled sessions."""

    def __init__(self, config: VoiceConfig) -> None:
        self._config = config
        self._threads = SdkThreads(
            base_url=config.base_url, workers=config.executor_workers, thread_name="warta-voice"
        )
        self._voice = WartaVoiceService(config, self._threads.session)

    def __repr__(self) -> str:
        return f"<VoiceClient username={self._config.username!r}>"

    async def call(self, numbers: Sequence[str]) -> Mapping[str, Any]:
        """One call request to every number (E.164 with '+'); the decoded JSON answer.

        Raises:
            ConfigError: credentials refused (HTTP 401/403).
            Throttled: HTTP 429, with ``retry_after`` when the provider said.
            ConnectionFailed: network error, timeout, 5xx or an unreadable answer.
            Rejected: another 4xx, or a number the SDK refuses.
        """
        return await self._threads.run(self._call_sync, list(numbers))

    def _call_sync(self, numbers: list[str]) -> Mapping[str, Any]:
        try:
            answer = self._voice.call(
                self._config.caller_number,
                numbers,
                timeout=(self._config.request_timeout, self._config.request_timeout),
            )
        except ValueError:
            # The SDK's own phone check puts the number in its message: drop it.
            raise Rejected("InvalidPhoneNumber") from None
        if not isinstance(answer, Mapping):
            raise ConnectionFailed("unexpected response shape")
        return answer

    async def close(self) -> None:
        """Stop the worker threads and close every session's connections."""
        self._threads.close()
