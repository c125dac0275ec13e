"""What the Telegram bot says, in Bahasa Indonesia and English.

A chat has room for more than a USSD screen, but a citizen reads on a phone: one idea per
line, the commands spelled out so they can be tapped. Code checks and "no news" reuse the
USSD/SMS wording (``gateway.citizen.wording``), so a citizen reads the same verdict everywhere.
"""

from __future__ import annotations

from datetime import datetime

from gateway.citizen import wording

_WORDS: dict[str, dict[str, str]] = {
    "id": {
        "welcome": "Selamat datang! Anda berlangganan info resmi {agency} untuk {area}.",
        "area": "wilayah {area}",
        "all_areas": "semua wilayah",
        "commands": "/terbaru - info terbaru\n"
        "/cek KODE - cek keaslian pesan\n"
        "/bahasa - ganti bahasa\n"
        "/stop - berhenti berlangganan",
        "help": "Perintah yang tersedia:",
        "start_hint": "Ketik /start untuk berlangganan.",
        "stopped": "Anda berhenti menerima info {agency} di Telegram. "
        "Ketik /start untuk berlangganan lagi.",
        "not_subscribed": "Anda belum berlangganan. Ketik /start untuk mulai.",
        "check_usage": "Ketik /cek lalu kodenya, misalnya /cek AB3DEF",
        "read_more": "Selengkapnya: {url}",
        "latest": "Info terbaru {agency}:",
        "language_set": "Baik, info dan balasan selanjutnya dalam Bahasa Indonesia.",
        "received": "Terima kasih, pesan Anda sudah kami terima.",
        "text_only": "Maaf, kami hanya bisa membaca pesan teks.",
    },
    "en": {
        "welcome": "Welcome! You are subscribed to official news from {agency} for {area}.",
        "area": "area {area}",
        "all_areas": "all areas",
        "commands": "/terbaru - latest news\n"
        "/cek CODE - check a message is genuine\n"
        "/bahasa - change language\n"
        "/stop - unsubscribe",
        "help": "Commands:",
        "start_hint": "Send /start to subscribe.",
        "stopped": "You will no longer get {agency} news on Telegram. Send /start to come back.",
        "not_subscribed": "You are not subscribed. Send /start to begin.",
        "check_usage": "Send /cek followed by the code, e.g. /cek AB3DEF",
        "read_more": "Read more: {url}",
        "latest": "Latest from {agency}:",
        "language_set": "OK, news and replies will now be in English.",
        "received": "Thank you, we have received your message.",
        "text_only": "Sorry, we can only read text messages.",
    },
}

LANGUAGE_ASK = (
    "Pilih bahasa / Choose language:\n/bahasa id - Bahasa Indonesia\n/bahasa en - English"
)


def tg_say(language: str, key: str, **values: str) -> str:
    text = _WORDS[wording.supported(language)][key]
    return text.format(**values) if values else text


def area_text(language: str, area: str | None) -> str:
    return tg_say(language, "area", area=area) if area else tg_say(language, "all_areas")


def welcome(language: str, *, agency: str, area: str | None) -> str:
    """The first reply after ``/start``; it is also the consent text stored with the choice."""
    intro = tg_say(language, "welcome", agency=agency, area=area_text(language, area))
    return f"{intro}\n\n{tg_say(language, 'commands')}"


def help_text(language: str, *, subscribed: bool) -> str:
    lines = [tg_say(language, "help"), tg_say(language, "commands")]
    if not subscribed:
        lines.append(tg_say(language, "start_hint"))
    return "\n".join(lines)


def genuine(
    language: str, *, code: str, agency: str, title: str, issued_at: datetime | None, url: str
) -> str:
    verdict = wording.say(language, "genuine", code=code, agency=agency, title=title)
    date = wording.short_date(issued_at)
    if date:
        verdict = f"{verdict} ({date})"
    return f"{verdict}\n{tg_say(language, 'read_more', url=url)}"


def bulletin_line(title: str, issued_at: datetime | None, url: str) -> str:
    date = wording.short_date(issued_at)
    heading = f"• {title} ({date})" if date else f"• {title}"
    return f"{heading}\n{url}"
