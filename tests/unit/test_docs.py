"""The README tells the truth about the codes an operator sees."""

from __future__ import annotations

import re
from pathlib import Path

from engine.domain import RejectCode

README = Path(__file__).resolve().parents[2] / "README.md"


def _codes_in_code_tables(text: str) -> set[str]:
    """Every `code` in the first column of the README's tables headed `| code | ...`."""
    codes: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if line.startswith("| code |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            in_table = False
        if in_table:
            first = line.split("|")[1]
            codes.update(re.findall(r"`([a-z_]+)`", first))
    return codes


def test_the_readme_reject_tables_list_exactly_the_reject_codes() -> None:
    assert _codes_in_code_tables(README.read_text(encoding="utf-8")) == {c.value for c in RejectCode}


def test_the_readme_points_only_inside_the_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    outside = [link for link in links if link.startswith("..") or link.startswith("/")]
    assert outside == []
