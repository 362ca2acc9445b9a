"""The ``tradectl`` console script.

``tradectl --version`` is answered here, before the command line is built: typer and the commands'
definitions cost ~40 ms of the 100 ms it may take, and ``importlib.metadata`` ~50, so the version is
``engine.__version__`` (the package's metadata is built from it). Everything else, ``--version`` among
other words included, is ``engine.cli``'s.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from engine import __version__

        print(f"tradectl {__version__}")  # the same line as engine.cli's --version
        return
    from engine.cli import main as cli_main

    cli_main()
