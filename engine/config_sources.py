"""Where each effective setting came from: default < config file < ``TRADECTL_*`` environment < flag.

``tradectl config show`` prints this, so an operator can see why the engine trades on a value before it
does. Secrets never leave: SecretStr fields, apprise URLs (they carry tokens) and database passwords are
redacted.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.config import load_settings


class Origin(StrEnum):
    DEFAULT = "default"
    FILE = "config file"
    ENVIRONMENT = "environment"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted: ``risk.max_order_qty``
    value: Any  # JSON-ready; secrets redacted
    origin: Origin
    where: str | None = None  # the file, the variable or the flag that set it

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "origin": self.origin.value, "where": self.where}


REDACTED = "<redacted>"
_SECRET_KEYS = ("secret", "password", "token")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]+:)[^@]+@")
_URL_LISTS = frozenset({"alerts.urls"})  # apprise URLs carry their service's token


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys; an empty mapping or a list is one leaf."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _redact(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _URL_LISTS and isinstance(value, list):
        return [REDACTED for _ in value]
    if any(word in key.rsplit(".", 1)[-1] for word in _SECRET_KEYS) and not key.endswith("_file"):
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return _PASSWORD_IN_URL.sub(r"\1***@", value)
    return value


def _environment_keys() -> dict[str, str]:
    """Dotted key prefixes set by the environment, with the variable that set each."""
    keys: dict[str, str] = {}
    if "DATABASE_URL" in os.environ:
        keys["database_url"] = "DATABASE_URL"
    for name in os.environ:
        if name.startswith("TRADECTL_") and name != "TRADECTL_CONFIG":
            keys[".".join(name.removeprefix("TRADECTL_").lower().split("__"))] = name
    return keys


def _set_by(key: str, sources: dict[str, str]) -> str | None:
    """The source entry that sets ``key``: the key itself or a section above it."""
    for prefix, where in sources.items():
        if key == prefix or key.startswith(prefix + "."):
            return where
    return None


def config_file_path(config_file: Path | None) -> tuple[Path | None, str | None]:
    """The config file in use and what named it (``--config`` or ``TRADECTL_CONFIG``)."""
    if config_file is not None:
        return config_file, "--config"
    env = os.environ.get("TRADECTL_CONFIG")
    return (Path(env), "TRADECTL_CONFIG") if env else (None, None)


def effective_settings(config_file: Path | None, flags: dict[str, tuple[Any, str]]) -> list[Setting]:
    """Every setting's effective value and origin. ``flags``: setting -> (value, the flag that gave it); None
    values are flags not given. Raises ConfigError like any command would on a bad configuration."""
    given = {k: v for k, (v, _) in flags.items() if v is not None}
    settings = load_settings(config_file, **given)
    path, _ = config_file_path(config_file)
    from_file: dict[str, str] = {}
    if path is not None:
        with path.open("rb") as fh:
            from_file = {k: str(path) for k in _leaves(tomllib.load(fh))}
    from_env = _environment_keys()
    from_flags = {k: flag for k, (v, flag) in flags.items() if v is not None}
    layers = ((Origin.FLAG, from_flags), (Origin.ENVIRONMENT, from_env), (Origin.FILE, from_file))  # first wins
    out = []
    for key, value in _leaves(settings.model_dump(mode="json")).items():
        found = next(((o, w) for o, source in layers if (w := _set_by(key, source)) is not None),
                     (Origin.DEFAULT, None))
        out.append(Setting(key, _redact(key, value), *found))
    return out
