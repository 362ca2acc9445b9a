"""The operator's commands start fast because they import only what they use: no SQLAlchemy, pydantic,
structlog or alembic on their path (scripts/bench_cli.py measures the time; this holds the imports).

Each command runs in a fresh interpreter, which then reports the modules it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from repositories.db import ensure_schema

PROBE = """
import json, sys
from engine.cli import main
sys.argv = ["tradectl", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": sorted(m.split(".")[0] for m in sys.modules)}))
"""
HEAVY = {"sqlalchemy", "pydantic", "pydantic_settings", "structlog", "alembic"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_") and k != "DATABASE_URL"}


def loaded_by(*args: str) -> tuple[object, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          timeout=60, env=_env())
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["code"], set(report["loaded"]), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["kill", "--help"]])
def test_help_and_version_load_no_database_settings_or_rendering_library(args: list[str]) -> None:
    code, loaded, _ = loaded_by(*args)
    assert code in (0, None)
    assert loaded & (HEAVY | {"rich", "sqlite3", "psycopg"}) == set()


@pytest.mark.parametrize("args", [["kill", "--reason", "drill"], ["status", "--json"], ["killswitch", "list", "--json"],
                                  ["resume", "--reason", "drill", "--json"]])
def test_the_operators_commands_load_only_the_plain_database_driver(args: list[str], db_url: str) -> None:
    ensure_schema(db_url)
    code, loaded, out = loaded_by(*args, "--db", db_url)
    assert code in (0, None), out
    assert loaded & HEAVY == set()
    assert ("psycopg" if db_url.startswith("postgresql") else "sqlite3") in loaded


def test_version_prints_the_installed_package_version_by_either_path() -> None:
    console = Path(sys.executable).parent / "tradectl"  # answers --version alone before loading engine.cli
    outputs = []
    for argv in ([str(console), "--version"], [sys.executable, "-m", "engine.cli", "--version"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1] == f"tradectl {version('tradectl')}\n"


def test_the_console_script_answers_version_without_loading_the_command_line() -> None:
    probe = "import sys; sys.argv = ['tradectl', '--version']; from engine.console import main; main(); " \
            "print(sorted(m for m in ('typer', 'engine.cli') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "[]"
