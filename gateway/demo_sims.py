"""Every built-in provider simulator, started together for ``warta demo``.

Each simulator is the same real HTTP server the tests and benchmarks use; the demo points the
gateway's channels at them and their callbacks back at the gateway.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.config import PricingConfig

DEMO_TELEGRAM_CHANNEL = "@warta_demo"
# The demo's Africa's Talking voice number (Jakarta); the voice simulator accepts only it.
DEMO_VOICE_NUMBER = "+622150880000"
# The demo agencies' Africa's Talking balance (in the [pricing] currency): ample for the demo.
DEMO_BALANCE = Decimal("50000000")


@dataclass
class DemoSimulators:
    """Start with ``start(base_url, keys)``; ``settings``/``secrets`` configure the gateway.

    ``voice`` says whether voice calls are on: they need espeak-ng for Bahasa Indonesia, and
    without it the demo runs without voice (``notes`` says why) rather than not at all.
    """

    running: list[Any] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    voice: bool = False
    notes: list[str] = field(default_factory=list)

    async def start(
        self, base_url: str, keys: dict[str, str], *, pricing: PricingConfig | None = None
    ) -> None:
        """Start every simulator. Africa's Talking charges in the gateway's own currency and
        tariff (``pricing``, the defaults when None), so the cost it reports can be read
        against the gateway's estimate."""
        pricing = pricing or PricingConfig()
        from channels.africastalking.simconfig import SimulatorConfig as AtConfig
        from channels.africastalking.simulator import AfricasTalkingSimulator
        from channels.africastalking.voice_sim import VoiceSimulator
        from channels.mastodon.simulator import MastodonSimulator, MastodonSimulatorConfig
        from channels.meta.simconfig import SimulatorConfig as MetaConfig
        from channels.meta.simulator import MetaSimulator
        from channels.telegram.simconfig import DEFAULT_TOKEN
        from channels.telegram.simconfig import SimulatorConfig as TgConfig
        from channels.telegram.simulator import TelegramSimulator
        from channels.voice.simconfig import VoiceSimulatorConfig
        from channels.x.simulator import XSimulator, XSimulatorConfig
        from gateway.callbacks import callback_urls
        from gateway.voice_routes import callback_urls as voice_callback_urls

        callbacks = callback_urls(base_url, keys["callback_token"])
        at = AfricasTalkingSimulator(
            AtConfig(
                api_key=keys["africastalking_api_key"],
                latency=(0.02, 0.08),
                delivery_report_url=callbacks["africastalking_sms_delivery"],
                delivery_report_delay=(0.5, 3.0),
                delivery_report_shares={"Failed:DeliveryFailure": 0.01, "AbsentSubscriber": 0.01},
                currency=pricing.currency,
                cost_per_segment=pricing.per_region.get("ID", pricing.default_per_segment),
                # An agency's account: the preview shows it beside the estimate, and
                # POST /simulator/balance empties or tops it up to watch a broadcast hold.
                balance=DEMO_BALANCE,
                seed=None,
            )
        )
        meta_config = MetaConfig(
            app_secret=keys["meta_app_secret"],
            latency=(0.02, 0.1),
            status_webhook_url=callbacks["meta_whatsapp_webhook"],
            status_webhook_delay=(0.5, 2.0),
            seed=None,
        )
        meta = MetaSimulator(meta_config)
        telegram = TelegramSimulator(TgConfig(latency=(0.01, 0.05), seed=None))
        x = XSimulator(XSimulatorConfig(latency=(0.05, 0.2), seed=None))
        mastodon = MastodonSimulator(MastodonSimulatorConfig(latency=(0.05, 0.2), seed=None))
        voice = VoiceSimulator(
            VoiceSimulatorConfig(
                username="sandbox",
                api_key=keys["africastalking_api_key"],
                caller_numbers=frozenset({DEMO_VOICE_NUMBER}),
                callback_url=voice_callback_urls(base_url, keys["callback_token"])[
                    "africastalking_voice"
                ],
                latency=(0.02, 0.08),
                answer_delay=(1.0, 4.0),
                call_outcome_shares={"NO_ANSWER": 0.08, "USER_BUSY": 0.04},
                currency=pricing.currency,
                price_per_minute=Decimal("2500"),
                seed=None,
            )
        )
        for name, simulator in (
            ("africastalking", at),
            ("africastalking_voice", voice),
            ("meta", meta),
            ("telegram", telegram),
            ("x", x),
            ("mastodon", mastodon),
        ):
            self.urls[name] = await simulator.start()
            self.running.append(simulator)
        self.settings = {
            "africastalking": {"base_url": self.urls["africastalking"], "username": "sandbox"},
            "telegram": {
                "base_url": self.urls["telegram"],
                "bot_username": "warta_sim_bot",
                "channels": [DEMO_TELEGRAM_CHANNEL],
                # The demo's bot hears citizens by polling, as a gateway without a public URL
                # would: `warta phone telegram "/start"` talks to it.
                "updates": "polling",
                "poll_timeout_s": 10,
            },
            "whatsapp": {
                "phone_number_id": meta_config.phone_number_id,
                "base_url": self.urls["meta"],
            },
            "facebook": {"base_url": self.urls["meta"]},
            "x": {"base_url": self.urls["x"]},
            "mastodon": {"base_url": self.urls["mastodon"], "discover_limits": False},
        }
        self.voice = shutil.which("espeak-ng") is not None
        if self.voice:
            self.settings["voice"] = {
                "enabled": True,
                "base_url": self.urls["africastalking_voice"],
                "caller_number": DEMO_VOICE_NUMBER,
                "audio_dir": "audio",
                "rate_per_second": 20.0,
            }
        else:
            self.notes.append(
                "Voice calls are off: install espeak-ng (apt-get install espeak-ng) to hear "
                "announcements in Bahasa Indonesia."
            )
        self.secrets = {
            "telegram_bot_token": DEFAULT_TOKEN,
            "whatsapp_access_token": meta_config.whatsapp_token,
            "facebook_page_tokens": json.dumps(dict(meta_config.page_tokens)),
            "x_tokens": json.dumps({"warta_demo": "warta-x-simulator-token"}),
            "mastodon_tokens": json.dumps({"warta_demo": "warta-mastodon-simulator-token"}),
        }

    async def stop(self) -> None:
        for simulator in reversed(self.running):
            await simulator.stop()
        self.running.clear()
