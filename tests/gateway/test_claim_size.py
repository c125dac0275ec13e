"""A worker never claims more than its channel can send within half the lease, so a slow
channel's tail is not reclaimed and sent twice while it waits for its turn."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config import DispatchConfig
from gateway.outbox.dispatcher import Dispatcher


def _size(rate: float, *, workers: int = 4, batch: int = 500, lease: float = 60.0) -> int:
    holder: Any = SimpleNamespace(
        config=SimpleNamespace(
            dispatch=DispatchConfig(
                workers_per_channel=workers, claim_batch=batch, lease_seconds=lease
            )
        )
    )
    return Dispatcher.claim_size(holder, SimpleNamespace(rate_per_second=rate))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "workers", "expected"),
    [
        (200.0, 4, 500),  # Africa's Talking SMS: the configured batch fits easily
        (30.0, 4, 225),  # Telegram: 4 x 225 at 30/s = 30 s, half the 60 s lease
        (30.0, 8, 112),
        (5.0, 4, 37),  # voice calls
        (0.01, 4, 1),  # never zero
    ],
)
def test_claims_fit_in_half_the_lease(rate: float, workers: int, expected: int) -> None:
    size = _size(rate, workers=workers)

    assert size == expected
    if expected > 1:
        assert size * workers / rate <= 60.0 / 2
