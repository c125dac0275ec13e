"""What Meta's two channels (WhatsApp, Facebook Pages) share.

- ``signature``: ``X-Hub-Signature-256`` check over the raw body and the subscription
  handshake, as pure functions.
- ``errors``: Graph API error bodies and the shared code -> error-kind table.
- ``graph``: a small aiohttp Graph API client.
- ``simulator``: one server for both the WhatsApp Cloud API and the Page feed edge, which
  also posts signed WhatsApp status webhooks.
"""

from channels.meta.signature import SIGNATURE_HEADER, sign, verify_signature, verify_subscription

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature", "verify_subscription"]
