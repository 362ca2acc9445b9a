"""The operator's fast settings read agrees with the full pydantic settings, or leaves the case to them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import ConfigError, KillSwitchConfig, Settings, load_settings
from engine.operator_config import (
    KILLSWITCH_KEYS,
    SETTINGS_KEYS,
    NotPlain,
    OperatorSettings,
    read_operator_settings,
)

Case = tuple[dict[str, str], str | None, dict[str, str]]  # environment, TOML, flags
PLAIN: dict[str, Case] = {
    "defaults": ({}, None, {}),
    "flag beats environment": ({"DATABASE_URL": "sqlite:///env.db"}, None, {"database_url": "sqlite:///flag.db"}),
    "DATABASE_URL beats TRADECTL_DATABASE_URL": (
        {"DATABASE_URL": "sqlite:///a.db", "TRADECTL_DATABASE_URL": "sqlite:///b.db"}, None, {}),
    "TRADECTL_DATABASE_URL alone, spaces trimmed": ({"TRADECTL_DATABASE_URL": " postgres://u@h/db "}, None, {}),
    "environment beats the file": (
        {"TRADECTL_ACCOUNT": "DU42", "TRADECTL_KILLSWITCH__ACK_TIMEOUT_S": "2.5"},
        'account = "DU7"\ndatabase_url = "sqlite:///file.db"\n[killswitch]\nack_timeout_s = 30\nheartbeat_s = 2\n',
        {}),
    "the file alone": ({}, 'account = "U1234567"\n[killswitch]\nheartbeat_s = 0.5\n[alerts]\nurls = []\n', {}),
    "flags over a file with other sections": (
        {"TRADECTL_LOG_LEVEL": "debug"}, '[paper]\nstep_ms = 10\n', {"database_url": "sqlite:///x.db"}),
}
REFUSED: dict[str, Case] = {  # the fast read leaves each to load_settings, which refuses it
    "a missing config file": ({"TRADECTL_CONFIG": "/nonexistent/tradectl.toml"}, None, {}),
    "a bad URL": ({}, None, {"database_url": "mysql://h/db"}),
    "a bad URL in the environment": ({"DATABASE_URL": "/tmp/plain/path.db"}, None, {}),
    "an unknown variable": ({"TRADECTL_ACOUNT": "DU1"}, None, {}),
    "an unknown killswitch variable": ({"TRADECTL_KILLSWITCH__ACK_TIMEOUT": "3"}, None, {}),
    "a zero timeout": ({"TRADECTL_KILLSWITCH__ACK_TIMEOUT_S": "0"}, None, {}),
    "a timeout that is not a number": ({}, '[killswitch]\nack_timeout_s = "soon"\n', {}),
    "an unknown key in the file": ({}, 'acount = "DU1"\n', {}),
    "an unknown killswitch key in the file": ({}, '[killswitch]\nack_timout_s = 5\n', {}),
    "a TOML syntax error": ({}, 'account = \n', {}),
    "an empty account": ({"TRADECTL_ACCOUNT": ""}, None, {}),
    "an account that is not text": ({}, "account = 12\n", {}),
}


def _arrange(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path | None, dict[str, str]]:
    environment, toml, flags = case
    for k in list(os.environ):
        if k.upper().startswith("TRADECTL_") or k.upper() == "DATABASE_URL":
            monkeypatch.delenv(k)
    for k, v in environment.items():
        monkeypatch.setenv(k, v)
    path = None
    if toml is not None:
        path = tmp_path / "tradectl.toml"
        path.write_text(toml)
    return path, flags


def _values(s: Settings | OperatorSettings) -> tuple[str, str, float, float]:
    return s.database_url, s.account, s.killswitch.heartbeat_s, s.killswitch.ack_timeout_s


@pytest.mark.parametrize("name", list(PLAIN))
def test_the_fast_read_gives_what_load_settings_gives(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path, flags = _arrange(PLAIN[name], tmp_path, monkeypatch)
    assert _values(read_operator_settings(path, **flags)) == _values(load_settings(path, **flags))


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_load_settings_refuses_the_fast_read_leaves_to_it(name: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, flags = _arrange(REFUSED[name], tmp_path, monkeypatch)
    with pytest.raises(ConfigError):
        load_settings(path, **flags)
    with pytest.raises(NotPlain):
        read_operator_settings(path, **flags)


def test_a_number_spelt_the_way_only_pydantic_reads_is_left_to_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, flags = _arrange(({"TRADECTL_KILLSWITCH__HEARTBEAT_S": " 2 "}, None, {}), tmp_path, monkeypatch)
    with pytest.raises(NotPlain):
        read_operator_settings(path, **flags)


def test_the_config_file_named_by_TRADECTL_CONFIG_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('account = "DU9"\n')
    _arrange(({"TRADECTL_CONFIG": str(path)}, None, {}), tmp_path, monkeypatch)
    assert read_operator_settings().account == "DU9"


def test_the_known_keys_are_the_settings_keys() -> None:
    assert set(Settings.model_fields) == SETTINGS_KEYS
    assert set(KillSwitchConfig.model_fields) == KILLSWITCH_KEYS
