"""Test configuration: the real loader, fed overrides instead of a file."""

from __future__ import annotations

from typing import Any

from gateway.config import WartaConfig, load_config


def make_config(database_url: str, keys: dict[str, str], **overrides: Any) -> WartaConfig:
    settings: dict[str, Any] = {
        "database": {"url": database_url},
        "secrets": dict(keys),
        "dispatch": {"idle_poll_s": 0.05},
        # Tests run at any hour: with the default quiet hours, a normal broadcast started at
        # night in Jakarta would wait for 06:00. Quiet-hour tests set them, with a fixed clock.
        "scheduler": {"quiet_hours": "off"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            settings[key] = {**settings.get(key, {}), **value}
        else:
            settings[key] = value
    return load_config(None, environ={}, overrides=settings)
