"""The ``tradectl`` console script.

``tradectl --version`` is answered here, before the command line is built: typer and the commands'
definitions cost ~40 ms of the 100 ms it may take. Everything else, ``--version`` among other words
included, is ``engine.cli``'s.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from importlib.metadata import version

        print(f"tradectl {version('tradectl')}")  # the same line as engine.cli's --version
        return
    from engine.cli import main as cli_main

    cli_main()
