"""Provider balances for the preview: what is left on each paying channel's account.

An agency that approves a broadcast costing more than its provider account holds would see
it stop part-way (the channel held until a top-up, ``gateway.outbox.dispatcher``). The
preview shows the balance beside the estimate so that is no surprise. A balance is asked of
the provider at most once per ``ttl_s`` per channel and process (previews are drawn on every
dashboard page load); a provider that does not answer within ``timeout_s`` leaves it unknown,
and the preview never fails for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from channels.base import Balance, Channel
from gateway.errors import ChannelError

log = logging.getLogger(__name__)


class Balances:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        ttl_s: float = 30.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channels = channels
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._known: dict[str, tuple[float, Balance | None]] = {}
        self._asking: dict[str, asyncio.Task[Balance | None]] = {}

    def account_of(self, channel_name: str) -> str:
        """The account ``channel_name`` pays from: channels naming the same one share a
        balance (``Channel.paying_account``); any other pays from its own."""
        channel = self._channels.get(channel_name)
        account = None if channel is None else channel.paying_account
        return account or f"channel:{channel_name}"

    async def of_account(self, account: str) -> tuple[str, Balance] | None:
        """The balance of ``account`` (``account_of``), asked of the first of its channels
        that can tell, with that channel's name; None when none can."""
        for name in self._channels:
            if self.account_of(name) == account:
                balance = await self.of(name)
                if balance is not None:
                    return name, balance
        return None

    async def of(self, channel_name: str) -> Balance | None:
        """The channel's provider balance, as recently as ``ttl_s``; None when unknown."""
        channel = self._channels.get(channel_name)
        if channel is None:
            return None
        known = self._known.get(channel_name)
        if known is not None and self._clock() - known[0] < self._ttl_s:
            return known[1]
        # Previews drawn together share one question to the provider.
        asking = self._asking.get(channel_name)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(channel_name, channel))
            self._asking[channel_name] = asking
        return await asyncio.shield(asking)

    async def _ask(self, channel_name: str, channel: Channel) -> Balance | None:
        balance: Balance | None = None
        try:
            balance = await asyncio.wait_for(channel.balance(), self._timeout_s)
        except (ChannelError, TimeoutError) as exc:
            log.warning("could not read the %s provider balance: %r", channel_name, exc)
        except Exception as exc:  # a preview never fails for a balance
            log.warning(
                "could not read the %s provider balance: %s", channel_name, type(exc).__name__
            )
        finally:
            self._asking.pop(channel_name, None)
        self._known[channel_name] = (self._clock(), balance)
        return balance
