"""The seam between Warta and the official Africa's Talking SDK (``africastalking`` 2.0.x).

The SDK is synchronous, hard-codes its host in each service's ``_init_service()``, calls
``requests.post`` directly (a new connection per call, no pool) and turns every non-2xx
answer into ``AfricasTalkingException(body)``, hiding the status code and headers. So:

- ``WartaSMSService`` (and ``WartaApplicationService``, for the account's balance) subclasses
  the SDK's ``SMSService`` (``ApplicationService``) and overrides exactly two hooks:
  ``_init_service`` takes the base URL from our config, and ``_make_request`` sends through a
  pooled ``requests.Session`` and raises our error kinds with the status code and
  ``Retry-After`` it can see. Everything else (form fields, phone checks) stays the SDK's.
- ``AfricasTalkingClient`` runs the SDK in a bounded ``ThreadPoolExecutor`` (one session per
  worker thread, since ``requests.Session`` is not documented as thread-safe) and exposes an
  ``async`` method.

Errors raised here never carry phone numbers, the API key or response bodies: only fixed words
and status codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from africastalking.Application import ApplicationService
from africastalking.SMS import SMSService

from channels.africastalking.config import AfricasTalkingConfig
from gateway.errors import (
    AccountRefused,
    ChannelError,
    ConnectionFailed,
    Rejected,
    Throttled,
)
from gateway.ratelimit import SEND_BY, leave_by_deadline

T = TypeVar("T")

log = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; None when absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def error_for_status(status: int, retry_after: str | None = None) -> ChannelError:
    """Map a non-2xx HTTP status of a whole request to our error kind."""
    if status == 429:
        return Throttled("HTTP 429", retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        # Africa's Talking answers 401 for a wrong username or API key; 403 for an address
        # outside the account's allow-list. Nothing will succeed until an operator acts.
        return AccountRefused(f"authentication refused (HTTP {status})")
    if status == 408 or status >= 500:
        return ConnectionFailed(f"HTTP {status}")
    # Any other 4xx means the provider refused this request as written: retrying the same
    # request cannot help.
    return Rejected(f"HTTP {status}")


class _WartaSeam:
    """What Warta changes in an SDK service: the base URL from our config (``_init_service``)
    and requests through a pooled session with our error kinds (``_make_request``).

    Only synchronous calls are supported (the SDK's ``callback=`` mode starts bare threads,
    which we never want).
    """

    def __init__(self, config: AfricasTalkingConfig, session_for_thread: Any) -> None:
        # Both must exist before the SDK's __init__, which calls _init_service().
        self._warta_base_url = config.base_url.rstrip("/")
        self._session_for_thread = session_for_thread
        super().__init__(config.username, config.api_key)  # type: ignore[call-arg]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} base_url={self._warta_base_url!r}>"

    def _init_service(self) -> None:
        self._baseUrl = self._warta_base_url + "/version1"
        # Premium SMS goes to a "content" host in production; a configured base URL (sandbox,
        # simulator) serves both.
        self._contentUrl = self._baseUrl

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
            raise RuntimeError(f"{type(self).__name__} supports synchronous calls only")
        session: requests.Session = self._session_for_thread()
        body: bytes | None = None
        if data is not None:
            # Encoded here as requests would (None values left out): requests' own form
            # encoding costs more than the rest of the request on a 100-recipient send.
            body = urlencode([(k, v) for k, v in data.items() if v is not None]).encode()
            headers = {**headers, "Content-Type": FORM_MEDIA_TYPE}
        return request_json(session, method, url, headers, body, params, timeout)


class WartaSMSService(_WartaSeam, SMSService):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's SMS service, pointed at ``base_url`` and sending through
    ``session_for_thread``."""


class WartaApplicationService(_WartaSeam, ApplicationService):  # type: ignore[misc]
    """The SDK's application service (the account's balance), on the same seam."""


def request_json(
    session: requests.Session,
    method: str,
    url: str,
    headers: Mapping[str, str],
    data: bytes | Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
    timeout: float | tuple[float, float],
) -> Any:
    """One Africa's Talking request (any service): its JSON answer, or our error kind.

    Replaces the SDK's own ``requests`` call so that connection errors and HTTP statuses
    become ``ConnectionFailed``/``Throttled``/``Rejected`` without the key in any message.
    """
    try:
        # Prepared here and handed to the session's send: Session.request merges each setting
        # (headers, params, auth) through requests' runtime-checked protocols, ~0.1 ms a
        # request on Python 3.11, more than a third of preparing it. The session's headers,
        # proxies and CA bundle apply as they would there; a cookie a provider sets is not sent
        # back (Africa's Talking authenticates each request by its API key).
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method.upper(),
            url=url,
            headers={**session.headers, **headers},
            data=data,
            params=params or None,
        )
        response = session.send(
            prepared,
            timeout=timeout,
            proxies=session.proxies,
            verify=session.verify,
            cert=session.cert,
            stream=False,
        )
    except requests.Timeout:
        raise ConnectionFailed("timeout") from None
    except requests.ConnectionError:
        raise ConnectionFailed("connection error") from None
    except requests.RequestException as exc:
        raise ConnectionFailed(f"request error ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise error_for_status(response.status_code, response.headers.get("Retry-After"))
    # The SDK only parses JSON when Content-Type is exactly application/json; accept a
    # charset parameter too, so a harmless header change does not turn into a failure.
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        raise ConnectionFailed(f"unexpected response type ({media_type or 'none'})")
    try:
        return response.json()
    except ValueError:
        raise ConnectionFailed("unreadable response") from None


class SdkThreads:
    """The SDK's blocking calls off the event loop: a bounded pool of worker threads, each
    with a ``requests`` session of its own (one connection: all a thread can use at a time),
    closed together. Shared by the SMS and voice clients."""

    def __init__(self, *, base_url: str, workers: int, thread_name: str) -> None:
        self._base_url = base_url
        self._workers = workers
        self._thread_name = thread_name
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def session(self) -> requests.Session:
        """This worker thread's session."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Proxy and CA settings come from the environment once, here: with trust_env, requests
            # reads the whole environment (and ~/.netrc) again on every request.
            session.trust_env = False
            session.proxies.update(requests.utils.get_environ_proxies(self._base_url))
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                session.verify = bundle
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    @property
    def open_sessions(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on a worker thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix=self._thread_name
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def close(self) -> None:
        """Stop the worker threads and close every session's connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


class AfricasTalkingClient:
    """Async access to the SDK for one account: a bounded thread pool and pooled sessions."""

    def __init__(self, config: AfricasTalkingConfig) -> None:
        self._config = config
        self._threads = SdkThreads(
            base_url=config.base_url, workers=config.executor_workers, thread_name="warta-at"
        )
        self._sms = WartaSMSService(config, self._threads.session)
        self._application = WartaApplicationService(config, self._threads.session)

    def __repr__(self) -> str:
        return f"<AfricasTalkingClient username={self._config.username!r}>"

    async def send_sms(self, message: str, recipients: Sequence[str]) -> Mapping[str, Any]:
        """One bulk request: ``message`` to every number in ``recipients`` (E.164 with '+').

        Returns the decoded JSON answer (``{"SMSMessageData": {...}}``).

        Raises:
            ConfigError: credentials refused (HTTP 401/403).
            Throttled: HTTP 429, with ``retry_after`` when the provider said.
            ConnectionFailed: network error, timeout, 5xx or an unreadable answer.
            Rejected: another 4xx, or a number the SDK refuses to send.
            HandedBack: nothing sent, as the request was still waiting for a worker thread
                when its ``SEND_BY`` deadline passed.
        """
        return await self._threads.run(self._send_sync, message, list(recipients), SEND_BY.get())

    def _send_sync(
        self, message: str, recipients: list[str], send_by: float | None = None
    ) -> Mapping[str, Any]:
        leave_by_deadline(send_by)
        try:
            answer = self._sms.send(
                message,
                recipients,
                sender_id=self._config.sender_id,
                enqueue=self._config.enqueue,
                timeout=self._config.request_timeout,
            )
        except ValueError:
            # The SDK's own phone check puts the number in its message: drop it.
            raise Rejected("InvalidPhoneNumber") from None
        if not isinstance(answer, Mapping):
            raise ConnectionFailed("unexpected response shape")
        return answer

    async def balance(self) -> str | None:
        """The account's balance as Africa's Talking states it (``"KES 1785.5000"``), or None
        when its answer names none.

        Raises:
            ConfigError: credentials refused (HTTP 401/403).
            ConnectionFailed: network error, timeout, 5xx or an unreadable answer.
        """
        return await self._threads.run(self._balance_sync)

    def _balance_sync(self) -> str | None:
        answer = self._application.fetch_application_data(timeout=self._config.request_timeout)
        data = answer.get("UserData") if isinstance(answer, Mapping) else None
        if not isinstance(data, Mapping):
            raise ConnectionFailed("unexpected response shape")
        balance = data.get("balance")
        return balance if isinstance(balance, str) else None

    async def close(self) -> None:
        """Stop the worker threads and close every session's connections."""
        self._threads.close()
