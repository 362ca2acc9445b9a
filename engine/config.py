"""Configuration: defaults < TOML file < ``TRADECTL_*`` environment < command-line flags.

Every key is declared; an unknown key or a bad value stops the start with a message naming it
(``ConfigError``), instead of trading on a default the operator did not mean.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from risk.checks import Limits
from risk.triggers import DayBoundary, TriggerLimits
from risk.windows import WEEKDAYS, Maintenance, MaintenanceWindow

_Strict = ConfigDict(extra="forbid")
NonNegDecimal = Annotated[Decimal, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """A configuration that cannot be used; the message names each offending key."""


class KellyConfig(BaseModel):
    model_config = _Strict
    fraction: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.5")
    max_fraction_of_equity: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.10")
    max_qty: Annotated[Decimal, Field(gt=0)] | None = None
    rebalance_band: Annotated[Decimal, Field(ge=0, lt=1)] = Decimal("0.10")


def _section(source: type, name: str, doc: str, *, overrides: bool = False, **extra: Any) -> type[BaseModel]:
    """A config section with the fields of a risk dataclass: its types, bounds and defaults, declared once.

    ``overrides``: every key optional, unset meaning "the account's value" (per strategy / per symbol).
    """
    hints = get_type_hints(source, include_extras=True)
    spec: dict[str, Any] = {
        f.name: ((hints[f.name] | None, None) if overrides else (hints[f.name], f.default)) for f in fields(source)
    }
    model: type[BaseModel] = create_model(name, __config__=_Strict, __doc__=doc, **spec, **extra)
    return model


if TYPE_CHECKING:  # built at import from the dataclasses; the type checker sees plain models
    LimitsOverride = BaseModel
    RiskConfig = BaseModel
    TriggersConfig = BaseModel
else:
    LimitsOverride = _section(
        Limits, "LimitsOverride", "Per-strategy or per-symbol overrides of the account's limits (unset = the "
        "account's).", overrides=True)
    RiskConfig = _section(
        Limits, "RiskConfig", "Account pre-trade limits (``risk.checks.Limits``); null switches a limit off.",
        per_strategy=(dict[str, LimitsOverride], Field(default_factory=dict)),
        per_symbol=(dict[str, LimitsOverride], Field(default_factory=dict)))
    TriggersConfig = _section(
        TriggerLimits, "TriggersConfig", "Automatic kill-switch triggers (``risk.triggers.TriggerLimits``); "
        "null/false = off.")


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/New_York)") from None
    return value


def _clock_time(value: str) -> str:
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value.strip())
    if m is None:
        raise ValueError(f"give HH:MM on a 24-hour clock, not {value!r}")
    return m.group(0)


Zone = Annotated[str, AfterValidator(_zone)]  # an IANA time zone name
ClockTime = Annotated[str, AfterValidator(_clock_time)]  # HH:MM, 24-hour clock


class DayConfig(BaseModel):
    """The trading day that daily loss and drawdown are measured over (``[day]``).

    Default: 17:00 New York, where FX and CME futures roll their trading day (the US stock session
    has closed by then); the day that starts at 17:00 is named by the next date. ``timezone`` is an IANA
    name (standard-library zoneinfo, with tzdata as the fallback database); ``rollover`` is HH:MM.
    """

    model_config = _Strict
    timezone: Zone = "America/New_York"
    rollover: ClockTime = "17:00"

    def boundary(self) -> DayBoundary:
        from zoneinfo import ZoneInfo

        return DayBoundary(ZoneInfo(self.timezone), time.fromisoformat(self.rollover))


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindowConfig(BaseModel):
    """One ``[[maintenance.windows]]`` entry: ``start`` (HH:MM) local to ``timezone`` on each of ``days``."""

    model_config = _Strict
    name: Annotated[str, Field(min_length=1, max_length=64)]
    start: ClockTime
    minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)]
    timezone: Zone = "America/New_York"
    days: Annotated[list[Weekday], Field(min_length=1)] = Field(default_factory=lambda: list(ALL_DAYS))

    def window(self) -> MaintenanceWindow:
        from zoneinfo import ZoneInfo

        return MaintenanceWindow(self.name, time.fromisoformat(self.start), self.minutes, ZoneInfo(self.timezone),
                                 frozenset(WEEKDAYS.index(d) for d in self.days))


def _ib_windows() -> list[MaintenanceWindowConfig]:
    """IB's published North American reset schedule (risk/windows.py says where it comes from)."""
    return [
        MaintenanceWindowConfig(name="ib-daily-reset", start="00:15", minutes=90,
                                days=["sun", "mon", "tue", "wed", "thu", "fri"]),
        MaintenanceWindowConfig(name="ib-weekend-maintenance", start="23:00", minutes=240, days=["fri"]),
    ]


class MaintenanceConfig(BaseModel):
    """``[maintenance]``: when a broker disconnect is expected (IB's resets, the gateway's own restart).

    Inside a window a disconnect does not trip until the window ends (then ``triggers.disconnect_timeout_s``
    later); new signals meanwhile are held until the link is back and resynced (``signals = "hold"``: an
    inbox line stays in the inbox, a file waits) or refused with ``maintenance_window`` (``"reject"``).
    Setting ``windows`` replaces the defaults (IB North America): add the gateway's AutoRestartTime there.
    """

    model_config = _Strict
    windows: list[MaintenanceWindowConfig] = Field(default_factory=_ib_windows)
    signals: Literal["hold", "reject"] = "hold"

    def schedule(self) -> Maintenance:
        return Maintenance.of(w.window() for w in self.windows)


class KillSwitchConfig(BaseModel):
    model_config = _Strict
    poll_ms: Annotated[float, Field(gt=0, le=250)] = 50.0  # SQLite; PostgreSQL is woken by NOTIFY
    heartbeat_s: PosFloat = 1.0  # how often a running engine says it is alive (the CLI checks it)
    ack_timeout_s: PosFloat = 10.0  # how long `tradectl kill` waits for the engine
    flatten_collar_pct: Annotated[Decimal, Field(gt=0, lt=Decimal("0.5"))] = Decimal("0.01")
    reconcile_interval_s: PosFloat = 60.0

    @property
    def stale_after_s(self) -> float:
        """A heartbeat older than this means the engine is not applying changes (gone, or hung)."""
        return max(5 * self.heartbeat_s, 3.0)


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
    # Rows are written by a process of their own (repositories.background_writer): the signal path only hands
    # them over. False: written in the session's process, a flush stopping the signal path while it runs.
    writer_process: bool = True


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
    # Units buffered at most between commits. Whatever it is, an order is committed with its signal before it
    # leaves, and the rest at the end of each turn of the loop (1: a commit per row, as before 2026-11-28).
    # an order IB has not acknowledged this long is Unknown: the next reconciliation (asked for at once) settles
    # it, working at IB or lost on the way (IB's paper server sometimes drops a placement); null = never
    ack_timeout_s: PosFloat | None = 30.0
    commit_every: PosInt = 1000
    # without a live market data subscription: "delayed" (or "delayed_frozen") trades on IB's delayed quotes
    # (risk.require_live_data refuses new orders on them); "live" asks for live data only (354 without it)
    market_data_type: Literal["live", "frozen", "delayed", "delayed_frozen"] = "live"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class HttpConfig(BaseModel):
    """The daemon's HTTP surface: ``POST /signals`` (into the inbox), ``GET /signals/{id}``, health, metrics.

    Bound to 127.0.0.1 unless configured otherwise; any other address needs a secret (``secret`` or a
    ``secret_file`` holding it), which every ``POST /signals`` must show (bearer token or HMAC of the body).
    """

    model_config = _Strict
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, lt=65536)] = 8787  # 0: any free port (tests)
    secret: Annotated[SecretStr, Field(min_length=16)] | None = None
    secret_file: Path | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    query_token: bool = False  # accept ?token=SECRET too (TradingView cannot set headers); see the README

    @model_validator(mode="after")
    def _secret_rules(self) -> HttpConfig:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("give secret or secret_file, not both")
        if self.enabled and self.secret is None and self.secret_file is None and not is_loopback(self.host):
            raise ValueError(f"host {self.host} is not a loopback address: set secret or secret_file "
                             f"(refusing to accept signals from the network without one)")
        return self

    def resolved_secret(self) -> str | None:
        """The secret itself (read from ``secret_file`` when given); ConfigError when the file is unusable."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_file is None:
            return None
        try:
            value = self.secret_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"key 'http.secret_file': cannot read {self.secret_file}: {err.strerror}") from None
        if len(value) < 16:
            raise ConfigError(f"key 'http.secret_file': the secret in {self.secret_file} is shorter than 16 "
                              f"characters")
        return value


class SignalTimeConfig(BaseModel):
    """When a signal's ``ts`` is believed (reject codes ``stale_signal`` / ``future_signal``).

    Wall-clock sessions (stdin) compare ``ts`` with now. A file runs on its own clock: the first ``ts``
    sets it, later ones move it forward, and one further ahead than ``max_clock_jump_s`` is refused and
    leaves the clock where it was (a day's or a long weekend's gap is not a bad line; a year is).
    """

    model_config = _Strict
    max_age_s: Annotated[float, Field(gt=0, le=86_400 * 366)] = 60.0  # older than the clock by more: stale
    max_future_s: Annotated[float, Field(ge=0, le=3_600)] = 2.0  # wall clock: later than now by more: future
    max_clock_jump_s: Annotated[float, Field(gt=0, le=86_400 * 366)] = 7 * 86_400.0  # file clock: future


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
    gateway: AlertMode = "on"  # IB Gateway reports a link it needs to trade down (10197 competing session, ...)
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


class ReportConfig(BaseModel):
    """Session reports (``tradectl report``): where they go, and which are written without being asked."""

    model_config = _Strict
    # Where session-N.html and day-DATE.html go unless --html says: unset, a folder ``reports`` beside a SQLite
    # database's file, else var/reports.
    dir: Path | None = None
    paper: bool = True  # a paper session writes its report after its summary (``--no-report``: not this once)
    digest: bool = True  # the daemon's daily digest writes the day's report and links and attaches it


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

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgres|postgresql|postgresql\+psycopg)://", value.strip()):
            raise ValueError(f"{value!r} is not a database URL tradectl can use: give sqlite:///path/to/file.db or "
                             f"postgresql+psycopg://user@host:5432/dbname")
        return value.strip()
    equity: Annotated[Decimal, Field(gt=0)] = Decimal(1_000_000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Ids (signal and execution) kept in memory. Dedupe is exact at any size: an older signal id is looked up
    # in the database (engine/dedupe.py), an older execution is the broker adapter's and reconciliation's to
    # tell; the window also covers every row not yet committed (at least 2 x flush_rows). 50,000 ids are full
    # within the first minutes of a busy session, so a daemon's memory is flat from then on.
    dedupe_capacity: Annotated[int, Field(ge=1000)] = 50_000
    flush_rows: Annotated[int, Field(ge=1)] = 20_000
    flush_interval_ms: Annotated[float, Field(gt=0)] = 100.0
    kelly: KellyConfig = Field(default_factory=KellyConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    day: DayConfig = Field(default_factory=DayConfig)
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    ibkr: IbkrConfig = Field(default_factory=IbkrConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    signal_time: SignalTimeConfig = Field(default_factory=SignalTimeConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

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
    """Each bad key on its own line; one bad key is one line (what an operator's terminal shows first)."""
    problems = []
    for e in err.errors(include_url=False):
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
            continue
        msg = e["msg"].removeprefix("Value error, ")  # our validators' own words, without pydantic's label
        got = e.get("input")
        if "secret" in key or (isinstance(got, dict) and "secret" in got):
            got = "<redacted>"  # a secret never reaches a log or a terminal
        shown = "" if repr(got) in msg else f" (got {got!r})"  # a message that quotes the value says it once
        problems.append(f"key '{key}': {msg}{shown}")
    if len(problems) == 1:
        return f"invalid configuration ({source}): {problems[0]}"
    return "\n".join([f"invalid configuration ({source}):", *(f"  - {p}" for p in problems)])


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
