"""The few settings the operator's fast commands read (kill, reduce-only, resume, status, killswitch list),
without pydantic.

``engine.config`` builds the full ``Settings`` with pydantic-settings, ~65 ms of imports and validation
that `tradectl kill` (250 ms from typed to acknowledged) cannot spend. This reads the same sources in the
same order (flags > ``TRADECTL_*`` / ``DATABASE_URL`` environment > the TOML file of ``--config`` or
``TRADECTL_CONFIG`` > defaults) for the keys these commands use, and validates them by the same rules.
Anything it does not read plainly (an unknown or oddly spelled key, a value of the wrong type, a value out
of bounds, a TOML syntax error) raises ``NotPlain``, and the CLI asks ``load_settings``, so the operator
gets its error message word for word, or its values when it finds them fine. Keys of sections these
commands do not read are not checked here: an emergency halt must not refuse over a typo in ``[alerts]``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Settings' top-level keys and [killswitch]'s; tests/unit/test_operator_config.py keeps them equal to the models.
SETTINGS_KEYS = frozenset({
    "database_url", "account", "equity", "log_format", "log_level", "dedupe_capacity", "flush_rows",
    "flush_interval_ms", "kelly", "risk", "paper", "triggers", "day", "killswitch", "ibkr", "http", "signal_time",
    "alerts", "maintenance", "report",
})
KILLSWITCH_KEYS = frozenset({"poll_ms", "heartbeat_s", "ack_timeout_s", "flatten_collar_pct", "reconcile_interval_s"})
DEFAULT_DATABASE_URL = "sqlite:///var/tradectl.db"
DEFAULT_ACCOUNT = "DU0000001"
_URL = re.compile(r"^(sqlite|postgres|postgresql|postgresql\+psycopg)://")  # Settings._database_url's rule
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class KillSwitchTimes:
    heartbeat_s: float = 1.0  # how often a running engine says it is alive
    ack_timeout_s: float = 10.0  # how long kill waits for the engine

    @property
    def stale_after_s(self) -> float:
        """As ``KillSwitchConfig.stale_after_s``: a heartbeat older than this means the engine is not applying
        changes (gone, or hung)."""
        return max(5 * self.heartbeat_s, 3.0)


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """``Settings``' values for the operator's commands, under the same names."""

    database_url: str
    account: str
    killswitch: KillSwitchTimes


class NotPlain(Exception):
    """Something this reader leaves to ``engine.config.load_settings``: its values, or its error word for word."""


def read_operator_settings(config_file: Path | None = None, *, database_url: str | None = None,
                           account: str | None = None) -> OperatorSettings:
    """The operator's settings, or NotPlain when only ``load_settings`` can tell (the caller then asks it)."""
    path = config_file or (Path(p) if (p := os.environ.get("TRADECTL_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise NotPlain  # load_settings names the missing file
    env = _environment()
    toml = _toml(path) if path is not None else {}
    toml_ks = toml.get("killswitch", {})
    if not isinstance(toml_ks, dict) or not set(toml_ks) <= KILLSWITCH_KEYS:
        raise NotPlain

    def pick(flag: Any, env_names: tuple[str, ...], toml_value: Any, default: Any) -> Any:
        if flag is not None:
            return flag
        for name in env_names:
            if name in env:
                return env[name]
        return default if toml_value is None else toml_value

    url = pick(database_url, ("DATABASE_URL", "TRADECTL_DATABASE_URL"), toml.get("database_url"),
               DEFAULT_DATABASE_URL)
    who = pick(account, ("TRADECTL_ACCOUNT",), toml.get("account"), DEFAULT_ACCOUNT)
    if not isinstance(url, str) or not _URL.match(url.strip()):
        raise NotPlain
    if not isinstance(who, str) or not 1 <= len(who) <= 32:
        raise NotPlain
    times = KillSwitchTimes(
        heartbeat_s=_positive(pick(None, ("TRADECTL_KILLSWITCH__HEARTBEAT_S",), toml_ks.get("heartbeat_s"), 1.0)),
        ack_timeout_s=_positive(pick(None, ("TRADECTL_KILLSWITCH__ACK_TIMEOUT_S",), toml_ks.get("ack_timeout_s"),
                                     10.0)),
    )
    return OperatorSettings(url.strip(), who, times)


def _environment() -> dict[str, str]:
    """The ``TRADECTL_*`` and ``DATABASE_URL`` variables, when each names a setting the plain way.

    pydantic-settings matches names in any case and takes whole sections as JSON: those go to it."""
    out: dict[str, str] = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if upper == "TRADECTL_CONFIG":
            continue
        if upper in ("DATABASE_URL", "TRADECTL_DATABASE_URL") or upper.startswith("TRADECTL_"):
            if name != upper:
                raise NotPlain
            parts = upper.removeprefix("TRADECTL_").lower().split("__") if upper != "DATABASE_URL" else ["database_url"]
            if parts[0] not in SETTINGS_KEYS:
                raise NotPlain  # an unknown variable: load_settings names it
            if parts[0] == "killswitch" and (len(parts) != 2 or parts[1] not in KILLSWITCH_KEYS):
                raise NotPlain
            out[upper] = value
    return out


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        raise NotPlain from None
    if not set(data) <= SETTINGS_KEYS:
        raise NotPlain
    return data


def _positive(value: Any) -> float:
    """A float above zero: a TOML number, or the plain decimal text of one (any other spelling goes to pydantic)."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotPlain
    number = float(value)
    if math.isnan(number) or number <= 0:
        raise NotPlain
    return number
