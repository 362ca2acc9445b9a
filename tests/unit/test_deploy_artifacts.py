"""The deployment files agree with the code: every metric the alert rules and the dashboard use exists,
the compose file keeps ports on localhost and secrets in files, the unit is Type=notify with a watchdog."""

from __future__ import annotations

import configparser
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.clock import SimClock
from engine.config import load_settings
from engine.health import observe
from engine.metrics import metric_names
from engine.session import PaperSession
from paper.market import SIM_START

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\btradectl_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('deploy') / 'm.db'}"
    session = PaperSession(load_settings(database_url=url))
    session.prepare(SimClock(SIM_START), SIM_START)
    try:
        _, metrics = observe(session)
        yield metric_names(metrics.registry)
    finally:
        session.control.close()
        session.db.dispose()


def rule_exprs() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads((DEPLOY / "grafana" / "tradectl.json").read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_every_metric_in_the_alert_rules_exists(exposed: set[str]) -> None:
    used = {n for e in rule_exprs() for n in NAME.findall(e)}
    assert len(used) >= 10
    assert used - exposed == set()


def test_every_metric_on_the_dashboard_exists(exposed: set[str]) -> None:
    used = {n for e in dashboard_exprs() for n in NAME.findall(e)}
    assert len(used) >= 20
    assert used - exposed == set()


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def test_compose_binds_every_published_port_to_localhost() -> None:
    ports = [str(p) for svc in compose()["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports


def test_compose_takes_secrets_from_files_never_from_plain_variables() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
    gateway = services["ib-gateway"]["environment"]
    assert gateway["TWS_PASSWORD_FILE"] == "/run/secrets/tws_password"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    assert all("file" in s for s in compose()["secrets"].values())


def test_the_compose_setup_steps_make_every_secret_file_the_compose_file_reads() -> None:
    """A trial followed the header's steps and the daemon refused to start: no tradectl_http_secret."""
    header = "\n".join(line for line in (DEPLOY / "docker-compose.yml").read_text().splitlines()
                       if line.startswith("#"))
    made = set(re.findall(r"> (secrets/\w+)", header))
    wanted = {str(s["file"]).removeprefix("./") for s in compose()["secrets"].values()}
    assert wanted <= made, sorted(wanted - made)


def test_the_example_config_writes_its_reports_where_the_daemon_may_write() -> None:
    """The image's working directory is root's; the unit's state directory and the image's volume are not."""
    settings = load_settings(DEPLOY / "tradectl.toml")
    assert settings.report.dir == Path("/var/lib/tradectl/reports")
    assert "ReadWritePaths=/var/lib/tradectl" in (DEPLOY / "tradectl.service").read_text()
    assert "tradectl-state:/var/lib/tradectl" in (DEPLOY / "docker-compose.yml").read_text()
    assert "chown tradectl /var/lib/tradectl" in (DEPLOY / "Dockerfile").read_text()


def test_the_unit_serves_http_on_loopback_with_a_host_token_file_over_the_containers_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in (DEPLOY / "tradectl.service").read_text().splitlines():
        if raw.startswith("Environment=TRADECTL_HTTP__"):
            key, _, value = raw.removeprefix("Environment=").partition("=")
            monkeypatch.setenv(key, value)
    http = load_settings(DEPLOY / "tradectl.toml").http
    assert http.host == "127.0.0.1" and str(http.secret_file) == "/etc/tradectl/http_secret"


def test_compose_sets_the_ibc_restart_2fa_and_session_actions() -> None:
    env = compose()["services"]["ib-gateway"]["environment"]
    assert re.fullmatch(r"\d{1,2}:\d\d (AM|PM)", env["AUTO_RESTART_TIME"])
    assert env["TWOFA_TIMEOUT_ACTION"] == "restart"
    assert env["EXISTING_SESSION_DETECTED_ACTION"] in ("primary", "primaryoverride", "secondary", "manual")


class _CaseKept(configparser.ConfigParser):
    """systemd keys are case-sensitive (ConfigParser lower-cases them by default)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit() -> configparser.ConfigParser:
    parser = _CaseKept(strict=False, interpolation=None)
    parser.read_string((DEPLOY / "tradectl.service").read_text())
    return parser


def test_the_unit_is_type_notify_with_a_watchdog_and_restarts_on_failure() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert "tradectl run --broker ibkr" in service["ExecStart"]


def test_the_example_config_loads() -> None:
    settings = load_settings(DEPLOY / "tradectl.toml")
    assert settings.alerts.events.daily_digest == "silent"


def test_the_image_installs_in_place_so_the_migrations_are_found() -> None:
    """From a wheel, repositories/db.py's alembic/ beside the packages is site-packages/alembic: the library."""
    assert re.search(r"pip install .*-e \.", (DEPLOY / "Dockerfile").read_text())


def test_migrations_that_are_not_there_are_named_not_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import repositories.db

    monkeypatch.setattr(repositories.db, "ALEMBIC_DIR", tmp_path / "alembic")  # as in site-packages
    with pytest.raises(FileNotFoundError, match=r"migration scripts are not at .*pip install -e"):
        repositories.db.alembic_config("sqlite://")
