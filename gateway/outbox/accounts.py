"""Which social accounts post an agency's announcements.

A Facebook Page, an X or Mastodon account, a Telegram channel speaks for one agency. Where
several agencies share a gateway, one agency's announcement must never appear on another's
Page: its second person approved it for its own accounts only. ``[social] account_agencies``
names each account's agency by slug::

    [social.account_agencies.facebook]
    "104857600000001" = "bpbd-dki"

An account it does not name posts for the agency its channel's own setting names (``[telegram]
agency`` for Telegram channels, the agency whose citizens the bot serves), else for the first
agency (the lowest id), as the citizen side's numbers do. With one agency, every account is
its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from channels.base import Channel
from gateway.config import WartaConfig
from gateway.db.schema import agencies

log = logging.getLogger(__name__)


def _owner_defaults(config: WartaConfig) -> dict[str, str | None]:
    """Channel -> the agency (slug) its accounts not named in ``[social]`` post for; None:
    the first agency."""
    return {"telegram_channel": config.telegram.agency}


def accounts_for(
    channels: Mapping[str, Channel],
    config: WartaConfig,
    *,
    agency: str,
    first_agency: str,
) -> dict[str, list[str]]:
    """Social channel -> the accounts that post for ``agency`` (slug), for every channel that
    has accounts (an empty list: none of them is this agency's)."""
    named = config.social.account_agencies
    defaults = _owner_defaults(config)
    out: dict[str, list[str]] = {}
    for name, channel in channels.items():
        if not channel.accounts:
            continue
        owners = named.get(name, {})
        default = defaults.get(name) or first_agency
        out[name] = [a for a in channel.accounts if owners.get(a, default) == agency]
    return out


async def agency_accounts(
    conn: AsyncConnection,
    channels: Mapping[str, Channel],
    config: WartaConfig,
    agency_id: int,
) -> dict[str, list[str]]:
    """``accounts_for`` the agency with ``agency_id``, its slug and the first agency's read in
    one statement (agencies are few)."""
    rows = await conn.execute(sa.select(agencies.c.id, agencies.c.slug))
    slugs: dict[int, str] = {row.id: row.slug for row in rows}
    named = {slug for owners in config.social.account_agencies.values() for slug in owners.values()}
    unknown = named - set(slugs.values())
    if unknown:
        _warn_unknown(tuple(sorted(unknown)))
    return accounts_for(channels, config, agency=slugs[agency_id], first_agency=slugs[min(slugs)])


@lru_cache(maxsize=8)
def _warn_unknown(slugs: tuple[str, ...]) -> None:
    # Once per process and set of names: every start of an announcement would say the same.
    log.warning(
        "[social] account_agencies names no such agency (%s): its accounts post for nobody",
        ", ".join(slugs),
    )
