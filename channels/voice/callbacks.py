"""Parsing Africa's Talking's voice callbacks (form-encoded POSTs), as pure functions.

Africa's Talking POSTs to the number's callback URL when a call is answered (``isActive=1``),
to a ``<GetDigits callbackUrl>`` when the citizen pressed keys (``isActive=1`` with
``dtmfDigits``), and once more when the call is over (``isActive=0``, with
``callSessionState``, ``status``, ``hangupCause``, ``durationInSeconds``, ``amount`` and
``currencyCode``). A call nobody answered only gets the final request.

Errors name the field, never its value (a value may be a phone number).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from channels.base import MESSAGE_ID_LENGTH, DeliveryReport
from channels.voice.status import (
    ANSWERED_WORDS,
    HANGUP_CAUSES,
    SESSION_STATES,
    UNKNOWN_FINAL_STATE,
)
from gateway.domain import DeliveryState
from gateway.pricing import cost_in

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MESSAGE_ID_LENGTH}}}")
_WORD = re.compile(r"[A-Za-z]{1,64}")
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_DIGITS = re.compile(r"[0-9*#]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
# Some answers say "None" where a value is absent.
_ABSENT = frozenset({"", "None", "none", "null"})


class VoiceCallbackError(ValueError):
    """A voice callback lacks a field or has a bad one; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{problem} field {field!r}")
        self.field = field


@dataclass(frozen=True, slots=True)
class VoiceCallback:
    """One callback request, checked. Numbers are kept out of ``repr``."""

    session_id: str
    active: bool
    direction: str | None = None
    caller_number: str | None = field(default=None, repr=False)
    destination_number: str | None = field(default=None, repr=False)
    digits: str | None = None
    session_state: str | None = None
    status: str | None = None
    hangup_cause: str | None = None
    duration_seconds: int | None = None
    cost: Decimal | None = None
    currency: str | None = None

    @property
    def is_final(self) -> bool:
        return not self.active

    def delivery_report(self, currency: str | None = None) -> DeliveryReport | None:
        """The report a final callback makes; None while the call is still going on.

        With ``currency`` (the gateway's ``[pricing] currency``), an ``amount`` whose
        ``currencyCode`` is another currency is left out of the report, as for SMS: the
        delivery keeps its estimate rather than add, say, KES to an IDR total.
        """
        if self.active:
            return None
        state, word = final_state(self.session_state, self.status, self.hangup_cause)
        cost = cost_in(self.cost, self.currency, currency, source="Africa's Talking voice")
        return DeliveryReport(
            provider_message_id=self.session_id,
            state=state,
            status_word=word,
            reason=self.hangup_cause if state is not DeliveryState.DELIVERED else None,
            cost=cost,
        )


def final_state(
    session_state: str | None, status: str | None, cause: str | None
) -> tuple[DeliveryState, str]:
    """Our state and the word explaining it, for a call that is over.

    Answered (``callSessionState``/``status`` Completed, Success) -> delivered. Otherwise the
    hang-up cause decides (failed with the cause word, e.g. ``USER_BUSY``), then an explicit
    failure state (``NotAnswered``); anything else is failed and logged.
    """
    for word in (session_state, status):
        if word in ANSWERED_WORDS:
            return DeliveryState.DELIVERED, word
    if cause is not None and cause in HANGUP_CAUSES:
        return HANGUP_CAUSES[cause], cause
    for word in (session_state, status):
        if word is not None and word in SESSION_STATES:
            return SESSION_STATES[word], cause or word
    log.warning(
        "unknown final voice call words (state=%s, status=%s, cause=%s); reporting failed",
        session_state,
        status,
        cause,
    )
    return UNKNOWN_FINAL_STATE, cause or session_state or status or "unrecognised"


def _value(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return None if value in _ABSENT else value


def _matching(form: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str | None:
    value = _value(form, name)
    if value is not None and not pattern.fullmatch(value):
        raise VoiceCallbackError(name, "malformed")
    return value


def parse_voice_callback(form: Mapping[str, str]) -> VoiceCallback:
    """Check one callback form and return it as a ``VoiceCallback``.

    ``sessionId`` and ``isActive`` are required; every other field is optional but must be
    well-formed when present (``"None"`` counts as absent, as Africa's Talking sends it).

    Raises:
        VoiceCallbackError: a required field is missing or empty, or a field is malformed
            (``isActive`` not 0/1, ``dtmfDigits`` not phone keys, ``durationInSeconds`` not a
            whole number, ``amount`` not a number, ``currencyCode`` not three letters, a status
            or cause not a word).
    """
    session_id = _value(form, "sessionId")
    if session_id is None:
        raise VoiceCallbackError("sessionId", "missing")
    if not _SESSION_ID.fullmatch(session_id):
        raise VoiceCallbackError("sessionId", "malformed")
    active_text = _value(form, "isActive")
    if active_text is None:
        raise VoiceCallbackError("isActive", "missing")
    if active_text not in ("0", "1"):
        raise VoiceCallbackError("isActive", "malformed")
    duration_text = _value(form, "durationInSeconds")
    duration: int | None = None
    if duration_text is not None:
        if not duration_text.isdigit():
            raise VoiceCallbackError("durationInSeconds", "malformed")
        duration = int(duration_text)
    amount_text = _value(form, "amount")
    cost: Decimal | None = None
    if amount_text is not None:
        try:
            cost = Decimal(amount_text.split()[-1])
        except InvalidOperation:
            raise VoiceCallbackError("amount", "malformed") from None
        if not cost.is_finite() or cost < 0:
            raise VoiceCallbackError("amount", "malformed")
    return VoiceCallback(
        session_id=session_id,
        active=active_text == "1",
        direction=_matching(form, "direction", _WORD),
        caller_number=_value(form, "callerNumber"),
        destination_number=_value(form, "destinationNumber"),
        digits=_matching(form, "dtmfDigits", _DIGITS),
        session_state=_matching(form, "callSessionState", _WORD),
        status=_matching(form, "status", _WORD),
        hangup_cause=_matching(form, "hangupCause", _CAUSE),
        duration_seconds=duration,
        cost=cost,
        currency=_matching(form, "currencyCode", _CURRENCY),
    )
