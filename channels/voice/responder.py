"""What the gateway's voice callback routes answer, given the call and its announcement.

The routes (wired by the gateway) parse the form with ``parse_voice_callback``, look the
delivery up by ``sessionId`` (= the delivery's ``provider_message_id``) to find the rendered
voice text and its language, and hand both here::

    callback = parse_voice_callback(form)
    if callback.is_final:
        record(callback.delivery_report(), cost=callback.cost)    # delivered / failed
        return hangup_document()
    text, language = look_up(callback.session_id)                  # None when unknown
    xml = await responder.respond(callback, text, language, played=request.query.get("played"))

The routes stay free of XML and audio; this class stays free of the database.
"""

from __future__ import annotations

import logging

from channels.voice.actions import (
    answer_document,
    digits_document,
    hangup_document,
    plays_from_query,
)
from channels.voice.callbacks import VoiceCallback
from channels.voice.config import VoiceConfig
from channels.voice.speech import SpeechRenderer

log = logging.getLogger(__name__)


class VoiceResponder:
    """Builds the XML for answer and DTMF callbacks.

    Args:
        renderer: renders and caches non-English audio.
        digits_url: the full URL of the gateway's DTMF route (with its secret token).
        repeat_key, digits_timeout, max_plays: see ``VoiceConfig``.
    """

    def __init__(
        self,
        renderer: SpeechRenderer,
        digits_url: str,
        *,
        repeat_key: str = "1",
        digits_timeout: int = 10,
        max_plays: int = 3,
    ) -> None:
        self._renderer = renderer
        self._digits_url = digits_url
        self._repeat_key = repeat_key
        self._digits_timeout = digits_timeout
        self._max_plays = max_plays

    def __repr__(self) -> str:
        # The digits URL carries the callback secret.
        return f"<VoiceResponder max_plays={self._max_plays}>"

    @classmethod
    def from_config(
        cls, config: VoiceConfig, renderer: SpeechRenderer, digits_url: str
    ) -> VoiceResponder:
        return cls(
            renderer,
            digits_url,
            repeat_key=config.repeat_key,
            digits_timeout=config.digits_timeout,
            max_plays=config.max_plays,
        )

    async def respond(
        self,
        callback: VoiceCallback,
        text: str | None,
        language: str,
        *,
        played: str | None = None,
    ) -> str:
        """The XML for an answer or DTMF callback.

        Args:
            callback: the parsed callback (a final one gets the empty document).
            text: the delivery's rendered voice text; None when the session is unknown (the
                call is then ended politely rather than left silent).
            language: the text's language code (``en`` uses ``<Say>``, others espeak-ng).
            played: the DTMF route's ``played`` query value (how often the message played);
                None on the answer route. A DTMF request is never taken for a fresh answer,
                so no request can restart the message beyond ``max_plays``.

        Raises:
            ConfigError: audio is needed and espeak-ng is missing or failed; the route should
                answer with ``hangup_document()`` and alert an operator.
        """
        if callback.is_final:
            return hangup_document()
        if text is None:
            log.warning("voice callback for a session we do not know; hanging up")
            return hangup_document()
        script = await self._renderer.script(
            text,
            language,
            digits_url=self._digits_url,
            repeat_key=self._repeat_key,
            digits_timeout=self._digits_timeout,
            max_plays=self._max_plays,
        )
        if callback.digits is None and played is None:
            return answer_document(script)
        plays = plays_from_query(played, max_plays=self._max_plays)
        return digits_document(script, callback.digits, plays=plays)
