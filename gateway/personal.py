"""Citizens' phone numbers: validated, encrypted at rest, found by a keyed blind index, masked.

- Normalised to E.164 with ``phonenumbers`` (the default region applies to local forms).
- Encrypted with AES-256-GCM (authenticated) from ``cryptography``. Each ciphertext starts with
  a 4-byte fingerprint of its key, so keys rotate: the first key encrypts, every configured key
  decrypts. (Fernet/MultiFernet would do the same at 13x the CPU per number; a broadcast to a
  million citizens decrypts a million numbers, so the cheaper AEAD was chosen.)
- Found by HMAC-SHA256 of the E.164 form under a separate key. A plain hash of a phone number
  is reversible by enumerating the numbering plan; a keyed one is not without the key. That
  key rotates too (``gateway.blind_rotation``): while several are configured, new rows get the
  newest key's index and every look-up matches the index under any of them.
- Shown masked (``+62 812-****-789``): enough for a citizen or operator to recognise a number,
  not enough to call it.

Nothing here puts a number into an exception message or a repr.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from phonenumbers import carrier


class InvalidPhoneNumber(ValueError):
    """A phone number that cannot be a real, dialable number. The message never repeats it."""


class KeyProblem(Exception):
    """The personal-data keys are missing or malformed."""


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A validated number; ``e164`` is personal data and is kept out of the repr."""

    e164: str = field(repr=False)
    region: str
    # Filled in by ``normalise``, which has the number parsed already; parsing again to mask
    # costs as much as validating, which shows on a 100,000-row import.
    masked: str = field(default="", repr=False, compare=False)
    # The mobile network the number was issued to (prices may differ per network); "" unknown.
    network: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.masked or mask(self.e164)


def normalise(raw: str, default_region: str) -> PhoneNumber:
    """Parse ``raw`` (local or international form) into a valid E.164 number.

    Raises:
        InvalidPhoneNumber: when it is not a valid number for any region.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("phone number is empty")
    if len(raw) > 40:
        raise InvalidPhoneNumber("phone number is too long")
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
    region = phonenumbers.region_code_for_number(parsed) or default_region
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    masked = _mask_parts(str(parsed.country_code), str(parsed.national_number))
    network = carrier.name_for_number(parsed, "en") or ""
    return PhoneNumber(e164=e164, region=region, masked=masked, network=network)


def mask(e164: str) -> str:
    """``+6281234567789`` -> ``+62 812-****-789``: country code, operator prefix, last three."""
    try:
        parsed = phonenumbers.parse(e164, None)
        country = str(parsed.country_code)
        national = str(parsed.national_number)
    except phonenumbers.NumberParseException:
        return "****"
    return _mask_parts(country, national)


def _mask_parts(country: str, national: str) -> str:
    if len(national) < 7:
        return f"+{country} ****"
    return f"+{country} {national[:3]}-****-{national[-3:]}"


_NONCE = 12
_FINGERPRINT = 4


def _fingerprint(key: bytes) -> bytes:
    return hashlib.sha256(b"warta-phone-key" + key).digest()[:_FINGERPRINT]


def _decode_key(text: str, what: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (ValueError, TypeError):
        raise KeyProblem(f"{what} must be url-safe base64") from None
    if len(key) != 32:
        raise KeyProblem(f"{what} must decode to 32 bytes")
    return key


class PhoneVault:
    """Encrypts, decrypts and indexes phone numbers under the configured keys.

    Args:
        encryption_keys: 32-byte AES keys, newest first; the first encrypts.
        index_key: 32-byte secret for the blind index, or several, newest first: the first
            indexes new rows, every one is matched in look-ups (during a rotation).
    """

    __slots__ = ("_ciphers", "_current", "_index_keys")

    def __init__(self, encryption_keys: list[bytes], index_key: bytes | Sequence[bytes]) -> None:
        index_keys = [index_key] if isinstance(index_key, bytes) else list(index_key)
        if not encryption_keys:
            raise KeyProblem("no phone encryption key configured")
        if not index_keys:
            raise KeyProblem("no blind index key configured")
        if any(len(key) != 32 for key in [*encryption_keys, *index_keys]):
            raise KeyProblem("phone encryption and blind index keys must be 32 bytes")
        self._ciphers = {_fingerprint(key): AESGCM(key) for key in encryption_keys}
        self._current = _fingerprint(encryption_keys[0])
        self._index_keys = tuple(dict.fromkeys(index_keys))

    @classmethod
    def from_secrets(cls, phone_keys: str, blind_index_key: str) -> PhoneVault:
        """Build from the environment's text forms: comma-separated base64 keys, newest first
        (for the phone keys and for the blind index keys alike)."""
        keys = [_decode_key(k, "phone encryption key") for k in phone_keys.split(",") if k.strip()]
        index_keys = [
            _decode_key(k, "blind index key") for k in blind_index_key.split(",") if k.strip()
        ]
        return cls(keys, index_keys)

    @staticmethod
    def generate_key() -> str:
        """A fresh key in the text form the environment takes."""
        return base64.urlsafe_b64encode(os.urandom(32)).decode()

    def encrypt(self, number: PhoneNumber | str) -> bytes:
        e164 = number.e164 if isinstance(number, PhoneNumber) else number
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self._current].encrypt(nonce, e164.encode(), None)
        return self._current + nonce + sealed

    def decrypt(self, ciphertext: bytes) -> str:
        cipher = self._ciphers.get(bytes(ciphertext[:_FINGERPRINT]))
        if cipher is None:
            raise KeyProblem("a phone number was encrypted with a key that is not configured")
        start = _FINGERPRINT + _NONCE
        try:
            plain = cipher.decrypt(
                bytes(ciphertext[_FINGERPRINT:start]), bytes(ciphertext[start:]), None
            )
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and tag
            raise KeyProblem("a stored phone number failed its integrity check") from None
        return plain.decode()

    def decrypt_many(self, ciphertexts: Sequence[bytes | None]) -> list[str | None]:
        """``decrypt`` over a batch, in order; None stays None. Raises as ``decrypt`` does."""
        ciphers = self._ciphers
        start = _FINGERPRINT + _NONCE
        numbers: list[str | None] = []
        for ciphertext in ciphertexts:
            if ciphertext is None:
                numbers.append(None)
                continue
            sealed = bytes(ciphertext)
            cipher = ciphers.get(sealed[:_FINGERPRINT])
            if cipher is None:
                raise KeyProblem("a phone number was encrypted with a key that is not configured")
            try:
                plain = cipher.decrypt(sealed[_FINGERPRINT:start], sealed[start:], None)
            except (InvalidTag, ValueError):
                raise KeyProblem("a stored phone number failed its integrity check") from None
            numbers.append(plain.decode())
        return numbers

    @property
    def current_fingerprint(self) -> bytes:
        """The prefix of every ciphertext made under the newest key (not secret)."""
        return self._current

    def reencrypt(self, ciphertext: bytes) -> bytes:
        """The same number under the newest key (key rotation); the number never leaves."""
        if self.is_current(ciphertext):
            return ciphertext
        return self.encrypt(self.decrypt(ciphertext))

    def is_current(self, ciphertext: bytes) -> bool:
        """Whether ``ciphertext`` is under the newest key (rotation re-encrypts the rest)."""
        return bytes(ciphertext[:_FINGERPRINT]) == self._current

    def blind_index(self, number: PhoneNumber | str) -> str:
        """The index new rows are written with (under the newest blind index key)."""
        e164 = number.e164 if isinstance(number, PhoneNumber) else number
        return hmac.new(self._index_keys[0], e164.encode(), hashlib.sha256).hexdigest()

    def blind_indexes(self, number: PhoneNumber | str) -> tuple[str, ...]:
        """The index under every configured key, newest first: what a look-up matches."""
        e164 = (number.e164 if isinstance(number, PhoneNumber) else number).encode()
        return tuple(hmac.new(k, e164, hashlib.sha256).hexdigest() for k in self._index_keys)

    @property
    def index_keys_in_use(self) -> int:
        """How many blind index keys are configured (more than one while rotating)."""
        return len(self._index_keys)

    def __repr__(self) -> str:
        return f"<PhoneVault keys={len(self._ciphers)} index_keys={len(self._index_keys)}>"
