"""Play a USSD session against a gateway as Africa's Talking would, over HTTP.

Africa's Talking POSTs a form (``sessionId``, ``serviceCode``, ``phoneNumber``, ``networkCode``,
``text``) to the USSD callback URL for every step of a session, with ``text`` holding every
input so far joined by ``*`` (empty on the first request), and shows the reply: ``CON …``
waits for the next input, ``END …`` closes the session.

- ``play(url, phone, inputs)``: a whole scripted session; returns every screen received.
- ``python -m channels.africastalking.ussd_sim URL --phone +62812…``: try the menu in a
  terminal (type an input per line; an empty line sends an empty input; Ctrl-D quits).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable, Sequence

import aiohttp

DEFAULT_SERVICE_CODE = "*384*123#"
DEFAULT_NETWORK = "51010"  # Telkomsel
MAX_STEPS = 100


class UssdSession:
    """One session: ``send(input)`` appends to the history and returns the gateway's screen."""

    def __init__(
        self,
        url: str,
        phone: str,
        *,
        http: aiohttp.ClientSession,
        service_code: str = DEFAULT_SERVICE_CODE,
        network_code: str = DEFAULT_NETWORK,
        session_id: str | None = None,
    ) -> None:
        self.url = url
        self._phone = phone
        self._http = http
        self.service_code = service_code
        self.network_code = network_code
        self.session_id = session_id or "ATUid_" + uuid.uuid4().hex
        self.inputs: list[str] = []
        self.ended = False

    def __repr__(self) -> str:
        return f"<UssdSession steps={len(self.inputs)} ended={self.ended}>"

    async def send(self, step: str | None = None) -> str:
        """``None`` opens the session; anything else is the next input. Returns the screen.

        Raises:
            RuntimeError: the session already ended, or the gateway did not answer 200.
        """
        if self.ended:
            raise RuntimeError("the USSD session has ended")
        if step is not None:
            self.inputs.append(step)
        form = {
            "sessionId": self.session_id,
            "serviceCode": self.service_code,
            "phoneNumber": self._phone,
            "networkCode": self.network_code,
            "text": "*".join(self.inputs),
        }
        async with self._http.post(self.url, data=form) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"the gateway answered HTTP {response.status}")
        self.ended = not body.startswith("CON ")
        return body


async def play(
    url: str,
    phone: str,
    inputs: Sequence[str],
    *,
    service_code: str = DEFAULT_SERVICE_CODE,
    http: aiohttp.ClientSession | None = None,
) -> list[str]:
    """Dial, then send each input; returns the screens, the opening one first.

    Stops early when the gateway ends the session, so the result may be shorter than
    ``len(inputs) + 1``.
    """
    own = http is None
    client = http or aiohttp.ClientSession()
    try:
        session = UssdSession(url, phone, http=client, service_code=service_code)
        screens = [await session.send()]
        for step in inputs[:MAX_STEPS]:
            if session.ended:
                break
            screens.append(await session.send(step))
        return screens
    finally:
        if own:
            await client.close()


async def interactive(
    url: str,
    phone: str,
    *,
    read: Callable[[], str] = input,
    write: Callable[[str], object] = print,
    service_code: str = DEFAULT_SERVICE_CODE,
) -> None:
    """A terminal session: shows each screen, reads the next input from ``read``."""
    async with aiohttp.ClientSession() as client:
        session = UssdSession(url, phone, http=client, service_code=service_code)
        write(await session.send())
        for _ in range(MAX_STEPS):
            if session.ended:
                return
            try:
                step = await asyncio.to_thread(read)
            except EOFError:
                return
            write(await session.send(step.strip()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Try a Warta USSD menu in the terminal.")
    parser.add_argument("url", help="the gateway's USSD callback URL (…/africastalking/TOKEN/ussd)")
    parser.add_argument("--phone", required=True, help="the caller's number, e.g. +6281234567890")
    parser.add_argument("--service-code", default=DEFAULT_SERVICE_CODE)
    args = parser.parse_args(argv)
    try:
        asyncio.run(interactive(args.url, args.phone, service_code=args.service_code))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:  # its message may repeat the URL and so the token
        print(f"error: cannot reach the gateway ({type(exc).__name__})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
