"""Voice calls through Africa's Talking, for citizens without data and for emergencies.

``adapter`` places calls, ``callbacks`` parses what Africa's Talking POSTs during and after a
call, ``actions`` builds the XML a call runs, ``speech`` renders non-English audio with
espeak-ng, ``responder`` ties those together for the gateway's callback routes, and
``simconfig`` configures the simulator in ``channels.africastalking.voice_sim``.
"""

from channels.voice.actions import CallScript, answer_document, digits_document, hangup_document
from channels.voice.adapter import VoiceChannel
from channels.voice.callbacks import VoiceCallback, VoiceCallbackError, parse_voice_callback
from channels.voice.config import VoiceConfig
from channels.voice.responder import VoiceResponder
from channels.voice.speech import SpeechRenderer

__all__ = [
    "CallScript",
    "SpeechRenderer",
    "VoiceCallback",
    "VoiceCallbackError",
    "VoiceChannel",
    "VoiceConfig",
    "VoiceResponder",
    "answer_document",
    "digits_document",
    "hangup_document",
    "parse_voice_callback",
]
