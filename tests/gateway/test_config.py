"""Configuration: TOML file, WARTA_* overrides, clear problems, secrets only from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigProblem, load_config
from gateway.personal import PhoneVault

TOML = """
log_level = "DEBUG"

[database]
url = "sqlite+aiosqlite:///from-file.db"
pool_size = 4

[dispatch]
claim_batch = 100
"""
SECRET = "s3cret-value-that-must-not-leak"
DB_PASSWORD = "db-password-that-must-not-leak"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "warta.toml"
    path.write_text(TOML, encoding="utf-8")
    return path


def problem_of(path: Path | None, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigProblem) as raised:
        load_config(path, environ=environ)
    return str(raised.value)


def test_file_then_environment(config_file: Path) -> None:
    config = load_config(
        config_file,
        environ={
            "WARTA_DATABASE__URL": "postgresql+asyncpg://warta@db/warta",
            "WARTA_DISPATCH__CLAIM_BATCH": "250",
            "WARTA_DISPATCH__ENABLED": "false",
            "WARTA_HTTP__PORT": "9000",
            "WARTA_AFRICASTALKING__CALLBACK_ALLOWLIST": '["196.201.214.0/24"]',
            "WARTA_TEST_POSTGRES_URL": "ignored",
            "UNRELATED": "ignored",
        },
    )

    actual = (
        config.log_level,
        config.database.url,
        config.database.pool_size,
        config.dispatch.claim_batch,
        config.dispatch.enabled,
        config.http.port,
        config.africastalking.callback_allowlist,
    )
    assert actual == (
        "DEBUG",
        "postgresql+asyncpg://warta@db/warta",
        4,
        250,
        False,
        9000,
        ["196.201.214.0/24"],
    )


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})

    assert (config.dispatch.claim_batch, config.phone.default_region) == (500, "ID")
    assert config.secrets.phone_keys is None


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"WARTA_DISPATCH__CLAIM_BATCH": "many"}, "dispatch.claim_batch"),
        ({"WARTA_DISPATCH__CLAIM_BATCH": "0"}, "dispatch.claim_batch"),
        ({"WARTA_DATABASE__POOL_SIZE": "1000"}, "database.pool_size"),
        ({"WARTA_HTTP__PORT": "http"}, "http.port"),
        ({"WARTA_PHONE__DEFAULT_REGION": "XX"}, "phone.default_region"),
        ({"WARTA_DISPATCH__CLAIM_BACH": "5"}, "dispatch.claim_bach"),
        ({"WARTA_NOSUCH__THING": "1"}, "nosuch"),
    ],
)
def test_a_bad_value_names_its_key(config_file: Path, environ: dict[str, str], key: str) -> None:
    message = problem_of(config_file, environ | {"WARTA_SECRETS__PHONE_KEYS": SECRET})

    assert message.split(":")[0] == key
    assert SECRET not in message


def test_a_bad_value_in_the_file_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "warta.toml"
    path.write_text("[dispatch]\nclaim_batch = -1\n", encoding="utf-8")

    assert problem_of(path, {}).split(":")[0] == "dispatch.claim_batch"


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "warta.toml"
    path.write_text("[dispatch\n", encoding="utf-8")

    assert problem_of(path, {}).startswith(f"config file {path}: ")


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "warta.toml"
    path.write_text(f'[secrets]\nphone_keys = "{SECRET}"\n', encoding="utf-8")

    message = problem_of(path, {})

    assert message.startswith("secrets.phone_keys: secrets are read only from the environment")
    assert SECRET not in message


def test_secrets_from_the_environment_and_from_files(tmp_path: Path) -> None:
    phone_keys = f"{PhoneVault.generate_key()},{PhoneVault.generate_key()}"
    key_file = tmp_path / "phone_keys"
    key_file.write_text(phone_keys + "\n", encoding="utf-8")

    config = load_config(
        None,
        environ={
            "WARTA_SECRETS__PHONE_KEYS_FILE": str(key_file),
            "WARTA_SECRETS__BLIND_INDEX_KEY": SECRET,
        },
    )

    assert config.secrets.phone_keys is not None
    assert config.secrets.blind_index_key is not None
    assert config.secrets.phone_keys.get_secret_value() == phone_keys
    assert config.secrets.blind_index_key.get_secret_value() == SECRET


def test_a_missing_secret_file_is_a_problem_without_the_secret(tmp_path: Path) -> None:
    message = problem_of(
        None,
        {
            "WARTA_SECRETS__PHONE_KEYS_FILE": str(tmp_path / "nope"),
            "WARTA_SECRETS__BLIND_INDEX_KEY": SECRET,
        },
    )

    assert message.startswith("WARTA_SECRETS__PHONE_KEYS_FILE: cannot read secret file")
    assert SECRET not in message


def test_secrets_never_show_in_the_config_repr() -> None:
    config = load_config(
        None,
        environ={
            "WARTA_SECRETS__PHONE_KEYS": SECRET,
            "WARTA_SECRETS__BLIND_INDEX_KEY": SECRET + "-index",
            "WARTA_SECRETS__CALLBACK_TOKEN": SECRET + "-callback",
            "WARTA_DATABASE__URL": f"postgresql+asyncpg://warta:{DB_PASSWORD}@db:5432/warta",
        },
    )

    shown = [repr(config), str(config), repr(config.secrets), repr(config.database)]

    assert [text for text in shown if SECRET in text or DB_PASSWORD in text] == []
    assert "db:5432/warta" in repr(config.database)
    assert config.database.url.endswith(f":{DB_PASSWORD}@db:5432/warta")


def test_a_secret_that_looks_like_toml_is_taken_verbatim() -> None:
    secret = f'["{SECRET}"]'

    config = load_config(None, environ={"WARTA_SECRETS__CALLBACK_TOKEN": secret})

    assert config.secrets.callback_token is not None
    assert config.secrets.callback_token.get_secret_value() == secret


def test_an_unknown_secret_is_named_not_shown() -> None:
    message = problem_of(None, {"WARTA_SECRETS__PHONE_KEY": SECRET})

    assert message.split(":")[0] == "secrets.phone_key"
    assert SECRET not in message
