"""Mastodon: one status per announcement per account on one server, with Idempotency-Key.

``status_length`` is Mastodon's own length rule, for the renderer and preview.
"""

from channels.mastodon.adapter import MastodonChannel
from channels.mastodon.config import MastodonConfig
from channels.mastodon.textcount import status_length

__all__ = ["MastodonChannel", "MastodonConfig", "status_length"]
