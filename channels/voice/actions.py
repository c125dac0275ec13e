"""The XML Africa's Talking runs during a call, built by pure functions.

A call plays the announcement, then asks "press 1 to hear it again" with ``<GetDigits>``. The
key goes to ``digits_url`` (with ``played=N`` in its query, so the callback route needs no
memory of the call); pressing the repeat key plays it again, up to ``max_plays`` times in all.
When the citizen presses nothing, Africa's Talking moves on to the action after ``<GetDigits>``
(docs.africastalking.com/voice/getdigits), which is the goodbye; then it hangs up::

    <Response>
      <Say voice="woman">…announcement…</Say>          (or <Play url="…/audio/<hash>.wav"/>)
      <GetDigits numDigits="1" timeout="10" callbackUrl="…/voice/digits?played=1">
        <Say voice="woman">Press 1 to hear this message again.</Say>
      </GetDigits>
      <Say voice="woman">Goodbye.</Say>
    </Response>

Action words and attributes: docs.africastalking.com/voice/actions, /voice/say,
/voice/getdigits.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

XML_CONTENT_TYPE = "application/xml"
PLAYS_PARAMETER = "played"


@dataclass(frozen=True, slots=True)
class Say:
    """Text the provider reads out (in English only)."""

    text: str
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    """An audio file the provider fetches from ``url`` and plays."""

    url: str


Speech = Say | Play


@dataclass(frozen=True, slots=True)
class GetDigits:
    """Play ``prompt`` and wait ``timeout`` seconds for ``num_digits`` keys."""

    prompt: Speech
    callback_url: str
    num_digits: int = 1
    timeout: int = 10


Action = Say | Play | GetDigits


@dataclass(frozen=True, slots=True)
class CallScript:
    """Everything one call says, already in the citizen's language.

    Attributes:
        message: the announcement.
        prompt: "press 1 to hear this message again".
        goodbye: said when the citizen presses nothing, another key, or heard it enough.
        digits_url: where Africa's Talking sends the key pressed (our DTMF route).
        repeat_key: the key that repeats the message.
        digits_timeout: seconds to wait for the key.
        max_plays: most plays of the message in one call, the first included.
    """

    message: Speech
    prompt: Speech
    goodbye: Speech
    digits_url: str
    repeat_key: str = "1"
    digits_timeout: int = 10
    max_plays: int = 3


def _speech_element(parent: ET.Element, speech: Speech) -> None:
    if isinstance(speech, Say):
        element = ET.SubElement(parent, "Say")
        if speech.voice:
            element.set("voice", speech.voice)
        element.text = speech.text
    else:
        ET.SubElement(parent, "Play", {"url": speech.url})


def render_response(actions: Sequence[Action]) -> str:
    """The XML document for ``actions``, in order; text and URLs are escaped."""
    root = ET.Element("Response")
    for action in actions:
        if isinstance(action, GetDigits):
            element = ET.SubElement(
                root,
                "GetDigits",
                {
                    "numDigits": str(action.num_digits),
                    "timeout": str(action.timeout),
                    "callbackUrl": action.callback_url,
                },
            )
            _speech_element(element, action.prompt)
        else:
            _speech_element(root, action)
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def with_plays(url: str, plays: int) -> str:
    """``url`` with ``played=plays`` set in its query (other parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k != PLAYS_PARAMETER]
    query.append((PLAYS_PARAMETER, str(plays)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def plays_from_query(value: str | None, *, max_plays: int) -> int:
    """The ``played`` count from the DTMF route's query; anything odd counts as ``max_plays``.

    Treating a tampered or missing count as "heard enough" bounds every call: a forged
    request can at worst end a call with the goodbye.
    """
    if value is None or not value.isdigit():
        return max_plays
    return min(max(int(value), 1), max_plays)


def message_actions(script: CallScript, *, plays: int) -> list[Action]:
    """The message (its ``plays``-th time), the repeat prompt while allowed, the goodbye."""
    actions: list[Action] = [script.message]
    if plays < script.max_plays:
        actions.append(
            GetDigits(
                prompt=script.prompt,
                callback_url=with_plays(script.digits_url, plays),
                num_digits=1,
                timeout=script.digits_timeout,
            )
        )
    actions.append(script.goodbye)
    return actions


def answer_document(script: CallScript) -> str:
    """What to answer when the call is picked up (``isActive=1``, no ``dtmfDigits``)."""
    return render_response(message_actions(script, plays=1))


def digits_document(script: CallScript, digits: str | None, *, plays: int) -> str:
    """What to answer when the citizen pressed ``digits`` after the ``plays``-th play."""
    if digits == script.repeat_key and plays < script.max_plays:
        return render_response(message_actions(script, plays=plays + 1))
    return render_response([script.goodbye])


def hangup_document() -> str:
    """An empty action list: Africa's Talking hangs up (also the answer to a final callback)."""
    return render_response([])
