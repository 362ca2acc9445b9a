"""What the benchmarks share: throwaway databases (never the shared one a URL names), a feed of resting
signals so a kill has working orders to cancel, and an older commit's code in a temporary worktree."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def fresh_database(url: str | None, prefix: str = "tradectl_bench") -> Iterator[str]:
    """A temp SQLite file when no URL is given; SQLite as given; on PostgreSQL a database made beside the
    one named (``prefix`` and this pid) and dropped afterwards."""
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    if not url.startswith("postgresql"):
        yield url
        return
    name = f"{prefix}_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def feed_resting(pipe: IO[str], stop: threading.Event, prefix: str, symbols: int, every_s: float) -> None:
    """Long limit orders far below any market (they rest), one every ``every_s``, round robin over ``symbols``
    symbols named ``prefix`` and a number, until ``stop`` or the reader goes away."""
    i = 0
    try:
        while not stop.is_set():
            obj = {"id": f"{prefix.lower()}{time.time_ns()}-{i}", "symbol": f"{prefix}{i % symbols:03d}",
                   "direction": "long", "win_prob": 0.6, "payoff": 1.5, "order_type": "LMT", "limit_price": 1.0}
            pipe.write(json.dumps(obj) + "\n")
            pipe.flush()
            i += 1
            time.sleep(every_s)
    except (BrokenPipeError, ValueError):
        return


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """The code of ``rev`` in a temporary worktree of this repository, removed afterwards."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), rev], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
