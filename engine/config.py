"""Configuration: defaults < TOML file < ``TRADECTL_*`` environment < command-line flags.

Every key is declared; an unknown key or a bad value stops the start with a message naming it
(``ConfigError``), instead of trading on a default the operator did not mean.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_Strict = ConfigDict(extra="forbid")
NonNegDecimal = Annotated[Decimal, Field(ge=0)]


class ConfigError(Exception):
    """A configuration that cannot be used; the message names each offending key."""


class KellyConfig(BaseModel):
    model_config = _Strict
    fraction: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.5")
    max_fraction_of_equity: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.10")
    max_qty: Annotated[Decimal, Field(gt=0)] | None = None
    rebalance_band: Annotated[Decimal, Field(ge=0, lt=1)] = Decimal("0.10")


class LimitsOverride(BaseModel):
    model_config = _Strict
    max_order_qty: NonNegDecimal | None = None
    max_order_notional: NonNegDecimal | None = None
    max_position_qty: NonNegDecimal | None = None
    max_position_notional: NonNegDecimal | None = None
    price_collar_pct: NonNegDecimal | None = None
    max_quote_age_s: Annotated[float, Field(gt=0)] | None = None


class RiskConfig(BaseModel):
    model_config = _Strict
    max_order_qty: NonNegDecimal | None = Decimal(10_000)
    max_order_notional: NonNegDecimal | None = Decimal(1_000_000)
    max_position_qty: NonNegDecimal | None = Decimal(50_000)
    max_position_notional: NonNegDecimal | None = Decimal(5_000_000)
    price_collar_pct: NonNegDecimal | None = Decimal("0.05")
    max_quote_age_s: Annotated[float, Field(gt=0)] | None = 5.0
    per_strategy: dict[str, LimitsOverride] = Field(default_factory=dict)
    per_symbol: dict[str, LimitsOverride] = Field(default_factory=dict)


class PaperConfig(BaseModel):
    model_config = _Strict
    slippage_ticks: Annotated[int, Field(ge=0)] = 0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    commission_per_share: NonNegDecimal = Decimal("0.005")
    commission_min: NonNegDecimal = Decimal("1.00")
    commission_max_pct: NonNegDecimal = Decimal("0.01")
    step_ms: Annotated[float, Field(gt=0)] = 100.0
    step_vol_bps: Annotated[float, Field(gt=0)] = 5.0
    drain_steps: Annotated[int, Field(ge=0)] = 200


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRADECTL_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database_url: str = Field(
        default="sqlite:///var/tradectl.db",
        validation_alias=AliasChoices("database_url", "TRADECTL_DATABASE_URL", "DATABASE_URL"),
    )
    account: Annotated[str, Field(min_length=1, max_length=32)] = "DU0000001"
    equity: Annotated[Decimal, Field(gt=0)] = Decimal(1_000_000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dedupe_capacity: Annotated[int, Field(ge=1000)] = 200_000
    flush_rows: Annotated[int, Field(ge=1)] = 20_000
    flush_interval_ms: Annotated[float, Field(gt=0)] = 100.0
    kelly: KellyConfig = Field(default_factory=KellyConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _CONFIG_FILE.get("path")
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors(include_url=False):
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}'")
        else:
            lines.append(f"  - key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


_NOT_SETTINGS = {"TRADECTL_CONFIG"}


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    """TRADECTL_* variables that name no setting: a typo must not silently fall back to a default."""
    bad = []
    for name in environ:
        if not name.startswith("TRADECTL_") or name in _NOT_SETTINGS:
            continue
        path = name.removeprefix("TRADECTL_").lower().split("__")
        model: Any = Settings
        for i, part in enumerate(path):
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                bad.append(name)
                break
            annotation = fields[part].annotation
            if getattr(annotation, "__origin__", None) is dict:
                if len(path) > i + 3:
                    bad.append(name)
                break
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if model is None and i < len(path) - 1:
                bad.append(name)
                break
    return bad


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; raise ConfigError naming the bad key(s)."""
    path = config_file or (Path(p) if (p := os.environ.get("TRADECTL_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    unknown = _unknown_env_keys(dict(os.environ))
    if unknown:
        raise ConfigError("invalid configuration (environment):\n" + "\n".join(
            f"  - unknown variable '{name}'" for name in sorted(unknown)))
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        where = f"file {path}, TRADECTL_* environment, flags" if path else "TRADECTL_* environment, flags"
        raise ConfigError(_describe(err, where)) from None
    except ValueError as err:  # a TOML syntax error
        raise ConfigError(f"config file {path}: {err}") from None
    finally:
        _CONFIG_FILE["path"] = None
