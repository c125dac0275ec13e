"""Which channels this gateway runs, built from configuration.

A channel runs when its credentials are configured (``WARTA_SECRETS__…``); the others are
simply not offered. ``channel_classes`` lists every channel Warta ships, configured or not, for
previews and the conformance test.
"""

from __future__ import annotations

import json
import logging

from pydantic import SecretStr

from channels.base import Channel
from gateway.config import ConfigProblem, WartaConfig

log = logging.getLogger("warta.channels")


def _accounts(secret: SecretStr, name: str) -> dict[str, str]:
    """A JSON object of account -> token from a secret, checked without echoing it."""
    try:
        value = json.loads(secret.get_secret_value())
    except ValueError:
        raise ConfigProblem(f"secrets.{name}: must be a JSON object of account -> token") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigProblem(f"secrets.{name}: must be a JSON object of account -> token")
    return value


def build_channels(config: WartaConfig) -> dict[str, Channel]:
    secrets = config.secrets
    channels: dict[str, Channel] = {}
    if secrets.africastalking_api_key is not None:
        from channels.africastalking.config import AfricasTalkingConfig
        from channels.sms.adapter import SmsChannel

        at = AfricasTalkingConfig.from_settings(
            config.africastalking, secrets.africastalking_api_key.get_secret_value()
        )
        channels["sms"] = SmsChannel(at)
    if secrets.telegram_bot_token is not None:
        from channels.telegram import TelegramChannel, TelegramChannelPost, TelegramConfig

        tg = TelegramConfig.from_settings(
            config.telegram,
            secrets.telegram_bot_token.get_secret_value(),
            None
            if secrets.telegram_webhook_secret is None
            else _plain(secrets.telegram_webhook_secret),
        )
        channels["telegram"] = TelegramChannel(tg)
        if config.telegram.channels:
            channels["telegram_channel"] = TelegramChannelPost(tg)
            channels["telegram_channel"].accounts = tuple(config.telegram.channels)
    wa = config.whatsapp
    if secrets.whatsapp_access_token is not None and wa.phone_number_id is not None:
        from channels.whatsapp import WhatsAppChannel, WhatsAppConfig

        channels["whatsapp"] = WhatsAppChannel(
            WhatsAppConfig(
                phone_number_id=wa.phone_number_id,
                access_token=secrets.whatsapp_access_token.get_secret_value(),
                app_secret=_plain(secrets.meta_app_secret),
                verify_token=_plain(secrets.meta_verify_token),
                template_name=wa.template_name,
                template_languages=wa.template_languages,
                base_url=wa.base_url,
                api_version=wa.api_version,
                rate_per_second=wa.rate_per_second,
            )
        )
    if secrets.facebook_page_tokens is not None:
        from channels.facebook import FacebookChannel, FacebookConfig

        pages = _accounts(secrets.facebook_page_tokens, "facebook_page_tokens")
        fb = config.facebook
        channels["facebook"] = FacebookChannel(
            FacebookConfig(
                page_tokens=pages,
                base_url=fb.base_url,
                api_version=fb.api_version,
                public_base_url=fb.public_base_url,
            )
        )
        channels["facebook"].accounts = tuple(pages)
    if secrets.x_tokens is not None:
        from channels.x import XChannel, XConfig

        users = _accounts(secrets.x_tokens, "x_tokens")
        channels["x"] = XChannel(
            XConfig(
                accounts=users, base_url=config.x.base_url, public_base_url=config.x.public_base_url
            )
        )
        channels["x"].accounts = tuple(users)
    if secrets.mastodon_tokens is not None:
        from channels.mastodon import MastodonChannel, MastodonConfig

        names = _accounts(secrets.mastodon_tokens, "mastodon_tokens")
        md = config.mastodon
        channels["mastodon"] = MastodonChannel(
            MastodonConfig(
                base_url=md.base_url,
                accounts=names,
                visibility=md.visibility,  # type: ignore[arg-type]
                max_characters=md.max_characters,
                discover_limits=md.discover_limits,
            )
        )
        channels["mastodon"].accounts = tuple(names)
    if not channels:
        log.warning("no channel is configured: deliveries will wait in the outbox")
    return channels


def _plain(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value()


def channel_classes() -> dict[str, type[Channel]]:
    """Every channel class Warta ships, configured or not (for previews and conformance)."""
    from channels.facebook import FacebookChannel
    from channels.mastodon import MastodonChannel
    from channels.sms.adapter import SmsChannel
    from channels.telegram import TelegramChannel, TelegramChannelPost
    from channels.whatsapp import WhatsAppChannel
    from channels.x import XChannel

    return {
        "sms": SmsChannel,
        "telegram": TelegramChannel,
        "telegram_channel": TelegramChannelPost,
        "whatsapp": WhatsAppChannel,
        "facebook": FacebookChannel,
        "x": XChannel,
        "mastodon": MastodonChannel,
    }
