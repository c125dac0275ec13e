"""The draws every provider simulator makes: delays from configured ranges, outcomes by
configured shares, on the simulator's own seeded random generator.

Free of aiohttp, like the simulators' configurations that use ``Seconds``: the CLI, the demo
and the benchmarks build those without importing a server.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TypeVar

OutcomeT = TypeVar("OutcomeT", bound=str)

# A delay in a simulator's configuration: fixed, or drawn uniformly from a (low, high) range.
Seconds = float | tuple[float, float]


def seconds(value: Seconds, rng: random.Random) -> float:
    """A fixed delay, or a uniform draw from a (low, high) range."""
    if isinstance(value, tuple):
        return rng.uniform(*value)
    return value


def draw(shares: Mapping[OutcomeT, float], rng: random.Random) -> OutcomeT | None:
    """One outcome drawn by its share, or None for the remainder. Without shares nothing is
    drawn, so a seeded run's later draws stay the same."""
    point = rng.random() if shares else 1.0
    for outcome, share in shares.items():
        point -= share
        if point < 0:
            return outcome
    return None
