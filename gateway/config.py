"""Configuration: a TOML file plus ``WARTA_*`` environment variables, validated at start.

Any setting ``[section] key`` can be given as ``WARTA_SECTION__KEY`` (double underscore between
section and key; top-level keys as ``WARTA_KEY``). Secrets are accepted only from the
environment, either directly (``WARTA_SECRETS__PHONE_KEYS``) or from a file named by
``WARTA_SECRETS__PHONE_KEYS_FILE``; a secret in the TOML file is refused, so config files can be
committed and shared without leaking anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gateway.domain import SOCIAL_CHANNELS

if TYPE_CHECKING:
    from gateway.outbox.quiet import QuietHours

ENV_PREFIX = "WARTA_"


class ConfigProblem(Exception):
    """The configuration is invalid; the message names the bad key (never a secret's value)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///warta.db"
    pool_size: int = Field(default=10, ge=1, le=200)
    busy_timeout_ms: int = Field(default=30_000, ge=0)
    echo: bool = False

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The URL may hold the database password; a repr ends up in logs and tracebacks.
        for name, value in super().__repr_args__():
            yield name, hide_password(value) if name == "url" else value


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable database url>"


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class PhoneConfig(_Section):
    default_region: str = "ID"

    @field_validator("default_region")
    @classmethod
    def _region_is_known(cls, value: str) -> str:
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}")
        return value.upper()


class AfricasTalkingSection(_Section):
    username: str = "sandbox"
    base_url: str = "https://api.africastalking.com"
    sender_id: str | None = None
    batch_size: int = Field(default=100, ge=1, le=10_000)
    rate_per_second: float = Field(default=200.0, gt=0)
    executor_workers: int = Field(default=8, ge=1, le=256)
    request_timeout_s: float = Field(default=10.0, gt=0)
    # Source networks allowed to call our Africa's Talking callbacks; empty allows any (the
    # secret path token still applies).
    callback_allowlist: list[str] = Field(default_factory=list)


class WhatsAppSection(_Section):
    phone_number_id: str | None = None
    # The agency (slug) whose citizens write to this number; unset: the first agency.
    agency: str | None = None
    template_name: str = "warta_announcement"
    template_languages: dict[str, str] = Field(default_factory=lambda: {"id": "id", "en": "en"})
    base_url: str = "https://graph.facebook.com"
    api_version: str = "v23.0"
    rate_per_second: float = Field(default=80.0, gt=0)


class GraphSection(_Section):
    """Facebook Page posting (Graph API)."""

    base_url: str = "https://graph.facebook.com"
    api_version: str = "v23.0"
    public_base_url: str = "https://www.facebook.com"


class TelegramSection(_Section):
    base_url: str = "https://api.telegram.org"
    bot_username: str | None = None
    # The agency (slug) whose citizens the bot serves; unset: the first agency.
    agency: str | None = None
    # The agency channels one announcement is posted to ("@name" or "-100…" ids).
    channels: list[str] = Field(default_factory=list)
    request_timeout_s: float = Field(default=10.0, gt=0)
    connection_pool_size: int = Field(default=64, ge=1)
    rate_per_second: float = Field(default=30.0, gt=0)
    per_chat_interval_s: float = Field(default=1.0, ge=0)
    group_interval_s: float = Field(default=3.0, ge=0)
    max_chat_wait_s: float = Field(default=2.0, ge=0)
    # Register the webhook at start; off for polling deployments without a public URL.
    register_webhook: bool = True
    # How citizens' messages arrive: "webhook" (Telegram POSTs them; needs a public URL) or
    # "polling" (the dispatching process long-polls getUpdates; run exactly one such process).
    updates: Literal["webhook", "polling"] = "webhook"
    poll_timeout_s: int = Field(default=25, ge=1, le=50)


class XSection(_Section):
    base_url: str = "https://api.x.com"
    public_base_url: str = "https://x.com"


class MastodonSection(_Section):
    base_url: str = "https://mastodon.social"
    visibility: str = "public"
    max_characters: int = Field(default=500, ge=1)
    discover_limits: bool = True


class DispatchConfig(_Section):
    workers_per_channel: int = Field(default=4, ge=1, le=64)
    claim_batch: int = Field(default=500, ge=1, le=10_000)
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    idle_poll_s: float = Field(default=0.5, gt=0)
    # On SIGTERM, how long a worker may take to finish the batch in its hands: what still
    # waits for the rate is queued again unsent, what is with the provider is awaited, and
    # the batch is recorded. Keep it under the service manager's stop timeout.
    stop_grace_s: float = Field(default=10.0, ge=0)
    enabled: bool = True
    # An emergency on Telegram or WhatsApp not confirmed delivered this long after it was
    # sent falls back to the subscriber's next channel (gateway.outbox.fallback).
    fallback_unconfirmed_s: float = Field(default=300.0, gt=0)
    # PostgreSQL: every process draws each channel's provider rate from one budget per second
    # in the database (gateway.outbox.shared_rate), so N processes together keep to the rate
    # instead of N times it. Unset: on with PostgreSQL (SQLite has one process by design).
    # false: each process keeps its own token buckets (one dispatching process only).
    shared_rate_limit: bool | None = None
    # A provider that refuses a whole request for an account reason (balance, credentials,
    # sender id, review) holds its channel this long in each process: its deliveries stay
    # queued, no attempt spent, and the next request after the hold finds out whether an
    # operator has put the account right.
    account_hold_s: float = Field(default=60.0, gt=0, le=3600)


class SchedulerSection(_Section):
    """When this process looks at the database for due work (the database decides what)."""

    # None: follow [dispatch] enabled (an API-only process starts nothing by itself).
    enabled: bool | None = None
    # How often to look for what other processes changed (send-at edits, approvals).
    sweep_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # Occurrences of recurring announcements are issued this far ahead of their time.
    recurrence_horizon_s: float = Field(default=600.0, ge=0, le=86_400)
    # An occurrence missed by more than this (gateway down) is skipped, not sent late.
    misfire_grace_s: float = Field(default=3600.0, ge=0)
    # Default quiet hours in each subscriber's local time, "HH:MM-HH:MM" or "off"; an agency
    # sets its own with PUT /api/v1/agency/quiet-hours.
    quiet_hours: str = "21:00-06:00"

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        from gateway.outbox.quiet import QuietHours
        from scheduler.validation import FieldError

        try:
            QuietHours.parse(value)
        except FieldError as exc:
            raise ValueError(exc.reason) from None
        return value

    def default_quiet_hours(self) -> QuietHours:
        """``quiet_hours`` parsed (checked when the section was read): what an agency without
        its own follows, for the scheduler's passes and the dispatcher's starts alike."""
        from gateway.outbox.quiet import QuietHours

        return QuietHours.parse(self.quiet_hours, field="scheduler.quiet_hours")


class VoiceSection(_Section):
    """Voice calls through Africa's Talking (same account as SMS); off without a number."""

    enabled: bool = False
    base_url: str = "https://voice.africastalking.com"
    # Our Africa's Talking virtual number, E.164 with '+'.
    caller_number: str = ""
    audio_dir: str = "warta-audio"
    espeak_program: str = "espeak-ng"
    say_voice: str = "woman"
    batch_size: int = Field(default=50, ge=1, le=1000)
    rate_per_second: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    executor_workers: int = Field(default=4, ge=1, le=64)


class PricingConfig(_Section):
    """Price per SMS segment, and per minute of a voice call, by country calling region,
    optionally by network.

    The defaults are EXAMPLES for Indonesia and Kenya, not quotes: set your contract's prices.
    """

    currency: str = "IDR"
    default_per_segment: Decimal = Decimal("350")
    per_region: dict[str, Decimal] = Field(
        default_factory=lambda: {"ID": Decimal("350"), "KE": Decimal("12")}
    )
    # Region -> network name (as phonenumbers names carriers, e.g. "Telkomsel") -> price.
    per_network: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    # Voice calls: price per minute by region and network, and the provider's billing step in
    # seconds (60: every started minute is billed in full; 1: billed by the second).
    voice_default_per_minute: Decimal = Decimal("1200")
    voice_per_region: dict[str, Decimal] = Field(default_factory=dict)
    voice_per_network: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    voice_billing_s: int = Field(default=60, ge=1, le=60)


class SocialConfig(_Section):
    """Which agency each social account speaks for (``gateway.outbox.accounts``)."""

    # Channel -> account (Page id, X or Mastodon username, Telegram "@channel") -> agency slug.
    # An account not named posts for [telegram] agency (Telegram channels), else the first
    # agency.
    account_agencies: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("account_agencies")
    @classmethod
    def _social_channels(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = sorted(set(value) - set(SOCIAL_CHANNELS))
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a social channel (one of {', '.join(SOCIAL_CHANNELS)})"
            )
        return value


class CitizenConfig(_Section):
    """The citizen side: USSD screens, and which agency answers which code."""

    ussd_screen_size: int = Field(default=160, ge=120, le=182)
    # "*384*123#" -> agency slug; unmapped codes go to the first agency.
    ussd_service_codes: dict[str, str] = Field(default_factory=dict)
    # SMS short code or long number -> agency slug.
    sms_short_codes: dict[str, str] = Field(default_factory=dict)


class SecretsConfig(_Section):
    """Keys for personal data and callbacks; only ever from the environment or files."""

    phone_keys: SecretStr | None = None
    blind_index_key: SecretStr | None = None
    africastalking_api_key: SecretStr | None = None
    callback_token: SecretStr | None = None
    whatsapp_access_token: SecretStr | None = None
    meta_app_secret: SecretStr | None = None
    meta_verify_token: SecretStr | None = None
    # JSON objects: {"<page id>": "<page token>"}, {"<username>": "<token>"}
    facebook_page_tokens: SecretStr | None = None
    x_tokens: SecretStr | None = None
    mastodon_tokens: SecretStr | None = None
    telegram_bot_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None


class WartaConfig(_Section):
    data_dir: Path = Path(".")
    # Message templates; None uses the built-in ones (the repository's templates/ folder).
    templates_dir: Path | None = None
    log_level: str = "INFO"
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    phone: PhoneConfig = PhoneConfig()
    africastalking: AfricasTalkingSection = AfricasTalkingSection()
    dispatch: DispatchConfig = DispatchConfig()
    scheduler: SchedulerSection = SchedulerSection()
    voice: VoiceSection = VoiceSection()
    pricing: PricingConfig = PricingConfig()
    citizen: CitizenConfig = CitizenConfig()
    social: SocialConfig = SocialConfig()
    telegram: TelegramSection = TelegramSection()
    whatsapp: WhatsAppSection = WhatsAppSection()
    facebook: GraphSection = GraphSection()
    x: XSection = XSection()
    mastodon: MastodonSection = MastodonSection()
    secrets: SecretsConfig = SecretsConfig()


_SECRET_SECTION = "secrets"  # noqa: S105 - a section name, not a secret


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``WARTA_SECTION__KEY=value`` (and ``…_FILE`` for secrets) into nested settings."""
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "TEST_"):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] == _SECRET_SECTION and len(path) == 2 and path[1].endswith("_file"):
            key = path[1][: -len("_file")]
            try:
                value = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigProblem(f"{name}: cannot read secret file ({exc.strerror})") from None
            path = [_SECRET_SECTION, key]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigProblem(f"{name}: conflicts with another setting")
        # A secret is taken verbatim, even one that happens to look like a TOML list.
        node[path[-1]] = value if path[0] == _SECRET_SECTION else _coerce_env(value)
    return overrides


def _coerce_env(value: str) -> Any:
    # TOML literal syntax lets lists and tables come from the environment too.
    stripped = value.strip()
    if stripped[:1] in "[{":
        try:
            return tomllib.loads(f"v = {stripped}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> WartaConfig:
    """Read ``path`` (TOML, optional), then the environment, then ``overrides``.

    Raises:
        ConfigProblem: naming the bad key, e.g. ``database.pool_size: ...``.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigProblem(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigProblem(f"config file {path}: {exc}") from None
        if _SECRET_SECTION in data:
            keys = ", ".join(sorted(data[_SECRET_SECTION])) or "(empty)"
            raise ConfigProblem(
                f"secrets.{keys}: secrets are read only from the environment "
                f"(WARTA_SECRETS__<NAME> or WARTA_SECRETS__<NAME>_FILE), never from a file "
                f"that may be shared"
            )
    data = _merge(data, _env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return WartaConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        # Pydantic's message never includes the input value for these errors.
        raise ConfigProblem(f"{key}: {first['msg']}") from None
