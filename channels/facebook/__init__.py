"""Facebook Pages through the Graph API: the adapter and its config."""

from channels.facebook.adapter import FacebookChannel, first_link
from channels.facebook.config import FacebookConfig

__all__ = ["FacebookChannel", "FacebookConfig", "first_link"]
