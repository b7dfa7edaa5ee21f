"""Shell that runs on a host lives in deploy/remote/*.sh (shellcheck-clean, readable as
shell); Python sends a file's functions as a prelude of a command, with the values they
read assigned first, each quoted here and nowhere else."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

REMOTE = Path(__file__).resolve().parent / "remote"


@cache
def text(name: str) -> str:
    """A remote script's text (package data, so an installed wheel has it too)."""
    return (REMOTE / name).read_text()


def prelude(name: str, **values: object) -> str:
    """values as quoted shell assignments, then the functions of deploy/remote/NAME."""
    assignments = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())
    return assignments + text(name)
