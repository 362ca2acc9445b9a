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

from risk.checks import Limits
from risk.triggers import TriggerLimits

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


_LIM = Limits()
_TRIG = TriggerLimits()
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


class LimitsOverride(BaseModel):
    """Per-strategy or per-symbol overrides of the account's pre-trade limits (unset = the account's)."""

    model_config = _Strict
    max_order_qty: NonNegDecimal | None = None
    max_order_notional: NonNegDecimal | None = None
    max_position_qty: NonNegDecimal | None = None
    max_position_notional: NonNegDecimal | None = None
    max_gross_exposure: NonNegDecimal | None = None
    max_net_exposure: NonNegDecimal | None = None
    max_leverage: NonNegDecimal | None = None
    max_daily_loss: NonNegDecimal | None = None
    price_collar_pct: NonNegDecimal | None = None
    price_collar_ticks: PosInt | None = None
    max_quote_age_s: PosFloat | None = None
    max_orders_per_s: PosInt | None = None
    max_symbol_orders_per_s: PosInt | None = None
    duplicate_window_s: PosFloat | None = None
    prevent_self_cross: bool | None = None


class RiskConfig(BaseModel):
    """Account pre-trade limits (defaults from ``risk.checks.Limits``); null switches a limit off."""

    model_config = _Strict
    max_order_qty: NonNegDecimal | None = _LIM.max_order_qty
    max_order_notional: NonNegDecimal | None = _LIM.max_order_notional
    max_position_qty: NonNegDecimal | None = _LIM.max_position_qty
    max_position_notional: NonNegDecimal | None = _LIM.max_position_notional
    max_gross_exposure: NonNegDecimal | None = _LIM.max_gross_exposure
    max_net_exposure: NonNegDecimal | None = _LIM.max_net_exposure
    max_leverage: NonNegDecimal | None = _LIM.max_leverage
    max_daily_loss: NonNegDecimal | None = _LIM.max_daily_loss
    price_collar_pct: NonNegDecimal | None = _LIM.price_collar_pct
    price_collar_ticks: PosInt | None = _LIM.price_collar_ticks
    max_quote_age_s: PosFloat | None = _LIM.max_quote_age_s
    max_orders_per_s: PosInt | None = _LIM.max_orders_per_s
    max_symbol_orders_per_s: PosInt | None = _LIM.max_symbol_orders_per_s
    duplicate_window_s: PosFloat | None = _LIM.duplicate_window_s
    prevent_self_cross: bool = _LIM.prevent_self_cross
    per_strategy: dict[str, LimitsOverride] = Field(default_factory=dict)
    per_symbol: dict[str, LimitsOverride] = Field(default_factory=dict)


class TriggersConfig(BaseModel):
    """Automatic kill-switch triggers (defaults from ``risk.triggers.TriggerLimits``); null/false = off."""

    model_config = _Strict
    daily_loss: NonNegDecimal | None = _TRIG.daily_loss
    drawdown: NonNegDecimal | None = _TRIG.drawdown
    reject_burst: PosInt | None = _TRIG.reject_burst
    reject_window_s: PosFloat = _TRIG.reject_window_s
    rate_breach_burst: PosInt | None = _TRIG.rate_breach_burst
    rate_breach_window_s: PosFloat = _TRIG.rate_breach_window_s
    disconnect_timeout_s: PosFloat | None = _TRIG.disconnect_timeout_s
    reconciliation_mismatch: bool = _TRIG.reconciliation_mismatch
    unknown_fill: bool = _TRIG.unknown_fill


class KillSwitchConfig(BaseModel):
    model_config = _Strict
    poll_ms: Annotated[float, Field(gt=0, le=250)] = 50.0  # SQLite; PostgreSQL is woken by NOTIFY
    heartbeat_s: PosFloat = 1.0  # how often a running engine says it is alive (the CLI checks it)
    ack_timeout_s: PosFloat = 10.0  # how long `tradectl kill` waits for the engine
    flatten_collar_pct: Annotated[Decimal, Field(gt=0, lt=Decimal("0.5"))] = Decimal("0.01")
    reconcile_interval_s: PosFloat = 60.0


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


class IbkrConfig(BaseModel):
    """TWS / IB Gateway connection (flags of ``tradectl run`` override host, port and client id)."""

    model_config = _Strict
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None  # None: IB's default for gateway/tws, paper/live
    client_id: Annotated[int, Field(ge=0)] = 1
    pacing_per_s: PosInt | None = 45  # order messages a second (IB disconnects above 50); null = off
    connect_timeout_s: PosFloat = 10.0
    quote_wait_s: PosFloat = 5.0  # how long a new symbol's first quote is awaited
    drain_s: Annotated[float, Field(ge=0)] = 5.0  # at the end of input: time for working orders to finish
    on_stop: Literal["leave", "cancel"] = "leave"  # SIGTERM / Ctrl-C: what happens to working orders
    commit_every: PosInt = 1  # rows per database commit (1: each signal on disk before it is acted on)


AlertMode = Literal["on", "silent", "off"]


class AlertEventsConfig(BaseModel):
    """Each notification on, silent (delivered without a sound where the service allows) or off."""

    model_config = _Strict
    killswitch: AlertMode = "on"  # an automatic trigger tripped a kill switch
    operator_change: AlertMode = "on"  # an operator changed a kill switch (kill, resume)
    disconnect: AlertMode = "on"  # the broker link down longer than disconnect_after_s (and back)
    reconciliation_break: AlertMode = "on"  # a position differs from the broker's: the symbol halted
    database_outage: AlertMode = "on"  # writes failing (no new orders until they succeed)
    blocked: AlertMode = "on"  # the engine refuses new orders for a reason outside the kill switches
    login_needed: AlertMode = "on"  # the gateway unreachable past login_after_s: a login or 2FA is waiting
    daily_digest: AlertMode = "silent"  # P&L, fills, rejects and equity once a day


class AlertsConfig(BaseModel):
    """Notifications through apprise URLs (Telegram ``tgram://``, Slack ``slack://``, email ``mailto://``, any
    webhook ``json://``). Sent from a background thread: a slow or failing service never touches trading."""

    model_config = _Strict
    urls: list[str] = Field(default_factory=list)
    urls_file: Path | None = None  # one URL a line (a secret file: URLs carry tokens); added to ``urls``
    repeat_interval_s: Annotated[float, Field(ge=0)] = 900.0  # the same event and key at most once per interval
    queue_size: PosInt = 1000  # notifications waiting to be sent; beyond it they are dropped and counted
    timeout_s: PosFloat = 10.0
    disconnect_after_s: Annotated[float, Field(ge=0)] = 60.0  # the broker's allowance before ``disconnect``
    login_after_s: PosFloat = 600.0  # unreachable this long: ``login_needed`` (IB's weekly re-login, 2FA)
    digest_at_utc: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "21:00"
    events: AlertEventsConfig = Field(default_factory=AlertEventsConfig)


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
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    ibkr: IbkrConfig = Field(default_factory=IbkrConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

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
