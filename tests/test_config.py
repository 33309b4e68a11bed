"""The frozen config: sources, precedence, validation messages."""

from __future__ import annotations

import dataclasses

import pytest

from locshare._config import Config, settings_table_markdown
from locshare.errors import ConfigError


def test_defaults() -> None:
    config = Config.load(environ={})
    assert (config.port, config.ws_port, config.location_ttl_s, config.flush_interval_ms) == (
        8080,
        8081,
        30.0,
        100,
    )
    assert config.gc_tuning is True
    assert (config.flush_interval_s, config.flush_interval_max_s) == (0.1, 0.25)
    assert config.public_base_url() == "http://localhost:8080"
    assert config.public_websocket_url() == "ws://localhost:8081/ws"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_environment_and_overrides() -> None:
    env = {
        "LOCSHARE_PORT": "9000",
        "LOCSHARE_GC_TUNING": "off",
        "LOCSHARE_LOG_LEVEL": "debug",
        "LOCSHARE_PUBLIC_URL": "https://share.example.org/",
    }
    config = Config.load({"port": "9100"}, environ=env)
    assert config.port == 9100  # command line wins
    assert config.gc_tuning is False
    assert config.log_level == "DEBUG"
    assert config.public_base_url() == "https://share.example.org"
    assert config.public_websocket_url() == "wss://share.example.org:8081/ws"


def test_a_flush_interval_above_the_adaptive_maximum_fixes_the_window() -> None:
    config = Config.load(environ={"LOCSHARE_FLUSH_INTERVAL_MS": "400"})
    assert (config.flush_interval_s, config.flush_interval_max_s) == (0.4, 0.4)
    config = Config.load(environ={"LOCSHARE_FLUSH_INTERVAL_MAX_MS": "100"})
    assert (config.flush_interval_s, config.flush_interval_max_s) == (0.1, 0.1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOCSHARE_PORT": "eighty"}, "LOCSHARE_PORT (--port)='eighty' is not an integer"),
        ({"LOCSHARE_PORT": "70000"}, "above the maximum"),
        ({"LOCSHARE_LOCATION_TTL_S": "0"}, "below the minimum"),
        ({"LOCSHARE_LOCATION_TTL_S": "nan"}, "is not a number"),
        ({"LOCSHARE_GC_TUNING": "maybe"}, "true or false"),
        ({"LOCSHARE_LOG_FORMAT": "xml"}, "must be one of text, json"),
        ({"LOCSHARE_DATABASE_URL": "mysql://x"}, "LOCSHARE_DATABASE_URL (--database-url)='***'"),
        ({"LOCSHARE_PUBLIC_URL": "ftp://x"}, "not a valid URL"),
        ({"LOCSHARE_JWT_SECRET": "short"}, "at least 32"),
        ({"LOCSHARE_TILE_URL": "https://t/{z}.png"}, "{x}"),
        ({"LOCSHARE_PORT": "9000", "LOCSHARE_WS_PORT": "9000"}, "must differ"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        Config.load(environ=env)
    assert message in str(info.value)
    # Both ways to set it are named, whichever was used.
    for variable in env:
        if variable in str(info.value):
            option = "--" + variable.removeprefix("LOCSHARE_").lower().replace("_", "-")
            assert option in str(info.value)


def test_a_bad_option_names_the_variable_too() -> None:
    with pytest.raises(ConfigError, match=None) as info:
        Config.load({"port": "eighty"}, environ={})
    assert "LOCSHARE_PORT (--port)='eighty' is not an integer" in str(info.value)


def test_unknown_override() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        Config.load({"colour": "blue"}, environ={})


def test_secrets_are_masked_in_summaries() -> None:
    config = Config.load(
        environ={"LOCSHARE_JWT_SECRET": "s" * 40, "LOCSHARE_DATABASE_URL": "postgresql://u:pw@h/db"}
    )
    summary = config.safe_summary()
    assert summary["jwt_secret"] == "***" and summary["database_url"] == "***"


def test_settings_table_lists_every_field() -> None:
    table = settings_table_markdown()
    for f in dataclasses.fields(Config):
        assert f"`LOCSHARE_{f.name.upper()}`" in table
