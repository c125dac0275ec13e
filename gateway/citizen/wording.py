"""Every word a citizen reads on USSD screens and SMS replies, in Bahasa Indonesia and English.

Short on purpose: a feature-phone screen holds about 160 characters. ``say(language, key,
**values)`` falls back to Bahasa Indonesia for a language without its own wording.
"""

from __future__ import annotations

from datetime import datetime

from gateway.citizen.ports import LANGUAGES

_WORDS: dict[str, dict[str, str]] = {
    "id": {
        "home": "1 Info terbaru\n2 Cek kode\n3 Daftar\n4 Berhenti\n5 Bahasa/Language",
        "invalid": "Pilihan salah.",
        "next": "9 Lanjut",
        "back": "0 Kembali",
        "home_key": "00 Menu",
        "latest": "Info terbaru",
        "no_news": "Belum ada info untuk wilayah Anda.",
        "code_word": "Kode",
        "verify_ask": "Ketik kode verifikasi (6 huruf/angka):",
        "bad_code": "Kode harus 6 huruf/angka.",
        "genuine": "ASLI. Kode {code} dari {agency}: {title}",
        "fake": "TIDAK DIKENAL. Kode {code} tidak berasal dari layanan ini. Waspada, "
        "pesan itu mungkin palsu.",
        "area_ask": "Kode wilayah Anda (mis. 3171):\n1 Semua wilayah",
        "bad_area": "Kode wilayah salah.",
        "topics_ask": "Topik:",
        "all_topics": "Semua",
        "channels_ask": "Terima info lewat:\n1 SMS\n2 Telepon\n3 SMS dan telepon",
        "consent": "Terima info {agency} lewat {channels} di nomor ini? Berhenti kapan saja: "
        "menu 4 atau SMS STOP.",
        "agree": "1 Setuju",
        "subscribed": "Terima kasih, Anda terdaftar. Wilayah: {area}. Berhenti: menu 4 atau "
        "SMS STOP.",
        "not_subscribed": "Nomor ini belum terdaftar. Daftar: menu 3.",
        "unsub_ask": "Berhenti menerima:\n1 Semua\n2 SMS saja\n3 Telepon saja",
        "unsubscribed": "Selesai. Anda tidak menerima info lewat {channels} lagi. Daftar lagi: "
        "menu 3.",
        "language_ask": "Pilih bahasa / Choose language:\n1 Bahasa Indonesia\n2 English",
        "language_set": "Bahasa: Indonesia.",
        "all_areas": "semua wilayah",
        "sms": "SMS",
        "voice": "telepon",
        "and": "dan",
        "everything": "SMS dan telepon",
        "busy": "Layanan sedang sibuk. Silakan coba lagi.",
        "too_long": "Sesi terlalu panjang. Silakan hubungi lagi.",
        "ended": "Sesi sudah selesai. Silakan hubungi lagi.",
        "bad_request": "Permintaan tidak dapat dibaca. Silakan hubungi lagi.",
        # SMS replies
        "sms_registered": "Terdaftar di {agency}, wilayah {area}. Berhenti: STOP. Bantuan: INFO",
        "sms_bad_area": "Kode wilayah salah. Contoh: DAFTAR 3171",
        "sms_stopped": "Anda berhenti berlangganan {agency}. Daftar lagi: DAFTAR",
        "sms_not_subscribed": "Nomor ini belum terdaftar. Ketik DAFTAR <kode wilayah>",
        "sms_check_usage": "Ketik CEK <kode>, mis. CEK AB3DEF",
        "sms_language_set": "Bahasa diubah ke Bahasa Indonesia.",
        "sms_help": "Perintah: DAFTAR <wilayah>, STOP, CEK <kode>, BAHASA/LANG.",
        "sms_latest": "Terbaru: {title} (kode {code}).",
        # WhatsApp replies
        "wa_stopped": "Anda tidak akan lagi menerima pesan WhatsApp dari {agency}.",
        "wa_not_subscribed": "Nomor WhatsApp ini tidak berlangganan {agency}.",
    },
    "en": {
        "home": "1 Latest news\n2 Check a code\n3 Subscribe\n4 Unsubscribe\n5 Bahasa/Language",
        "invalid": "Invalid choice.",
        "next": "9 Next",
        "back": "0 Back",
        "home_key": "00 Menu",
        "latest": "Latest news",
        "no_news": "No news for your area yet.",
        "code_word": "Code",
        "verify_ask": "Enter the verification code (6 letters/digits):",
        "bad_code": "A code has 6 letters/digits.",
        "genuine": "GENUINE. Code {code} is from {agency}: {title}",
        "fake": "UNKNOWN. Code {code} did not come from this service. Take care, the message "
        "may be fake.",
        "area_ask": "Your area code (e.g. 3171):\n1 All areas",
        "bad_area": "Invalid area code.",
        "topics_ask": "Topics:",
        "all_topics": "All",
        "channels_ask": "Receive news by:\n1 SMS\n2 Voice call\n3 SMS and voice",
        "consent": "Receive {agency} news by {channels} on this number? Stop any time: menu 4 "
        "or SMS STOP.",
        "agree": "1 I agree",
        "subscribed": "Thank you, you are subscribed. Area: {area}. To stop: menu 4 or SMS STOP.",
        "not_subscribed": "This number is not subscribed. Subscribe: menu 3.",
        "unsub_ask": "Stop receiving:\n1 Everything\n2 SMS only\n3 Voice only",
        "unsubscribed": "Done. You will get no more news by {channels}. Subscribe again: menu 3.",
        "language_ask": "Pilih bahasa / Choose language:\n1 Bahasa Indonesia\n2 English",
        "language_set": "Language: English.",
        "all_areas": "all areas",
        "sms": "SMS",
        "voice": "voice",
        "and": "and",
        "everything": "SMS and voice",
        "busy": "The service is busy. Please try again.",
        "too_long": "This session is too long. Please dial again.",
        "ended": "This session has ended. Please dial again.",
        "bad_request": "The request could not be read. Please dial again.",
        "sms_registered": "Subscribed to {agency}, area {area}. To stop: STOP. Help: INFO",
        "sms_bad_area": "Invalid area code. Example: REG 3171",
        "sms_stopped": "You have unsubscribed from {agency}. To come back: REG",
        "sms_not_subscribed": "This number is not subscribed. Send REG <area code>",
        "sms_check_usage": "Send CHECK <code>, e.g. CHECK AB3DEF",
        "sms_language_set": "Language changed to English.",
        "sms_help": "Commands: REG <area>, STOP, CHECK <code>, LANG/BAHASA.",
        "sms_latest": "Latest: {title} (code {code}).",
        "wa_stopped": "You will no longer get WhatsApp messages from {agency}.",
        "wa_not_subscribed": "This WhatsApp number is not subscribed to {agency}.",
    },
}


def supported(language: str | None, fallback: str = "id") -> str:
    """``language`` when Warta has wording for it, else ``fallback`` (itself checked)."""
    if language in LANGUAGES:
        return str(language)
    return fallback if fallback in LANGUAGES else "id"


def say(language: str, key: str, **values: str) -> str:
    text = _WORDS[supported(language)][key]
    return text.format(**values) if values else text


def channels_phrase(language: str, channels: tuple[str, ...] | list[str] | None) -> str:
    """``("sms", "voice")`` -> ``SMS dan telepon``; None or both -> everything."""
    chosen = [c for c in (channels or ("sms", "voice")) if c in ("sms", "voice")]
    if not chosen or set(chosen) == {"sms", "voice"}:
        return say(language, "everything")
    return " ".join(say(language, c) for c in chosen)


def area_phrase(language: str, area: str | None) -> str:
    return area if area else say(language, "all_areas")


def short_date(value: datetime | None) -> str:
    return value.strftime("%d/%m/%y") if value is not None else ""
