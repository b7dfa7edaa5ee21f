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
