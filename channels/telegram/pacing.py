"""Telegram's per-chat limit, enforced inside the adapter.

Telegram asks bots to send no more than about one message per second to a chat and 20 per
minute to a group or channel; bursts above that end in HTTP 429 (Bot FAQ, "My bot is hitting
limits"). The per-bot limit (about 30 messages per second) is the dispatcher's job: it reads
``rate_per_second`` from the adapter. The dispatcher knows nothing about chats, so the
per-chat limit lives here.

``ChatPacer`` serialises sends to one chat and spaces them: a message may leave only
``interval`` seconds after the previous message to the same chat was *answered*. Measuring
from the answer, not from when the previous request left, means the gap at Telegram's end is
at least ``interval`` whatever the network does to either request. Different chats never wait
for each other.

A message that would wait longer than ``max_wait`` is not queued at all: the caller gets the
estimated wait back and hands the message to the dispatcher as ``Throttled``, so a flood of
messages to one chat never holds a dispatcher worker for long.

State is per process. Several Warta processes sending to the same chat in the same second
could exceed the limit; in practice a citizen gets one message per announcement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

# Forgotten chats per call: keeps the map no bigger than the chats active in the last
# few intervals, with a bounded amount of work per message.
_PRUNE_PER_CALL = 32


@dataclass(slots=True)
class _ChatTurn:
    lock: asyncio.Lock
    free_at: float = 0.0  # loop time from which the next message may leave
    queued: int = 0  # holders and waiters of ``lock``


class ChatBusy(Exception):
    """The chat's turn is further away than ``max_wait``; ``wait`` estimates how far."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"chat busy for about {wait:.2f}s")
        self.wait = wait


class ChatPacer:
    """Per-chat spacing; see the module docstring.

    Args:
        interval: seconds between messages to a private chat.
        group_interval: seconds between messages to a group or channel (chat ids below zero
            and ``@username`` targets).
        max_wait: the longest a message may wait for its chat's turn.
        clock: monotonic seconds; the running loop's clock by default.
    """

    def __init__(
        self,
        *,
        interval: float,
        group_interval: float,
        max_wait: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.interval = interval
        self.group_interval = group_interval
        self.max_wait = max_wait
        self._clock = clock
        self._turns: OrderedDict[str, _ChatTurn] = OrderedDict()

    def __repr__(self) -> str:
        return f"<ChatPacer chats={len(self._turns)} interval={self.interval}>"

    def __len__(self) -> int:
        return len(self._turns)

    def interval_for(self, chat: str) -> float:
        return self.group_interval if chat.startswith(("-", "@")) else self.interval

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _prune(self, now: float) -> None:
        for _ in range(_PRUNE_PER_CALL):
            if not self._turns:
                return
            chat, turn = next(iter(self._turns.items()))
            if turn.queued or turn.free_at > now:
                return
            del self._turns[chat]

    @contextlib.asynccontextmanager
    async def turn(self, chat: str) -> AsyncIterator[None]:
        """Hold ``chat``'s turn for one send.

        Waits for earlier messages to the chat and for the interval after the last answer,
        then yields; the interval starts again when the block exits.

        Raises:
            ChatBusy: the turn is estimated to be more than ``max_wait`` away.
        """
        now = self._now()
        self._prune(now)
        interval = self.interval_for(chat)
        state = self._turns.get(chat)
        if state is None:
            state = self._turns[chat] = _ChatTurn(lock=asyncio.Lock())
        self._turns.move_to_end(chat)
        estimate = max(0.0, state.free_at - now) + state.queued * interval
        if estimate > self.max_wait:
            raise ChatBusy(estimate)
        state.queued += 1
        try:
            async with state.lock:
                wait = state.free_at - self._now()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    yield
                finally:
                    state.free_at = self._now() + interval
        finally:
            state.queued -= 1
