"""X (formerly Twitter): one post per announcement per account, through API v2.

``weighted_length`` is X's own length rule (twitter-text v3), for the renderer and preview.
"""

from channels.x.adapter import XChannel
from channels.x.config import XConfig
from channels.x.textcount import MAX_WEIGHTED_LENGTH, fits, weighted_length

__all__ = ["MAX_WEIGHTED_LENGTH", "XChannel", "XConfig", "fits", "weighted_length"]
