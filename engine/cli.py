"""The ``tradectl`` command line.

Operators type these under pressure, so the module imports only typer at load time (``--help`` stays
fast) and each command imports what it needs. Exit codes: 0 success, 1 failure, 2 bad usage or config.

No ``from __future__ import annotations`` here: typer reads every command's annotations each time a command
runs, and as strings each was compiled and evaluated again (~20 ms of every command); written plainly they are
evaluated once, from the cached bytecode. Names imported only for type checking are quoted.
"""

import contextlib
import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.operator_config import OperatorSettings
    from repositories.direct import DirectRepositories
    from repositories.repos import Repositories

app = typer.Typer(
    name="tradectl",
    help="Event-driven execution engine for Interactive Brokers: signals -> risk -> orders -> fills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~60 ms of a 100 ms budget
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
ks_app = typer.Typer(help="Kill-switch states (change them with kill / reduce-only / resume).", no_args_is_help=True,
                     rich_markup_mode=None)
app.add_typer(ks_app, name="killswitch")
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

EXIT_FAILURE = 1
EXIT_USAGE = 2

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (default: DATABASE_URL or ./var/tradectl.db).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file (or TRADECTL_CONFIG).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


LOG_LEVELS = ("debug", "info", "warning", "error")
_GLOBAL_FLAGS: dict[str, str | None] = {"log_level": None}  # options given before the command


def _print_version(wanted: bool) -> None:
    if wanted:
        from engine import __version__

        typer.echo(f"tradectl {__version__}")
        raise typer.Exit()


# The collector during start-up. Importing a paper session's modules makes ~100,000 objects that live as long as
# the process (modules, classes, pydantic's validators, SQLAlchemy's tables); with the collector on it ran ~250
# collections over them while they were made, ~150 ms of a short session on the 2-core VM (docs/performance.md).
# The console script (main) holds it; a paper session gives it back once its modules are loaded, every other
# command before it runs. Freezing then moves what exists into a generation the collector never walks.
_GC_HELD = {"held": False}


def _hold_gc() -> None:
    if gc.isenabled():
        gc.disable()
        _GC_HELD["held"] = True


def _settle_gc() -> None:
    """Start-up is done: what exists lives as long as the process; collect as usual from here. A no-op unless
    main held the collector (in-process callers, tests, keep theirs untouched)."""
    if _GC_HELD["held"]:
        _GC_HELD["held"] = False
        gc.freeze()
        gc.enable()


@app.callback()
def _global_options(
    ctx: typer.Context,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="debug | info | warning | error (default: the config's log_level, info).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print tradectl's version and exit.")] = False,
) -> None:
    """Event-driven execution engine for Interactive Brokers: signals -> risk -> orders -> fills."""
    if ctx.invoked_subcommand != "paper":
        _settle_gc()
    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}", EXIT_USAGE)
    _GLOBAL_FLAGS["log_level"] = log_level.lower() if log_level is not None else None


def _settings(config: Path | None = None, **overrides: Any) -> "Settings":
    from engine.config import ConfigError, load_settings

    overrides.setdefault("log_level", _GLOBAL_FLAGS["log_level"])
    try:
        return load_settings(config, **overrides)
    except ConfigError as err:
        typer.echo(f"tradectl: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _setup_logging(settings: "Settings") -> None:
    from engine.logging import configure_logging

    configure_logging(settings.log_format, settings.log_level)


def _report_session(summary: Any, json_out: bool) -> None:
    """A session's summary (table or JSON); exit 1 when its last rows could not be written."""
    if json_out:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        from engine.report import print_summary

        print_summary(summary)
    if summary.unwritten is not None:
        raise _fail(summary.unwritten)


def _fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    typer.echo(f"tradectl: {message}", err=True)
    return typer.Exit(code)


# -- paper ---------------------------------------------------------------------------------------------
@app.command()
def paper(
    signals: Annotated[
        str | None, typer.Option("--signals", help="JSONL signal file, or '-' for stdin (default: bundled demo).")
    ] = None,
    quotes: Annotated[Path | None, typer.Option("--quotes", help="Quotes CSV (default: seeded random walk).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random walk and the simulated fills.")] = 1,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write the session's HTML report after the "
                                                                     "summary ([report] paper).")] = True,
) -> None:
    """Run a paper session against the simulated broker and print a summary (and the path of its report)."""
    import asyncio

    settings = _settings(config, database_url=db)
    _setup_logging(settings)
    from engine.session import PaperSession
    from engine.sources import DEMO_SIGNALS, count_lines, read_lines
    from paper.market import QuotesFileError
    from repositories.accounts import AccountBound
    from repositories.engine_lock import EngineLocked

    if quotes is not None and not quotes.is_file():
        raise _fail(f"quotes file {quotes} does not exist", EXIT_USAGE)
    path = None if signals is None or signals == "-" else Path(signals)
    if path is not None and not path.is_file():
        raise _fail(f"signal file {path} does not exist", EXIT_USAGE)
    _settle_gc()
    show = progress and not json_out and sys.stderr.isatty()  # off a terminal stderr is JSON log lines only
    bar = _progress_bar() if show else _NoProgress()  # hidden: rich.progress is not loaded, the file not counted
    try:
        with bar:
            if signals == "-":
                task = bar.add_task("signals", total=None)
                session = PaperSession(settings, seed=seed, quotes=quotes,
                                       on_progress=lambda n: bar.update(task, completed=n))
                summary = asyncio.run(session.run_stream(sys.stdin))
            else:
                source = path or DEMO_SIGNALS
                task = bar.add_task("signals", total=count_lines(source) if show else None)
                session = PaperSession(settings, seed=seed, quotes=quotes,
                                       on_progress=lambda n: bar.update(task, completed=n))
                try:
                    summary = session.run_file(read_lines(source))
                except KeyboardInterrupt:
                    raise _fail("interrupted", 130) from None
    except QuotesFileError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    except (EngineLocked, AccountBound) as err:
        raise _fail(str(err), EXIT_USAGE) from None
    _report_session(summary, json_out)  # exits 1 when the last rows could not be written: no report then
    if report and settings.report.paper:
        _write_session_report(settings, summary.session_id, json_out)


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]paper[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


class _NoProgress(contextlib.nullcontext[None]):
    """The bar under --no-progress or --json: what a disabled rich Progress does (nothing), without loading it."""

    def add_task(self, description: str, total: int | None = None) -> int:
        return 0

    def update(self, task: int, completed: int) -> None:
        return None


def _write_session_report(settings: "Settings", session_id: int, json_out: bool) -> None:
    """After the summary, off the trading path: the session's report, and its path (on stderr under --json). A
    report that cannot be written is a warning: the session itself is done and recorded."""
    from engine.session_report import NothingToReport, write_report
    from repositories.db import make_engine
    from repositories.errors import DatabaseUnavailable
    from repositories.report_data import ReportData

    db = make_engine(settings.database_url, create=False)
    try:
        written = write_report(ReportData(db), settings, session_id=session_id)
    except (OSError, DatabaseUnavailable, NothingToReport) as err:
        typer.echo(f"warning: the session's report was not written: {err}", err=True)
        return
    finally:
        db.dispose()
    typer.echo(f"report: {written.html}", err=json_out)


# -- db ------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, config: ConfigOpt = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    settings = _settings(config, database_url=db)
    from repositories.db import current_revision, upgrade

    upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {current_revision(settings.database_url)}")


@db_app.command("current")
def db_current(db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Print the database's revision and the code's head."""
    settings = _settings(config, database_url=db)
    from repositories.db import current_revision, head_revision, sqlite_file

    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():  # a typo must not create a database
        raise _fail(_NO_DATABASE.format(path), EXIT_USAGE)
    current = current_revision(settings.database_url)
    typer.echo(f"current: {current or 'none (no schema yet: tradectl db upgrade)'}  head: {head_revision()}")


# -- read commands -------------------------------------------------------------------------------------
def _repos(db: str | None, config: Path | None) -> "Repositories":
    """The account's repositories on a database that has a schema (exit 1 naming what is wrong)."""
    settings = _settings(config, database_url=db)
    return _existing_repos(settings)


_NO_DATABASE = "no database at {}: run `tradectl db upgrade --db ...` (or a paper session) to make one"
_NO_SCHEMA = "the database has no schema yet: run `tradectl db upgrade` (or a paper session)"


def _existing_repos(settings: "Settings | OperatorSettings") -> "Repositories":
    """Repositories on a database that exists and has a schema; nothing is created (exit 2 naming what is
    wrong: an operator's typo must not look like success)."""
    from repositories.db import make_engine, schema_revision, sqlite_file
    from repositories.errors import DatabaseUnavailable
    from repositories.repos import Repositories

    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        raise _fail(_NO_DATABASE.format(path), EXIT_USAGE)
    repos = Repositories(make_engine(settings.database_url, create=False), settings.account)
    try:
        if schema_revision(repos.db) is None:
            raise _fail(_NO_SCHEMA, EXIT_USAGE)
    except DatabaseUnavailable as err:
        raise _fail(f"cannot read the database: {err}", EXIT_USAGE) from None
    return repos


def _operator_settings(config: Path | None, db: str | None) -> "OperatorSettings":
    """The settings of the operator's fast commands, read without pydantic (engine/operator_config.py) unless
    only pydantic can tell: then its values, or its error (exit 2)."""
    from engine.operator_config import KillSwitchTimes, NotPlain, OperatorSettings, read_operator_settings

    try:
        return read_operator_settings(config, database_url=db)
    except NotPlain:
        full = _settings(config, database_url=db)
        return OperatorSettings(full.database_url, full.account,
                                KillSwitchTimes(full.killswitch.heartbeat_s, full.killswitch.ack_timeout_s))


def _operator_repos(settings: "OperatorSettings") -> "Repositories | DirectRepositories":
    """``_existing_repos`` on the plain driver (repositories/direct.py: no SQLAlchemy to import), or on
    SQLAlchemy for a URL the plain path leaves to it; the same refusals, word for word."""
    from repositories.direct import DirectRepositories, DirectUnsupported, NoDatabase
    from repositories.unavailable import DatabaseUnavailable

    try:
        repos = DirectRepositories.open(settings.database_url, settings.account)
    except DirectUnsupported:
        return _existing_repos(settings)
    except NoDatabase as err:
        raise _fail(_NO_DATABASE.format(err.path), EXIT_USAGE) from None
    except DatabaseUnavailable as err:
        raise _fail(f"cannot read the database: {err}", EXIT_USAGE) from None
    try:
        if repos.schema_revision() is None:
            raise _fail(_NO_SCHEMA, EXIT_USAGE)
    except DatabaseUnavailable as err:
        raise _fail(f"cannot read the database: {err}", EXIT_USAGE) from None
    return repos


SessionOpt = Annotated[int | None, typer.Option("--session", min=1, help="Only this session's rows.")]
SymbolOpt = Annotated[str | None, typer.Option("--symbol", help="Only this symbol's rows.")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="Only this strategy's rows.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Only rows since: 15m, 2h, 1d, or an ISO date/time.")]
RowsOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Most recent rows to show (default: 50 in a "
                                                                     "table, every row with --json).")]
_TABLE_ROWS = 50

# what --status accepts, per listing
_STATUSES: dict[str, tuple[str, ...]] = {"signals": ("accepted", "rejected", "pending")}  # pending: the inbox


def _since(text: str | None) -> Any:
    from datetime import UTC, datetime

    from engine.operator import parse_since

    if text is None:
        return None
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as err:
        raise _fail(str(err), EXIT_USAGE) from None


def _listing(table: str, db: str | None, config: Path | None, json_out: bool, limit: int | None,
             columns: list[str], *, drop_first: list[str] | None = None, then_drop: list[str] | None = None,
             session: int | None = None,
             symbol: str | None = None, strategy: str | None = None, status: str | None = None,
             since: str | None = None) -> None:
    from repositories.listings import RowFilter, plain

    if status is not None:
        accepted = _STATUSES.get(table)
        if accepted is None and table == "orders":
            from engine.domain import OrderStatus

            accepted = tuple(s.value for s in OrderStatus)
        if accepted is None:
            raise _fail(f"{table} have no status of their own: filter their orders (`tradectl orders --status`)",
                        EXIT_USAGE)
        if status.lower() not in {a.lower() for a in accepted}:
            raise _fail(f"--status {status!r}: {table} are {', '.join(accepted)}", EXIT_USAGE)
    where = RowFilter(session, symbol, strategy, status, _since(since))
    rows = plain(_repos(db, config).listings.rows(
        table, limit if limit is not None or json_out else _TABLE_ROWS, where=where))
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from engine.report import print_rows

    print_rows(table, rows, columns, drop_first or [], then_drop=then_drop or [])


def _pending_signals(db: str | None, config: Path | None, json_out: bool, limit: int | None) -> None:
    """The inbox's rows no engine has taken yet (submitted, POSTed or inserted while none runs, or queued)."""
    from repositories.inbox import SignalInbox
    from repositories.listings import plain

    repos = _repos(db, config)
    items = SignalInbox(repos.db, repos.account).pending(limit=limit if limit is not None else 1_000_000)
    rows = plain([{"inbox_id": i.id, "signal_id": i.signal_id, "received_at": i.received_at, "source": i.source,
                   "status": "pending"} for i in items])
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from engine.report import print_rows

    print_rows("signals pending in the inbox", rows, ["inbox_id", "signal_id", "received_at", "source"], [])


@app.command()
def signals(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False, limit: RowsOpt = None,
            session: SessionOpt = None, symbol: SymbolOpt = None, strategy: StrategyOpt = None,
            status: Annotated[str | None, typer.Option(
                "--status", help="accepted | rejected | pending (still waiting in the inbox)")] = None,
            since: SinceOpt = None) -> None:
    """Recent signals with their outcome (accepted with its order, or rejected with the reason); --status
    pending lists those still waiting in the account's inbox for the engine."""
    if status is not None and status.lower() == "pending":
        _pending_signals(db, config, json_out, limit)
        return
    _listing("signals", db, config, json_out, limit,
             ["signal_id", "ts", "strategy", "symbol", "direction", "status", "reason_code", "client_order_id"],
             drop_first=["client_order_id", "direction", "strategy", "ts"],
             session=session, symbol=symbol, strategy=strategy, status=status, since=since)


@app.command()
def orders(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False, limit: RowsOpt = None,
           session: SessionOpt = None, symbol: SymbolOpt = None, strategy: StrategyOpt = None,
           status: Annotated[str | None, typer.Option("--status", help="Filled, Cancelled, Rejected, Submitted, "
                                                                       "PartiallyFilled, ...")] = None,
           since: SinceOpt = None) -> None:
    """Recent orders with their latest status."""
    _listing("orders", db, config, json_out, limit,
             ["client_order_id", "symbol", "side", "quantity", "order_type", "limit_price", "stop_price", "status",
              "filled_qty", "avg_fill_price", "commission", "reason"],
             drop_first=["order_type", "commission", "filled_qty", "stop_price", "limit_price", "reason"],
             then_drop=["avg_fill_price", "side"],  # at 40 columns: the order, its symbol, quantity and status
             session=session, symbol=symbol, strategy=strategy, status=status, since=since)


@app.command()
def fills(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False, limit: RowsOpt = None,
          session: SessionOpt = None, symbol: SymbolOpt = None,
          strategy: Annotated[str | None, typer.Option("--strategy", help="Only fills of this strategy's orders.")]
          = None,
          status: Annotated[str | None, typer.Option("--status", hidden=True)] = None,
          since: SinceOpt = None) -> None:
    """Recent fills (one per execution id)."""
    _listing("fills", db, config, json_out, limit,
             ["exec_id", "ts", "client_order_id", "symbol", "side", "quantity", "price", "commission"],
             drop_first=["exec_id", "commission"],
             then_drop=["ts", "side"],  # at 40 columns: the order, its symbol, quantity and price
             session=session, symbol=symbol, strategy=strategy, status=status, since=since)


@app.command()
def sessions(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False, limit: RowsOpt = None,
             since: SinceOpt = None) -> None:
    """Sessions, newest last: venue, account, state (running, completed, stopped, failed...), own fills and P&L
    (a session still running, or ended without a summary: its numbers so far, from its rows)."""
    from datetime import UTC, datetime

    from engine.operator import engine_seen
    from engine.sessions import session_state

    settings = _settings(config, database_url=db)
    repos = _existing_repos(settings)
    seen = engine_seen(repos, settings.killswitch.stale_after_s, datetime.now(UTC))
    rows = [session_state(r, seen) for r in repos.sessions.listing(
        limit if limit is not None or json_out else _TABLE_ROWS, _since(since))]
    for r in rows:  # no summary yet (running, or ended without one): its numbers from its rows so far
        if r["summary"] is None:
            r["so_far"] = repos.sessions.so_far(r["id"])
    if json_out:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from engine.report import print_sessions

    print_sessions(rows)


@app.command()
def positions(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Current positions of the account."""
    _listing("positions", db, config, json_out, None,
             ["symbol", "quantity", "avg_cost", "realized_pnl", "commissions", "updated_at"], drop_first=["updated_at"])


@app.command()
def defects(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False, limit: RowsOpt = None,
            session: SessionOpt = None, since: SinceOpt = None) -> None:
    """Rows the database refused (a violated constraint, a value it cannot hold), each with its error."""
    _listing("row_defects", db, config, json_out, limit, ["id", "ts", "table_name", "row_key", "error"],
             session=session, since=since)


@app.command()
def status(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Whether an engine trades the account (pid, host, heartbeat, venue), totals, kill switches, the last session.

    Exit 1 when the engine is hung: its process is alive but its heartbeat is stale.
    """
    from datetime import UTC, datetime

    from engine.operator import EngineCondition, engine_seen
    from engine.sessions import session_state

    settings = _operator_settings(config, db)
    repos = _operator_repos(settings)
    seen = engine_seen(repos, settings.killswitch.stale_after_s, datetime.now(UTC))
    last = repos.sessions.last()
    payload = {
        "account": repos.account,
        "engine": seen.to_json(repos.account),
        "counts": repos.signals.counts(),
        "killswitches": {k: v.value for k, v in repos.killswitches.states().items()},
        "open_orders": len(repos.orders.open()),
        "last_session": session_state(last, seen) if last else None,
    }
    if json_out:
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        from engine.report import print_status

        print_status(payload)
    if seen.condition is EngineCondition.HUNG:
        typer.echo(f"tradectl: {seen.sentence}", err=True)
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def report(
    session: Annotated[int | None, typer.Option("--session", min=1, help="The session to report (default: the "
                                                                         "latest).")] = None,
    day: Annotated[str | None, typer.Option("--day", help="A trading day instead (YYYY-MM-DD, as [day] "
                                                          "defines it).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Where to write the HTML file (default: [report] "
                                                             "dir, session-N.html or day-DATE.html).")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write each table as a CSV file in this "
                                                           "directory.")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a session's (or a trading day's) report: one HTML file with its charts that opens offline; --csv
    writes the same tables as CSV files. Prints the paths."""
    from datetime import date

    if session is not None and day is not None:
        raise _fail("give --session or --day, not both", EXIT_USAGE)
    the_day = None
    if day is not None:
        try:
            the_day = date.fromisoformat(day)
        except ValueError:
            raise _fail(f"--day {day!r} is not a date: give YYYY-MM-DD", EXIT_USAGE) from None
    settings = _settings(config, database_url=db)
    _setup_logging(settings)  # its events go where every command's go: stderr, JSON off a terminal
    repos = _existing_repos(settings)
    from engine.session_report import NothingToReport, write_report
    from repositories.report_data import ReportData

    try:
        written = write_report(ReportData(repos.db), settings, session_id=session, day=the_day, html=html,
                               csv_dir=csv)
    except NothingToReport as err:
        raise _fail(str(err), EXIT_USAGE) from None
    except OSError as err:
        raise _fail(f"cannot write the report: {err}", EXIT_USAGE) from None
    finally:
        repos.dispose()
    typer.echo(f"report: {written.html}")
    if csv is not None:
        typer.echo(f"csv: {csv} ({len(written.csv)} files)")


# -- producers -----------------------------------------------------------------------------------------
@app.command()
def submit(
    line: Annotated[str | None, typer.Argument(help="One signal as a JSON object, or '-' to read lines from stdin.")]
    = None,
    file: Annotated[Path | None, typer.Option("--file", help="A JSONL file of signals (one JSON object a line).")]
    = None,
    account: Annotated[str | None, typer.Option("--account", help="The account whose engine takes them "
                                                                  "(default: config).")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Put signals in the account's inbox for its engine (running or not); print a receipt for each.

    Every signal is validated first: one invalid signal exits 2 naming its field, and nothing is written.
    A signal id already submitted is not written again ("duplicate", with the existing inbox id).
    """
    if (line is None) == (file is None):
        raise _fail("give one signal as a JSON argument, '-' for stdin, or --file PATH", EXIT_USAGE)
    if file is not None:
        if not file.is_file():
            raise _fail(f"signal file {file} does not exist", EXIT_USAGE)
        raw = file.read_text(encoding="utf-8", errors="replace").splitlines()
    elif line == "-":
        raw = sys.stdin.read().splitlines()
    else:
        raw = [line or ""]
    numbered = [(n, x.strip()) for n, x in enumerate(raw, 1) if x.strip()]  # line numbers count blank lines
    lines = [x for _, x in numbered]
    if not lines:
        raise _fail("no signal given (every line was empty)", EXIT_USAGE)
    settings = _settings(config, database_url=db, account=account)
    from engine.client import InvalidSignals, validate
    from engine.client import submit as client_submit
    from repositories.inbox import InboxError

    try:
        if bad_lines := validate(lines):
            raise InvalidSignals(bad_lines)
        _existing_repos(settings).db.dispose()  # the inbox must exist: a mistyped --db must not start a database
        receipts = client_submit(lines, db_url=settings.database_url, account=settings.account, source="cli")
    except InvalidSignals as err:
        for bad in err.invalid:
            where = f"line {numbered[bad.index][0]}" + (f" ({bad.signal_id})" if bad.signal_id else "")
            typer.echo(f"tradectl: {where}: {bad.reason}", err=True)
        raise _fail(f"{len(err.invalid)} invalid signal(s): nothing was submitted", EXIT_USAGE) from None
    except InboxError as err:
        raise _fail(f"{err}: nothing was submitted", EXIT_USAGE) from None
    if json_out:
        typer.echo(json.dumps([r.to_json() for r in receipts], indent=2))
        return
    for r in receipts:
        state = "duplicate (already in the inbox)" if r.duplicate else "queued"
        typer.echo(f"{r.signal_id}\tinbox #{r.inbox_id}\t{state}")
    typer.echo(f"{sum(not r.duplicate for r in receipts)} queued, {sum(r.duplicate for r in receipts)} duplicate "
               f"for account {settings.account}; `tradectl signals` shows outcomes", err=True)


# -- IBKR ----------------------------------------------------------------------------------------------
@app.command()
def run(
    broker: Annotated[str, typer.Option("--broker", help="ibkr (TWS / IB Gateway / gateway-sim) or paper.")] = "ibkr",
    host: Annotated[str | None, typer.Option("--host", help="TWS / IB Gateway host (default: config).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: IB's, 4002 paper / 4001 live (TWS: 7497 / "
                                                            "7496 with --tws).")] = None,
    client_id: Annotated[int | None, typer.Option("--client-id", help="API client id (default: config).")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Account to trade (default: config).")] = None,
    signals: Annotated[str | None, typer.Option("--signals", help="JSONL signal file, or '-' for stdin.")] = None,
    live: Annotated[bool, typer.Option("--live", help="Trade a LIVE account (must match the configured one).")]
    = False,
    tws: Annotated[bool, typer.Option("--tws", help="Default ports of TWS instead of IB Gateway.")] = False,
    inbox: Annotated[bool, typer.Option("--inbox", help="The daemon: trade the account's database inbox until "
                                                        "SIGTERM (fed by SQL, submit, the client, POST /signals).")]
    = False,
    http: Annotated[bool, typer.Option("--http", help="With --inbox: serve POST /signals, /healthz, /readyz and "
                                                      "/metrics ([http] in the config; on by [http] enabled).")]
    = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the engine against IBKR (or the simulated gateway) with the same risk path as paper mode."""
    import asyncio

    if broker == "paper":
        paper(signals=signals, quotes=None, seed=1, db=db, config=config, json_out=json_out, progress=not json_out,
              report=True)
        return
    if broker != "ibkr":
        raise _fail(f"--broker must be ibkr or paper, not {broker!r}", EXIT_USAGE)
    settings = _settings(config, database_url=db)
    _setup_logging(settings)
    from broker.ibkr import IbkrError
    from engine.live import IB_PORTS, AccountRefused, IbkrSession
    from engine.sources import DEMO_SIGNALS, read_lines
    from repositories.accounts import AccountBound
    from repositories.engine_lock import EngineLocked

    if inbox and signals is not None:
        raise _fail("--inbox and --signals exclude each other: the daemon reads the inbox", EXIT_USAGE)
    if http and not inbox:
        raise _fail("--http serves the daemon's intake: give --inbox too", EXIT_USAGE)
    from engine.daemon import HttpUnavailable

    if inbox and (http or settings.http.enabled):
        from engine.config import ConfigError
        from engine.http import check_bind

        try:
            check_bind(settings.http.host, settings.http.resolved_secret())
        except (ValueError, ConfigError) as err:
            raise _fail(str(err), EXIT_USAGE) from None
    path = None if signals is None or signals == "-" else Path(signals)
    if path is not None and not path.is_file():
        raise _fail(f"signal file {path} does not exist", EXIT_USAGE)
    ib = settings.ibkr
    the_port = port or ib.port or IB_PORTS[("tws" if tws else "gateway", live)]
    session = IbkrSession(settings, host=host or ib.host, port=the_port,
                          client_id=ib.client_id if client_id is None else client_id, account=account, live=live)

    async def go() -> Any:
        if inbox:
            from engine.daemon import run_daemon

            return await run_daemon(session, http=http)
        await session.connect()
        if signals == "-":
            return await session.run(stream=sys.stdin)
        return await session.run(read_lines(path or DEMO_SIGNALS))

    try:
        summary = asyncio.run(go())
    except AccountRefused as err:
        raise _fail(f"refusing to trade: {err}", EXIT_USAGE) from None
    except (EngineLocked, AccountBound) as err:
        raise _fail(str(err), EXIT_USAGE) from None
    except IbkrError as err:
        raise _fail(str(err)) from None
    except HttpUnavailable as err:
        raise _fail(str(err), EXIT_USAGE) from None
    if summary is None:
        typer.echo("stopped before the gateway answered: nothing was traded", err=True)
        return
    _report_session(summary, json_out)


@app.command()
def reconcile(
    broker: Annotated[str, typer.Option("--broker", help="ibkr or paper (the in-process broker keeps nothing "
                                                         "between sessions: its open orders are stale).")] = "ibkr",
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: IB Gateway paper 4002.")] = None,
    client_id: Annotated[int | None, typer.Option("--client-id")] = None,
    account: Annotated[str | None, typer.Option("--account")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the adoptions and closures (takes the engine "
                                                        "lock, so not while an engine trades).")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare the database with the broker: orders by orderRef, fills by execution id, positions.

    Prints the report and changes nothing unless --apply is given. Exit 0 when clean, 1 when not; with
    --apply, 0 once the differences are applied and the positions agree (so `reconcile --apply && tradectl
    run` works), 1 when a position still differs after applying (that symbol is halted).
    """
    import asyncio

    if broker not in ("ibkr", "paper"):
        raise _fail(f"--broker must be ibkr or paper, not {broker!r}", EXIT_USAGE)
    settings = _settings(config, database_url=db)
    _setup_logging(settings)
    from broker.ibkr import IbkrBroker, IbkrError
    from broker.reconcile import ReconcileReport
    from engine.clock import wall_clock
    from engine.live import IB_PORTS, IbkrSession
    from engine.session import PaperSession, compare_with_broker
    from paper.broker import PaperBroker
    from repositories.accounts import AccountBound
    from repositories.engine_lock import EngineLocked

    ib = settings.ibkr
    the_host, the_port = host or ib.host, port or ib.port or IB_PORTS[("gateway", False)]
    the_client = ib.client_id if client_id is None else client_id
    the_account = account or settings.account

    async def read_only() -> ReconcileReport:
        repos = _repos(db, config)
        held = repos.positions.all()
        positions = {p.symbol: p.quantity for p in held}
        if broker == "paper":
            paper_broker = PaperBroker(wall_clock, initial_positions={
                p.symbol: (p.quantity, p.avg_cost) for p in held if p.quantity})
            return compare_with_broker(repos, paper_broker.snapshot(), positions)
        ib_broker = IbkrBroker(the_host, the_port, the_client, the_account, wall_clock)
        await ib_broker.connect()
        try:
            return compare_with_broker(repos, ib_broker.snapshot(), positions)
        finally:
            await ib_broker.close()

    remaining: dict[str, Any] = {}  # --apply: positions that still differ once everything was applied

    def still_differ(engine: Any) -> None:
        theirs = {p.symbol: p.quantity for p in engine.broker.positions()}
        ours = {sym: p.quantity for sym, p in engine.positions.items()}
        remaining.update({sym: {"ours": str(ours.get(sym, 0)), "broker": str(theirs.get(sym, 0))}
                          for sym in sorted(set(theirs) | set(ours)) if ours.get(sym, 0) != theirs.get(sym, 0)})

    async def applied() -> ReconcileReport:
        if broker == "paper":
            paper_session = PaperSession(settings)
            paper_session.prepare(wall_clock, wall_clock())
            report = paper_session.report
            paper_session.recorder.flush()
            still_differ(paper_session.engine)
            paper_session._finish(wall_clock(), 0.0, 0)
            return report
        session = IbkrSession(settings, host=the_host, port=the_port, client_id=the_client, account=the_account)
        await session.connect()
        report = session.report
        session.recorder.flush()
        still_differ(session.engine)
        session._finish(wall_clock(), 0.0, 0)
        await session.broker.close()
        return report

    try:
        result = asyncio.run(applied() if apply else read_only())
    except IbkrError as err:
        raise _fail(str(err)) from None
    except (EngineLocked, AccountBound) as err:
        raise _fail(str(err), EXIT_USAGE) from None
    payload = {"applied": apply, **result.to_json()}
    if apply:
        payload["positions_still_differ"] = remaining
    if json_out:
        typer.echo(json.dumps(payload, indent=2))
    else:
        from engine.report import print_reconcile

        print_reconcile(payload)
    if apply and remaining:
        typer.echo(f"positions still differ after applying (those symbols are halted): {', '.join(remaining)}",
                   err=True)
    if (remaining if apply else not result.clean):
        raise typer.Exit(EXIT_FAILURE)


# -- simulated gateway ---------------------------------------------------------------------------------
@app.command("gateway-sim")
def gateway_sim(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="IB Gateway paper port by default.")] = 4002,
    account: Annotated[str, typer.Option("--account")] = "DU0000001",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random-walk market.")] = 1,
    quotes: Annotated[Path | None, typer.Option("--quotes", help="Replay a quotes CSV instead of the walk.")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated symbols it knows.")] = None,
    step_ms: Annotated[float, typer.Option("--step-ms", min=1, help="Market step interval.")] = 250.0,
    control_port: Annotated[int | None, typer.Option("--control-port", help="Fault-control port (default: port "
                                                                            "+ 100; 0 = any free).")] = None,
    no_pacing: Annotated[bool, typer.Option("--no-pacing", help="Do not disconnect clients above 50 msg/s.")]
    = False,
    restart_at: Annotated[str | None, typer.Option("--restart-at", help="Restart every day at HH:MM[:SS] (IB "
                                                                        "Gateway's auto-restart).")] = None,
    restart_tz: Annotated[str, typer.Option("--restart-tz", help="Time zone of --restart-at.")] = "America/New_York",
    restart_down_s: Annotated[float, typer.Option("--restart-down-s", min=0, help="How long a restart is down.")]
    = 60.0,
    linger_s: Annotated[float, typer.Option("--client-id-linger-s", min=0, help="After a session ends, refuse its "
                                                                                  "client id (326) this long.")] = 0.0,
    config: ConfigOpt = None,
) -> None:
    """Run the simulated IB Gateway: TWS API over TCP on the paper matching engine, with fault controls."""
    import asyncio

    settings = _settings(config)
    _setup_logging(settings)
    from paper.gateway import DEFAULT_SYMBOLS, PACING_LIMIT, GatewaySim
    from paper.market import QuotesFileError

    if quotes is not None and not quotes.is_file():
        raise _fail(f"quotes file {quotes} does not exist", EXIT_USAGE)
    known = tuple(s.strip().upper() for s in symbols.split(",") if s.strip()) if symbols else DEFAULT_SYMBOLS
    ctl = port + 100 if control_port is None else control_port
    daily = None
    if restart_at is not None:
        from datetime import time as dt_time
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            daily = (dt_time.fromisoformat(restart_at), ZoneInfo(restart_tz))
        except (ValueError, ZoneInfoNotFoundError):
            raise _fail(f"--restart-at {restart_at!r} --restart-tz {restart_tz!r}: give HH:MM and an IANA zone",
                        EXIT_USAGE) from None

    async def serve() -> None:
        gw = GatewaySim(host, port, account, seed=seed, symbols=known, quotes=quotes, step_s=step_ms / 1000,
                        pacing_limit=None if no_pacing else PACING_LIMIT, control_port=ctl)
        gw.faults.client_id_linger_s = linger_s
        await gw.start()
        if daily is not None:
            gw.schedule_restart(daily[0], daily[1], restart_down_s)
        typer.echo(f"simulated IB Gateway on {host}:{gw.port}, account {account}, control port {gw.control_port} "
                   f"(Ctrl-C to stop)", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await gw.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return
    except QuotesFileError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    except OSError as err:
        raise _fail(f"cannot listen on {host}:{port}: {err.strerror}") from None


@app.command("gateway-ctl")
def gateway_ctl(
    command: Annotated[str, typer.Argument(help="status | drop | restart | restart-daily | linger | compete | "
                                                "id-rollback | duplicate-id-next | delayed-only | drop-placement | "
                                                "login-pending | outage | "
                                                "restore | delay | drop-replies | duplicate-exec | correct | "
                                                "reject-next | refuse-short | step | quote | orders | clear")],
    args: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE arguments, e.g. seconds=0.5, symbol=AAPL, "
                                                          "exec_id=... price=101.5, msg=11 count=1, "
                                                          "symbol=AAPL bid=97.9 ask=97.92")] = None,
    port: Annotated[int, typer.Option("--port", help="The simulator's control port.")] = 4102,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Send one fault control or query to a running gateway-sim and print its JSON answer."""
    import socket

    request: dict[str, Any] = {"cmd": command}
    for arg in args or []:
        key, sep, value = arg.partition("=")
        if not sep:
            raise _fail(f"argument {arg!r} is not KEY=VALUE", EXIT_USAGE)
        request[key] = value
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = sock.makefile().readline()
    except OSError as err:
        raise _fail(f"no simulator control port at {host}:{port}: {err.strerror or err}") from None
    typer.echo(reply.strip())
    if not json.loads(reply or "{}").get("ok"):
        raise typer.Exit(EXIT_FAILURE)


# -- operator controls ---------------------------------------------------------------------------------
ScopeOpt = Annotated[str, typer.Option("--scope", help="global | strategy:NAME | symbol:SYM")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: recorded in the audit log (required).")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Seconds to wait for the engine (default: config).")
]


def _writable_repos(settings: "OperatorSettings") -> "Repositories | DirectRepositories":
    """The account's repositories for an operator's change: the database must exist with its schema (a kill
    on a mistyped --db must refuse, not migrate a new database and report success)."""
    return _operator_repos(settings)


def _change(state_name: str, scope: str, reason: str, flatten: bool, db: str | None, config: Path | None,
            json_out: bool, timeout: float | None, flatten_wait: float = 10.0) -> None:
    settings = _operator_settings(config, db)
    from engine.domain import KillState
    from engine.operator import NotHalted, change_killswitch, flatten_outcome, operator_actor
    from risk.killswitch import parse_scope

    try:
        scope = parse_scope(scope)
    except ValueError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    if not reason.strip():
        raise _fail("--reason must say why (it goes into the audit log)", EXIT_USAGE)
    if flatten and scope.startswith("strategy:"):
        raise _fail("--flatten needs a symbol or global scope: positions are kept per account and symbol, "
                    "so a strategy has none of its own to close", EXIT_USAGE)
    k = settings.killswitch
    repos = _writable_repos(settings)
    unknown = _unknown_symbol_warning(repos, scope)
    outcome = change_killswitch(
        repos, scope, KillState(state_name), reason.strip(), actor=operator_actor(), flatten=flatten,
        timeout_s=k.ack_timeout_s if timeout is None else timeout, stale_after_s=k.stale_after_s,
    )
    if isinstance(outcome, NotHalted):  # a resume of what is not halted: nothing to record, nothing to wait for
        repos.dispose()
        typer.echo(json.dumps(outcome.to_json(), indent=2) if json_out else outcome.sentence)
        return
    if flatten:  # the truth is what is still open afterwards, not how many orders left
        outcome.not_closed = flatten_outcome(repos, outcome.change, outcome.ack, flatten_wait)
    repos.dispose()
    if unknown is not None:
        typer.echo(f"warning: {unknown}", err=True)
    if json_out:
        typer.echo(json.dumps({**outcome.to_json(), "warning": unknown}, indent=2))
    else:
        c = outcome.change
        was = "" if c.from_state is c.to_state else f" (was {c.from_state})"
        typer.echo(f"{c.scope} is {c.to_state}{was}: event #{c.id} by {c.actor}: {c.reason}")
        ack = outcome.ack
        if ack is not None:
            line = f"acknowledged by {ack['engine']} in {outcome.waited_s * 1000:.0f} ms"
            if c.to_state is KillState.HALTED:  # a resume or REDUCE_ONLY cancels nothing: no count to read
                line += f": {ack['cancelled']} open order(s) cancelled"
            if flatten:
                line += f", {ack['flatten_orders']} closing order(s) sent"
            typer.echo(line)
            if ack.get("detail"):
                typer.echo(f"warning: {ack['detail']}", err=True)
        elif outcome.engine is not None:  # an engine holds the account but did not answer (hung, or too slow)
            typer.echo(f"NOT ACKNOWLEDGED: {outcome.note}; the state is recorded: the engine applies it when it "
                       f"reads the kill switches again, and every session that starts holds it")
        else:
            typer.echo(f"{outcome.note}; the state is recorded and holds for the next session that starts")
        if outcome.not_closed:
            for symbol, why in outcome.not_closed.items():
                typer.echo(f"NOT CLOSED {symbol}: {why}")
        elif flatten:
            typer.echo(f"every position in {c.scope} is closed")
    if (outcome.engine is not None and outcome.ack is None) or outcome.not_closed:
        raise typer.Exit(EXIT_FAILURE)


def _unknown_symbol_warning(repos: "Repositories | DirectRepositories", scope: str) -> str | None:
    """A symbol or strategy scope no order or position of this database names: recorded anyway (a halt before
    a first trade is legitimate), with the closest known names, since a typo would halt nothing that trades."""
    import difflib

    kind, _, name = scope.partition(":")
    if kind == "symbol":
        known = repos.orders.symbols() | {p.symbol for p in repos.positions.all()}
        never = "has never been traded with this database"
    elif kind == "strategy":
        known = repos.orders.strategies()
        never = "has no orders in this database"
    else:
        return None
    if name in known:
        return None
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(f'{kind}:{c}' for c in close)}?" if close else ""
    return f"{kind} {name} {never}{hint} (the change is recorded all the same)"


@app.command()
def kill(
    reason: ReasonOpt,
    scope: ScopeOpt = "global",
    flatten: Annotated[bool, typer.Option("--flatten", help="Also send orders that close the positions in scope.")]
    = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    timeout: TimeoutOpt = None,
    flatten_wait: Annotated[float, typer.Option(
        "--flatten-wait", min=0,
        help="With --flatten: seconds to wait for the closing orders to fill. Exit 1 naming each position "
             "still open, and why.")] = 10.0,
) -> None:
    """HALT a scope: no new orders, every open order in scope cancelled but the exits protecting a position
    (they can only reduce it; --flatten closes it and cancels them). Waits for the engine's ack."""
    _change("HALTED", scope, reason, flatten, db, config, json_out, timeout, flatten_wait)


@app.command("reduce-only")
def reduce_only(reason: ReasonOpt, scope: ScopeOpt = "global", db: DbOpt = None, config: ConfigOpt = None,
                json_out: JsonOpt = False, timeout: TimeoutOpt = None) -> None:
    """Let only orders that reduce exposure in scope through."""
    _change("REDUCE_ONLY", scope, reason, False, db, config, json_out, timeout)


@app.command()
def resume(reason: ReasonOpt, scope: ScopeOpt = "global", db: DbOpt = None, config: ConfigOpt = None,
           json_out: JsonOpt = False, timeout: TimeoutOpt = None) -> None:
    """Set a scope back to ACTIVE (the only way out of a halt, operator's or automatic)."""
    _change("ACTIVE", scope, reason, False, db, config, json_out, timeout)


@ks_app.command("list")
def killswitch_list(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Every scope that was ever changed, with its state and who set it, when and why."""
    from repositories.rows import plain

    rows = plain(_operator_repos(_operator_settings(config, db)).killswitches.listing())
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no kill switch has ever been set: every scope is ACTIVE")
        return
    from engine.report import print_rows

    print_rows("kill switches", rows, ["scope", "state", "since", "actor", "reason", "event_id"],
               drop_first=["event_id", "actor", "since"])  # at 80 columns: scope, state and why, unbroken


@app.command()
def audit(
    db: DbOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    since: Annotated[str | None, typer.Option("--since", help="15m, 2h, 1d, or an ISO date/time.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Most recent records to show (default: 1000 "
                                                                    "in a table, every one with --json).")] = None,
) -> None:
    """The audit log: kill-switch changes (operators' and triggers'), acknowledgements."""
    from repositories.listings import plain

    rows = plain(_repos(db, config).audit.log(_since(since), limit if limit is not None or json_out else 1000))
    if json_out:
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row.get("detail") else None
        typer.echo(json.dumps(rows, indent=2))
        return
    from engine.report import print_audit

    print_audit(rows)


@config_app.command("show")
def config_show(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Every setting's effective value and where it came from: default, config file, environment or flag."""
    from engine.config import ConfigError
    from engine.config_sources import config_file_path, effective_settings

    flags = {"database_url": (db, "--db"), "log_level": (_GLOBAL_FLAGS["log_level"], "--log-level")}
    try:
        rows = [s.to_json() for s in effective_settings(config, flags)]
    except ConfigError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    path, named_by = config_file_path(config)
    if json_out:
        typer.echo(json.dumps({"config_file": str(path) if path else None, "config_file_from": named_by,
                               "settings": rows}, indent=2))
        return
    from engine.report import print_settings

    print_settings(rows, f"config file: {path} (from {named_by})" if path else "config file: none")


def main() -> None:
    """The console script: a database that cannot be reached is one line and exit 2, never a traceback."""
    _hold_gc()
    try:
        app()
    except Exception as err:
        from repositories.errors import describe_database_error

        why = describe_database_error(err)
        if why is None:
            raise
        typer.echo(f"tradectl: {why}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        # The process ends here. Without this the interpreter's last collections walk every object still alive,
        # ~250 ms after a paper session; frozen, they are left to the OS. atexit handlers (logging's flush) and
        # the flush of stdout and stderr still run; only finalizers of objects in reference cycles do not, and
        # the session has closed its connections and files by then.
        gc.freeze()


if __name__ == "__main__":
    main()
