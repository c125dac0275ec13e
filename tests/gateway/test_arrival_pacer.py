"""The arrival pacer keeps a strict provider's rate however the network jitters or stalls.

A stand-in provider inside the test counts requests as they arrive with a strict token bucket
(rate R, burst R: Telegram's reading) and refuses any beyond it. Requests reach it after a
random delay and their answers come back after another, as on a real network; and for a while
the network stalls (a connection pool stuck behind a slow answer, a hiccup): what leaves in
that time arrives all at once when it clears.
"""

from __future__ import annotations

import asyncio
import random

from gateway.ratelimit import ArrivalPacer, TokenBucket

RATE = 100.0
REQUESTS = 300


STALL = (0.5, 2.0)  # seconds after the start: what leaves then arrives at the end of it


async def _broadcast(pace: object, *, jitter: float, seed: int, stall: bool = True) -> int:
    """Send REQUESTS one-unit requests concurrently; returns how many the provider refused."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    provider = TokenBucket(RATE, RATE, clock=loop.time)
    rng = random.Random(seed)
    delays = [(rng.uniform(0, jitter), rng.uniform(0, jitter)) for _ in range(REQUESTS)]
    refused = 0

    async def one(up: float, down: float) -> None:
        nonlocal refused
        if isinstance(pace, ArrivalPacer):
            await pace.acquire(1)
        else:
            assert isinstance(pace, TokenBucket)
            wait = pace.take(1)
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            left = loop.time() - start
            if stall and STALL[0] <= left < STALL[1]:
                up += STALL[1] - left
            await asyncio.sleep(up)
            if not provider.try_take():
                refused += 1
            await asyncio.sleep(down)
        finally:
            if isinstance(pace, ArrivalPacer):
                pace.release(1)

    await asyncio.gather(*(one(up, down) for up, down in delays))
    return refused


async def test_a_token_bucket_alone_lets_jitter_bunch_requests_into_refusals() -> None:
    # The control: a bucket reserving departures ahead is not enough (why the pacer exists).
    bucket = TokenBucket(RATE, RATE, clock=asyncio.get_running_loop().time)
    assert await _broadcast(bucket, jitter=0.01, seed=7) > 0


async def test_the_arrival_pacer_is_never_refused_whatever_the_jitter() -> None:
    for seed, jitter, stall in ((7, 0.01, True), (11, 0.3, True), (13, 0.05, False)):
        pacer = ArrivalPacer(RATE, RATE, clock=asyncio.get_running_loop().time)
        refused = await _broadcast(pacer, jitter=jitter, seed=seed, stall=stall)
        assert refused == 0, (seed, jitter, stall)


async def test_waiters_go_in_order_and_an_oversized_request_goes_alone() -> None:
    pacer = ArrivalPacer(100, 3)  # one in flight at once, a departure burst of 1
    order: list[str] = []

    async def take(name: str, n: int, hold: float) -> None:
        await pacer.acquire(n)
        order.append(name)
        await asyncio.sleep(hold)
        pacer.release(n)

    first = asyncio.create_task(take("a", 2, 0.05))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(take(name, n, 0.0)) for name, n in (("big", 5), ("c", 1))]
    await asyncio.gather(first, *rest)
    assert order == ["a", "big", "c"]
    assert (pacer.in_flight, pacer.depart_burst) == (2, 1)
    assert repr(pacer) == "<ArrivalPacer rate=100/s in_flight=2 depart_burst=1>"


def test_tokens_given_back_shorten_later_waits_and_never_pass_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, 2.0, clock=lambda: now[0])
    assert bucket.take(2) == 0.0
    assert bucket.take(3) == 3.0  # three seconds of debt for what waits
    bucket.give_back(3)  # it did not leave after all
    assert bucket.wait_time(1) == 1.0
    now[0] = 10.0
    bucket.give_back(5)
    assert bucket.wait_time(2) == 0.0 and bucket.wait_time(2.5) == 0.5  # still at most 2


async def test_departures_given_back_let_the_next_request_leave_sooner() -> None:
    now = [0.0]
    pacer = ArrivalPacer(1.0, 3.0, clock=lambda: now[0])
    await pacer.acquire(1)
    pacer.give_back(1)  # acquired, then nothing left after all
    pacer.release(1)
    assert pacer._bucket.wait_time(pacer.depart_burst) == 0.0
