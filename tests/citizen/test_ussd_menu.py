"""The pure USSD menu with an in-memory directory: conventions, replays, limits, properties."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.citizen.menu import MAX_INPUTS
from gateway.citizen.ports import Bulletin, Caller
from gateway.citizen.screens import MAX_SCREEN, MIN_SCREEN
from gateway.citizen.ussd import respond, split_history
from gateway.personal import normalise
from tests.citizen.memory import MemoryDirectory, Posted

CALLER = Caller(normalise("+6281200000001", "ID"))
WHEN = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def directory() -> MemoryDirectory:
    posted = [
        Posted(Bulletin(f"Kabar {n}", "Isi kabar. " * 40, f"AB{n}DEF", WHEN)) for n in range(2, 9)
    ]
    posted.append(Posted(Bulletin("Gempa 🌋 ü " * 30, "ünïcödé\x00\x07 " * 200, "ZZZ999", None)))
    return MemoryDirectory(agency_name="Badan Penanggulangan Bencana Daerah " * 3, posted=posted)


def ask(history: list[str], found: MemoryDirectory, size: int = 160, language: str = "id") -> str:
    return asyncio.run(respond(history, CALLER, found, screen_size=size, language=language))


def test_split_history_follows_africas_talking() -> None:
    assert split_history("") == []
    assert split_history("1") == ["1"]
    assert split_history("1**2") == ["1", "", "2"]


def test_zero_is_back_and_double_zero_is_home() -> None:
    found = directory()
    home = ask([], found)
    assert ask(["0"], found) == home
    assert ask(["1", "0"], found) == home
    assert ask(["1", "9", "0"], found) == ask(["1"], found)
    assert ask(["1", "1", "9", "9", "00"], found) == home
    assert ask(["3", "3171", "2", "0", "0"], found) == ask(["3"], found)


def test_invalid_input_shows_the_same_screen_with_a_note() -> None:
    found = directory()
    for junk in ["7", "", "abc", "1" * 70, "٣", "01"]:
        assert ask([junk], found).startswith("CON Pilihan salah.\n")
    assert ask(["3", "12345"], found).startswith("CON Kode wilayah salah.\n")


def test_effects_happen_only_for_the_last_input() -> None:
    found = directory()
    assert ask(["3", "1", "1", "1", "1", "0"], found).startswith("END Sesi sudah selesai.")
    assert found.people == {}
    assert ask(["3", "1", "1", "1", "1"], found).startswith("END Terima kasih")
    assert ask(["3", "1", "1", "1", "1"], found).startswith("END Terima kasih")
    assert found.consents == [found.consents[0]] * 2
    assert [p.channels for p in found.people.values()] == [("sms",)]


def test_language_chosen_in_the_history_carries_through_the_session() -> None:
    found = directory()
    assert ask(["5", "2", "2"], found).startswith("CON Enter the verification code")
    assert found.people == {}
    assert ask([], found).startswith("CON Badan")


def test_overlong_histories_end_politely() -> None:
    found = directory()
    assert ask(["9"] * (MAX_INPUTS + 1), found).startswith("END Sesi terlalu panjang.")
    assert ask(["x" * 600, "y" * 600], found).startswith("END Sesi terlalu panjang.")


@pytest.mark.parametrize("size", [MIN_SCREEN - 1, MAX_SCREEN + 1])
def test_screen_sizes_out_of_range_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="screen size"):
        ask([], directory(), size=size)


@pytest.mark.parametrize("language", ["id", "en"])
@pytest.mark.parametrize(
    "history", [[], ["1"], ["2"], ["3"], ["3", "1"], ["3", "1", "1"], ["3", "1", "1", "3"], ["5"]]
)
def test_menus_fit_whole_on_the_smallest_screen(history: list[str], language: str) -> None:
    shown = ask(
        ["7", *history] if not history else [*history, "7"], directory(), MIN_SCREEN, language
    )
    assert len(shown) <= MIN_SCREEN
    assert not shown.endswith(".."), shown


INPUTS = st.one_of(
    st.sampled_from(["", "0", "00", "1", "2", "3", "4", "5", "9", "3171", "AB2DEF", "ZZZ999"]),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.text(max_size=80),
    st.text(alphabet="0123456789*#", max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(INPUTS, max_size=60),
    size=st.integers(min_value=MIN_SCREEN, max_value=MAX_SCREEN),
    language=st.sampled_from(["id", "en", "fr", ""]),
    subscribed=st.booleans(),
)
def test_every_history_gets_one_valid_screen(
    history: list[str], size: int, language: str, subscribed: bool
) -> None:
    found = directory()
    if subscribed:
        ask(["3", "3171", "1", "3", "1"], found)
    shown = ask(history, found, size, language)
    assert shown.startswith(("CON ", "END "))
    assert len(shown) <= size
