"""The docs keep their promises: every error message in docs/troubleshooting.md is one a
test produces and checks."""

from __future__ import annotations

import re

from conftest import REPO

HEADING = re.compile(r"^### `(.+)`$", re.M)


def message_pattern(heading: str) -> re.Pattern:
    """The heading as a regex: `<...>` placeholders match the part that names a value."""
    parts = re.split(r"<[^>]+>", re.sub(r"\s*<[^>]+>$", "", heading))  # a value at the end may be cut off
    return re.compile(".+?".join(re.escape(part) for part in parts))


def test_every_troubleshooting_message_is_checked_by_a_test():
    messages = HEADING.findall((REPO / "docs" / "troubleshooting.md").read_text())
    assert len(messages) >= 40
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_docs.py")
    unchecked = [m for m in messages if not message_pattern(m).search(sources)]
    assert not unchecked, f"no test produces these documented errors: {unchecked}"


def test_every_fabstack_figure_in_the_comparison_is_one_the_bench_recorded():
    """comparison.md's fabstack column quotes seconds that builds.md (bench/run.py's
    tables) holds: a figure changed in one place and not the other fails here."""
    rows = [line.split("|")[1:-1] for line in (REPO / "docs" / "comparison.md").read_text().splitlines()]
    header = next(r for r in rows if r and r[1].strip() == "fabstack")
    assert [c.strip() for c in header] == ["", "fabstack", "Ansible", "pyinfra", "Kamal", "fujin"]
    figures = [f for r in rows if len(r) == 6 for f in re.findall(r"\b\d+\.\d+ s\b", r[1])]
    assert len(figures) >= 3, figures
    recorded = (REPO / "docs" / "builds.md").read_text()
    assert [f for f in figures if f not in recorded] == []
