"""The dashboard's words in Bahasa Indonesia and English.

The language is the user's choice (``?lang=`` sets a cookie), else the browser's
``Accept-Language``, else Bahasa Indonesia. A key missing here shows as itself, which a test
would catch on the page.
"""

from __future__ import annotations

LANGUAGES = ("id", "en")
DEFAULT = "id"

TEXT: dict[str, tuple[str, str]] = {
    # layout
    "app": ("Dasbor Warta", "Warta dashboard"),
    "skip": ("Lewati ke isi", "Skip to content"),
    "nav": ("Navigasi utama", "Main navigation"),
    "announcements": ("Pengumuman", "Announcements"),
    "compose": ("Tulis pengumuman", "Compose"),
    "approvals": ("Menunggu persetujuan", "Approval queue"),
    "inbox": ("Kotak masuk", "Inbox"),
    "subscribers": ("Pelanggan", "Subscribers"),
    "stats": ("Statistik", "Statistics"),
    "logout": ("Keluar", "Sign out"),
    "signed_in_as": ("Masuk sebagai", "Signed in as"),
    "language": ("Bahasa", "Language"),
    # login
    "login": ("Masuk", "Sign in"),
    "agency": ("Instansi (slug)", "Agency (slug)"),
    "email": ("Email", "Email"),
    "password": ("Kata sandi", "Password"),
    "login_failed": (
        "Instansi, email, atau kata sandi salah.",
        "Agency, email or password is wrong.",
    ),
    "login_throttled": (
        "Terlalu banyak percobaan. Tunggu beberapa menit lalu coba lagi.",
        "Too many attempts. Wait a few minutes and try again.",
    ),
    "csrf_failed": (
        "Formulir kedaluwarsa atau tidak sah. Muat ulang halaman dan coba lagi.",
        "The form expired or is not valid. Reload the page and try again.",
    ),
    "signed_out": ("Anda sudah keluar.", "You are signed out."),
    "password_changed": (
        "Kata sandi diganti. Masuk lagi dengan kata sandi baru.",
        "Password changed. Sign in again with the new one.",
    ),
    "my_password": ("Kata sandi saya", "My password"),
    # announcements
    "title": ("Judul", "Title"),
    "body": ("Isi", "Body"),
    "status": ("Status", "Status"),
    "channels": ("Kanal", "Channels"),
    "urgency": ("Tingkat", "Urgency"),
    "normal": ("Biasa", "Normal"),
    "emergency": ("Darurat", "Emergency"),
    "created": ("Dibuat", "Created"),
    "code": ("Kode verifikasi", "Verification code"),
    "none_yet": ("Belum ada.", "Nothing yet."),
    "all": ("Semua", "All"),
    "filter": ("Saring", "Filter"),
    "main_language": ("Bahasa utama", "Main language"),
    "facts": ("Fakta (wajib muncul di setiap kanal)", "Facts (every channel must carry them)"),
    "fact_what": ("Apa", "What"),
    "fact_when": ("Kapan", "When"),
    "fact_where": ("Di mana", "Where"),
    "fact_action": ("Tindakan", "Action"),
    "fact_link": ("Tautan", "Link"),
    "areas": ("Wilayah (kode, pisahkan dengan koma)", "Areas (codes, comma separated)"),
    "areas_hint": (
        "Kosongkan untuk semua pelanggan. Contoh: 31, 31.71",
        "Leave empty for every subscriber. Example: 31, 31.71",
    ),
    "send_at": ("Kirim pada", "Send at"),
    "expires_at": ("Kedaluwarsa pada", "Expires at"),
    "time_hint": (
        "Waktu setempat instansi ({tz}). Kosongkan untuk segera setelah disetujui.",
        "The agency's local time ({tz}). Leave empty to send as soon as approved.",
    ),
    "languages_hint": (
        "Isi bahasa utama; bahasa lainnya opsional dan dikirim kepada warga yang memilihnya.",
        "Fill in the main language; the other is optional and goes to citizens who chose it.",
    ),
    "edit_draft": ("Ubah draf", "Edit draft"),
    "save_changes": ("Simpan perubahan dan pratinjau", "Save changes and preview"),
    "saved": ("Perubahan disimpan.", "Changes saved."),
    "not_a_draft": (
        "Hanya draf yang dapat diubah. Draf yang ditolak kembali menjadi draf.",
        "Only a draft can be edited. A rejected announcement becomes a draft again.",
    ),
    "preview_without_saving": ("Pratinjau tanpa menyimpan", "Preview without saving"),
    "live_preview_hint": (
        "Diperbarui saat Anda mengetik; belum ada yang disimpan. Kode verifikasi di sini "
        "contoh: kode sebenarnya diberikan saat disimpan.",
        "Updated as you type; nothing is saved yet. The verification code here is a sample: "
        "the real one is given when you save.",
    ),
    "preview_waits": ("Pratinjau menunggu", "The preview waits"),
    "preview_unavailable": (
        "Pratinjau tidak tersedia (sesi berakhir?). Muat ulang halaman.",
        "The preview is unavailable (did the session end?). Reload the page.",
    ),
    "keep_gsm7": (
        "Ganti huruf khusus agar SMS tetap GSM-7 (lebih murah)",
        "Replace special letters so SMS stays GSM-7 (cheaper)",
    ),
    "save_draft": ("Simpan draf dan pratinjau", "Save draft and preview"),
    "preview": ("Pratinjau", "Preview"),
    "channel": ("Kanal", "Channel"),
    "characters": ("Karakter", "Characters"),
    "encoding": ("Pengodean", "Encoding"),
    "segments": ("Segmen SMS", "SMS segments"),
    "recipients": ("Penerima", "Recipients"),
    "estimated_cost": ("Perkiraan biaya", "Estimated cost"),
    "facts_parity": ("Kelengkapan fakta", "Facts parity"),
    "facts_ok": ("Semua fakta ada", "All facts present"),
    "facts_missing": ("Fakta hilang", "Missing facts"),
    "too_long": ("terlalu panjang", "too long"),
    "fits": ("muat", "fits"),
    "problems": ("Masalah", "Problems"),
    "total": ("Jumlah", "Total"),
    "channel_held": (
        "Kanal {channel} tertahan: penyedia menolak akun ({reason}) sejak {since} UTC. Pesan "
        "menunggu dan terkirim sendiri setelah akun diperbaiki (misalnya saldo diisi ulang); "
        "dicoba lagi {next_try} UTC.",
        "{channel} is held: the provider refuses the account ({reason}) since {since} UTC. "
        "Messages wait and go out by themselves once the account is put right (a top-up, a "
        "new key); next try {next_try} UTC.",
    ),
    "provider_balance": ("Saldo akun penyedia", "Provider account balance"),
    "call_length": ("Lama satu panggilan", "Length of one call"),
    "balance_short": (
        "tidak cukup: pengiriman berhenti saat saldo habis dan lanjut setelah diisi ulang",
        "not enough: sending stops when it runs out and goes on after a top-up",
    ),
    "submit": ("Ajukan untuk persetujuan", "Submit for approval"),
    "approve": ("Setujui dan kirim", "Approve and send"),
    "reject": ("Tolak", "Reject"),
    "reason": ("Alasan", "Reason"),
    "cancel": ("Batalkan pengumuman", "Cancel announcement"),
    "rejected_because": ("Ditolak dengan alasan", "Rejected because"),
    "broadcast": ("Pantau pengiriman", "Broadcast view"),
    "export_csv": ("Unduh pengiriman (CSV)", "Download deliveries (CSV)"),
    "public_page": ("Halaman publik", "Public page"),
    "nothing_pending": ("Tidak ada yang menunggu persetujuan.", "Nothing waits for approval."),
    "two_person": (
        "Pengumuman harus disetujui oleh orang lain selain penulisnya.",
        "An announcement must be approved by someone other than its author.",
    ),
    "action_done": ("Selesai: status sekarang", "Done: the status is now"),
    # broadcast
    "refreshing": (
        "Halaman ini diperbarui setiap {n} detik selama pengiriman.",
        "This page refreshes every {n} seconds while sending.",
    ),
    "failure_reasons": ("Penyebab kegagalan", "Failure reasons"),
    "over_time": ("Pengiriman per menit", "Deliveries per minute"),
    "over_time_hint": (
        "Diserahkan ke penyedia per menit (UTC)",
        "Handed to providers per minute (UTC)",
    ),
    "reach_by_area": ("Jangkauan per wilayah", "Reach by area"),
    "nothing_sent_yet": ("Belum ada yang terkirim.", "Nothing sent yet."),
    "cost_so_far": ("Biaya sejauh ini", "Cost so far"),
    "count": ("Jumlah", "Count"),
    "no_failures": ("Tidak ada kegagalan.", "No failures."),
    "state_queued": ("antre", "queued"),
    "state_sending": ("dikirim", "sending"),
    "state_sent": ("terkirim", "sent"),
    "state_delivered": ("diterima", "delivered"),
    "state_failed": ("gagal", "failed"),
    "state_expired": ("kedaluwarsa", "expired"),
    "state_cancelled": ("dibatalkan", "cancelled"),
    # inbox
    "thread": ("Percakapan", "Thread"),
    "citizen": ("Warga", "Citizen"),
    "last_message": ("Pesan terakhir", "Last message"),
    "messages": ("Pesan", "Messages"),
    "open": ("Terbuka", "Open"),
    "closed": ("Ditutup", "Closed"),
    "reply": ("Balas", "Reply"),
    "reply_text": ("Teks balasan", "Reply text"),
    "send_reply": ("Kirim balasan", "Send reply"),
    "close_thread": ("Tutup percakapan", "Close thread"),
    "from_citizen": ("Dari warga", "From the citizen"),
    "from_operator": ("Dari operator", "From the operator"),
    # subscribers
    "per_area": ("Per wilayah", "Per area"),
    "per_channel": ("Per kanal", "Per channel"),
    "per_language": ("Per bahasa", "Per language"),
    "area": ("Wilayah", "Area"),
    "no_area": ("(tanpa wilayah)", "(no area)"),
    "search_number": ("Cari berdasarkan nomor lengkap", "Search by full number"),
    "phone": ("Nomor telepon", "Phone number"),
    "search": ("Cari", "Search"),
    "not_found": ("Tidak ditemukan.", "Not found."),
    "opted_out": ("Berhenti berlangganan", "Opted out"),
    "masked_only": (
        "Nomor selalu ditampilkan tersamar.",
        "Numbers are always shown masked.",
    ),
    # stats
    "window": ("Rentang", "Window"),
    "days": ("hari", "days"),
    "period": ("Periode", "Period"),
    "period_from": ("Dari tanggal", "From"),
    "period_to": ("Sampai tanggal", "To"),
    "show": ("Tampilkan", "Show"),
    "period_hint": (
        "Tanggal menurut zona waktu instansi ({tz}); kedua hari ikut dihitung.",
        "Days in the agency's time zone ({tz}); both days are included.",
    ),
    "export_stats_csv": ("Unduh statistik (CSV)", "Download statistics (CSV)"),
    "reach_total": ("Warga terjangkau (semua kanal)", "Citizens reached (all channels)"),
    "reach": ("Warga terjangkau", "Citizens reached"),
    "deliveries": ("Pengiriman", "Deliveries"),
    "threads_opened": ("Percakapan dibuka", "Threads opened"),
    "threads_answered": ("Percakapan dijawab", "Threads answered"),
    "response_median": ("Waktu tanggap median (detik)", "Median response time (seconds)"),
    "response_p90": ("Waktu tanggap p90 (detik)", "p90 response time (seconds)"),
    # errors
    "error": ("Terjadi masalah", "Something went wrong"),
    "forbidden": (
        "Peran Anda tidak mengizinkan tindakan ini.",
        "Your role does not allow this.",
    ),
    "password_first": (
        "Pilih dulu kata sandi Anda sendiri (Akun → Kata sandi).",
        "Choose your own password first (Account → Password).",
    ),
    "page_not_found": ("Halaman tidak ditemukan.", "Page not found."),
    "back": ("Kembali", "Back"),
}


def translate(key: str, language: str, **values: object) -> str:
    pair = TEXT.get(key)
    if pair is None:
        return key
    text = pair[1] if language == "en" else pair[0]
    return text.format(**values) if values else text


def from_accept_language(header: str) -> str:
    """The first of our languages the browser names, by its q-values; else the default."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary == "in":  # the old code for Indonesian
            primary = "id"
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return sorted(ranked)[0][2] if ranked else DEFAULT
