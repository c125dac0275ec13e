"""Which channels this gateway runs, built from configuration. One line per channel."""

from __future__ import annotations

import logging

from channels.base import Channel
from gateway.config import WartaConfig

log = logging.getLogger("warta.channels")


def build_channels(config: WartaConfig) -> dict[str, Channel]:
    """Every channel whose credentials are configured; the others are simply not offered."""
    channels: dict[str, Channel] = {}
    at_key = config.secrets.africastalking_api_key
    if at_key is not None:
        from channels.africastalking.config import AfricasTalkingConfig
        from channels.sms.adapter import SmsChannel

        at = AfricasTalkingConfig.from_settings(config.africastalking, at_key.get_secret_value())
        channels["sms"] = SmsChannel(at)
    if not channels:
        log.warning("no channel is configured: deliveries will wait in the outbox")
    return channels


def channel_classes() -> dict[str, type[Channel]]:
    """Every channel class Warta ships, configured or not (for previews and conformance)."""
    from channels.sms.adapter import SmsChannel

    return {"sms": SmsChannel}
