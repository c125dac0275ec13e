"""Verification codes: six unambiguous characters, normalised from what citizens type."""

from __future__ import annotations

import pytest

from gateway.codes import ALPHABET, LENGTH, new_code, normalise_code


def test_the_alphabet_has_no_look_alikes() -> None:
    assert set(ALPHABET).isdisjoint(set("0O1IL"))
    assert len(set(ALPHABET)) == len(ALPHABET) == 31


def test_new_codes_use_the_alphabet_and_differ() -> None:
    codes = [new_code() for _ in range(2000)]

    assert {len(code) for code in codes} == {LENGTH}
    assert set("".join(codes)) <= set(ALPHABET)
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ABC234", "ABC234"),
        ("abc234", "ABC234"),
        ("abc-234", "ABC234"),
        (" ab c2.34 ", "ABC234"),
        ("ABC23", None),
        ("ABC2345", None),
        ("ABC230", None),  # 0 is not in the alphabet
        ("ABCI23", None),
        ("", None),
        ("ÀBC234", None),
    ],
)
def test_normalise_code(typed: str, expected: str | None) -> None:
    assert normalise_code(typed) == expected
