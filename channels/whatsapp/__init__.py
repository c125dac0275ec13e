"""WhatsApp through the Cloud API: the adapter, its status tables and its webhook parser."""

from channels.whatsapp.adapter import WhatsAppChannel, template_parameter_text
from channels.whatsapp.config import WhatsAppConfig
from channels.whatsapp.webhooks import (
    InboundMessage,
    Webhook,
    WebhookFieldError,
    error_for_code,
    parse_status_webhook,
    parse_status_webhook_body,
    parse_webhook,
    parse_webhook_body,
)

__all__ = [
    "InboundMessage",
    "Webhook",
    "WebhookFieldError",
    "WhatsAppChannel",
    "WhatsAppConfig",
    "error_for_code",
    "parse_status_webhook",
    "parse_status_webhook_body",
    "parse_webhook",
    "parse_webhook_body",
    "template_parameter_text",
]
