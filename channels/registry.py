"""Which channels this gateway runs, built from configuration.

A channel runs when its credentials are configured (``WARTA_SECRETS__…``); the others are
simply not offered. ``channel_classes`` lists every channel Warta ships, configured or not, for
previews and the conformance test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re

from pydantic import SecretStr

from channels.base import Channel
from gateway.config import ConfigProblem, WartaConfig

log = logging.getLogger("warta.channels")

_E164 = re.compile(r"\+[1-9]\d{6,14}")
# Languages calls are made in: Africa's Talking's <Say> speaks English; the rest is espeak-ng.
VOICE_LANGUAGES = ("id", "en")


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
            config.africastalking,
            secrets.africastalking_api_key.get_secret_value(),
            cost_currency=config.pricing.currency,
        )
        channels["sms"] = SmsChannel(at)
    voice = _voice(config)
    if voice is not None:
        channels["voice"] = voice
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


def _voice(config: WartaConfig) -> Channel | None:
    """The voice channel when ``[voice] enabled``, on the same Africa's Talking account as SMS.

    Raises:
        ConfigProblem: voice is enabled without a usable ``caller_number``, or with languages
            that need espeak-ng and no espeak-ng installed.
    """
    section = config.voice
    if not section.enabled:
        return None
    # The number is ours, not a citizen's, but it stays out of the message all the same.
    if not section.caller_number:
        raise ConfigProblem(
            "voice.caller_number: required when voice.enabled is true (your Africa's Talking "
            "voice number, E.164 with '+', e.g. +6221…; set WARTA_VOICE__CALLER_NUMBER)"
        )
    if not _E164.fullmatch(section.caller_number):
        raise ConfigProblem("voice.caller_number: must be E.164 with '+' (e.g. +62215550100)")
    key = config.secrets.africastalking_api_key
    if key is None or not config.africastalking.username:
        log.warning(
            "voice.enabled is true but the Africa's Talking account is not configured "
            "(africastalking.username, WARTA_SECRETS__AFRICASTALKING_API_KEY): voice is off"
        )
        return None
    from channels.voice import VoiceChannel, VoiceConfig
    from channels.voice.speech import SAY_LANGUAGES
    from gateway.errors import ConfigError

    voice_config = VoiceConfig.from_settings(
        section,
        username=config.africastalking.username,
        api_key=key.get_secret_value(),
        public_url=config.http.public_url,
    )
    if not voice_config.audio_dir.is_absolute():
        voice_config = dataclasses.replace(
            voice_config, audio_dir=config.data_dir / voice_config.audio_dir
        )
    channel = VoiceChannel(voice_config, languages=VOICE_LANGUAGES)
    if any(language not in SAY_LANGUAGES for language in VOICE_LANGUAGES):
        try:
            channel.renderer.executable()
        except ConfigError as exc:
            raise ConfigProblem(f"voice.espeak_program: {exc.reason}") from None
    return channel


def _plain(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value()


def channel_classes() -> dict[str, type[Channel]]:
    """Every channel class Warta ships, configured or not (for previews and conformance)."""
    from channels.facebook import FacebookChannel
    from channels.mastodon import MastodonChannel
    from channels.sms.adapter import SmsChannel
    from channels.telegram import TelegramChannel, TelegramChannelPost
    from channels.voice import VoiceChannel
    from channels.whatsapp import WhatsAppChannel
    from channels.x import XChannel

    return {
        "sms": SmsChannel,
        "voice": VoiceChannel,
        "telegram": TelegramChannel,
        "telegram_channel": TelegramChannelPost,
        "whatsapp": WhatsAppChannel,
        "facebook": FacebookChannel,
        "x": XChannel,
        "mastodon": MastodonChannel,
    }
