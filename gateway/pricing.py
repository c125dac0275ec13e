"""What one SMS segment costs, by country and, where the contract says so, by network; and
what a minute of a voice call costs, by country.

The same tariff prices the preview (in Python, per group of recipients) and each delivery at
fan-out (as a SQL CASE over the subscriber's country and network), so the estimate before
approval and the deliveries' own estimates agree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from gateway.config import PricingConfig

log = logging.getLogger(__name__)


def cost_in(
    amount: Decimal | None, stated: str | None, kept: str | None, *, source: str
) -> Decimal | None:
    """``amount`` as a provider reported it, unless it is stated in another currency than the
    one costs are kept in (``[pricing] currency``): then None, so the delivery keeps its
    estimate rather than add, say, KES to an IDR total. No currency on either side: as is.
    """
    if amount is None or stated is None or kept is None or stated.upper() == kept.upper():
        return amount
    _warn_currency(source, stated.upper(), kept.upper())
    return None


@lru_cache(maxsize=32)
def _warn_currency(source: str, stated: str, kept: str) -> None:
    # Once per provider, pair and process: every answer of the account says the same.
    log.warning(
        "%s reports costs in %s but costs are kept in %s ([pricing] currency): actual costs "
        "of these messages are not recorded",
        source,
        stated,
        kept,
    )


@dataclass(frozen=True, slots=True)
class Tariff:
    currency: str
    default: Decimal
    per_region: Mapping[str, Decimal] = field(default_factory=dict)
    per_network: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, pricing: PricingConfig) -> Tariff:
        return cls(
            currency=pricing.currency,
            default=pricing.default_per_segment,
            per_region=pricing.per_region,
            per_network=pricing.per_network,
        )

    @classmethod
    def for_calls(cls, pricing: PricingConfig) -> Tariff:
        """The price of one minute of a voice call, by region and network."""
        return cls(
            currency=pricing.currency,
            default=pricing.voice_default_per_minute,
            per_region=pricing.voice_per_region,
            per_network=pricing.voice_per_network,
        )

    def price(self, country: str | None, network: str | None) -> Decimal:
        """Price of one unit (an SMS segment, a minute of a call) to a number of ``country``
        on ``network``."""
        by_network = self.per_network.get(country or "", {})
        if network and network in by_network:
            return by_network[network]
        return self.per_region.get(country or "", self.default)

    def sql_price(self, country: Any, network: Any) -> Any:
        """The same rule as a SQL expression over the subscriber's columns."""
        whens: list[tuple[Any, Any]] = [
            (sa.and_(country == region, network == name), sa.literal(price))
            for region, networks in self.per_network.items()
            for name, price in networks.items()
        ]
        whens += [
            (country == region, sa.literal(price)) for region, price in self.per_region.items()
        ]
        if not whens:
            return sa.literal(self.default)
        return sa.case(*whens, else_=sa.literal(self.default))


def billed_minutes(seconds: float, billing_s: int) -> Decimal:
    """The minutes a call of ``seconds`` is billed for when the provider bills every started
    ``billing_s`` seconds in full (60: whole minutes; 1: by the second)."""
    steps = max(1, math.ceil(seconds / billing_s))
    return (Decimal(steps * billing_s) / 60).quantize(Decimal("0.0001"), rounding=ROUND_CEILING)
