"""Africa's Talking pieces shared by the SMS (and later USSD and voice) channels.

``config`` holds the account settings, ``sdk`` the seam around the official (synchronous) SDK,
and ``simulator`` a real aiohttp server speaking Africa's Talking's documented wire format,
used by ``warta demo``, ``warta simulate africastalking``, the tests and the benchmarks.
"""

from channels.africastalking.config import AfricasTalkingConfig

__all__ = ["AfricasTalkingConfig"]
