"""Personal data: normalised, masked, encrypted with rotation, blind-indexed, never shown."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.auth import IssuedToken
from gateway.personal import (
    InvalidPhoneNumber,
    KeyProblem,
    PhoneNumber,
    PhoneVault,
    mask,
    normalise,
)

NUMBER = "+6281234567890"
FORMS = ["081234567890", "0812-3456-7890", "+62 812 3456 7890", "(0812) 3456 7890", NUMBER]


def vault_pair() -> tuple[PhoneVault, str, str]:
    key, index_key = PhoneVault.generate_key(), PhoneVault.generate_key()
    return PhoneVault.from_secrets(key, index_key), key, index_key


@pytest.mark.parametrize("written", FORMS)
def test_normalise_local_and_international_forms(written: str) -> None:
    number = normalise(written, "ID")

    assert (number.e164, number.region) == (NUMBER, "ID")


@pytest.mark.parametrize(
    ("written", "region", "expected"),
    [
        ("0712 345678", "KE", "+254712345678"),
        ("+254 712 345678", "ID", "+254712345678"),
        ("+1 202-555-0143", "ID", "+12025550143"),
    ],
)
def test_normalise_other_countries(written: str, region: str, expected: str) -> None:
    assert normalise(written, region).e164 == expected


@pytest.mark.parametrize(
    "written", ["", "   ", "12", "0812-34", "call me", "+62 000 0000 0000", "0" * 41]
)
def test_invalid_numbers_are_refused_without_repeating_them(written: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as raised:
        normalise(written, "ID")

    assert written.strip() == "" or written not in str(raised.value)


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        (NUMBER, "+62 812-****-890"),
        ("+254712345678", "+254 712-****-678"),
        ("+12025550143", "+1 202-****-143"),
        ("nonsense", "****"),
    ],
)
def test_mask(e164: str, expected: str) -> None:
    assert mask(e164) == expected


def test_normalised_numbers_carry_their_mask() -> None:
    number = normalise("0812-3456-7890", "ID")

    assert str(number) == mask(NUMBER) == "+62 812-****-890"
    assert str(PhoneNumber(e164=NUMBER, region="ID")) == "+62 812-****-890"


def test_encrypt_then_decrypt() -> None:
    vault, _, _ = vault_pair()
    number = normalise(NUMBER, "ID")

    first, second = vault.encrypt(number), vault.encrypt(number)

    assert vault.decrypt(first) == vault.decrypt(second) == NUMBER
    assert first != second  # a fresh nonce each time
    assert NUMBER.encode() not in first and NUMBER[1:].encode() not in first
    assert vault.is_current(first)


def test_the_blind_index_is_a_keyed_hmac() -> None:
    vault, _, index_key = vault_pair()
    other, _, _ = vault_pair()

    index = vault.blind_index(normalise("0812-3456-7890", "ID"))

    expected = hmac.new(
        base64.urlsafe_b64decode(index_key), NUMBER.encode(), hashlib.sha256
    ).hexdigest()
    assert index == expected == vault.blind_index(NUMBER)
    assert index != hashlib.sha256(NUMBER.encode()).hexdigest()
    assert index != other.blind_index(NUMBER)


def test_key_rotation_new_key_first_old_still_decrypts() -> None:
    old_key, index_key = PhoneVault.generate_key(), PhoneVault.generate_key()
    new_key = PhoneVault.generate_key()
    before = PhoneVault.from_secrets(old_key, index_key)
    after = PhoneVault.from_secrets(f"{new_key}, {old_key}", index_key)
    old_ciphertext = before.encrypt(NUMBER)

    new_ciphertext = after.encrypt(NUMBER)

    assert after.decrypt(old_ciphertext) == after.decrypt(new_ciphertext) == NUMBER
    assert (after.is_current(old_ciphertext), after.is_current(new_ciphertext)) == (False, True)
    assert before.blind_index(NUMBER) == after.blind_index(NUMBER)
    with pytest.raises(KeyProblem):
        before.decrypt(new_ciphertext)


def tampered(ciphertext: bytes) -> list[bytes]:
    flipped_body = bytearray(ciphertext)
    flipped_body[-1] ^= 0x01
    flipped_nonce = bytearray(ciphertext)
    flipped_nonce[5] ^= 0x80
    return [
        bytes(flipped_body),
        bytes(flipped_nonce),
        ciphertext[:20],
        ciphertext[:6],
        ciphertext[:2],
        b"",
    ]


def test_a_tampered_ciphertext_raises_keyproblem_without_the_number() -> None:
    vault, _, _ = vault_pair()
    ciphertext = vault.encrypt(NUMBER)

    messages = []
    for bad in tampered(ciphertext):
        with pytest.raises(KeyProblem) as raised:
            vault.decrypt(bad)
        messages.append(str(raised.value))

    assert [m for m in messages if NUMBER[3:] in m] == []


@pytest.mark.parametrize(
    ("phone_keys", "index_key"),
    [
        ("", PhoneVault.generate_key()),
        ("not base64!!", PhoneVault.generate_key()),
        (base64.urlsafe_b64encode(b"short").decode(), PhoneVault.generate_key()),
        (PhoneVault.generate_key(), "bad"),
    ],
    # Fixed ids: the generated keys differ per collection (and per pytest-xdist worker).
    ids=["empty phone key", "phone key not base64", "phone key too short", "bad index key"],
)
def test_bad_keys_are_a_keyproblem_without_the_key(phone_keys: str, index_key: str) -> None:
    with pytest.raises(KeyProblem) as raised:
        PhoneVault.from_secrets(phone_keys, index_key)

    assert phone_keys in ("",) or phone_keys not in str(raised.value)
    assert index_key not in str(raised.value)


def test_reprs_hide_numbers_keys_and_tokens() -> None:
    key, index_key = PhoneVault.generate_key(), PhoneVault.generate_key()
    vault = PhoneVault.from_secrets(key, index_key)
    number = normalise("0812-3456-7890", "ID")
    token = IssuedToken(id=7, token="wrt_" + "s" * 43, prefix="wrt_ssssss")

    shown = [repr(number), str(number), repr(vault), str(vault), repr(token), str(token)]

    secrets = [NUMBER, NUMBER[1:], "081234567890", key, index_key, token.token]
    assert [(text, s) for text in shown for s in secrets if s in text] == []
    assert repr(token) == "IssuedToken(id=7, prefix='wrt_ssssss')"
