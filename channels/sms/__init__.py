"""SMS through Africa's Talking: the adapter, its status tables and its callback parsers."""

from channels.sms.adapter import SmsChannel
from channels.sms.callbacks import CallbackFieldError, parse_delivery_report, parse_opt_out

__all__ = ["CallbackFieldError", "SmsChannel", "parse_delivery_report", "parse_opt_out"]
