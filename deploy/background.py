"""Background processes (the `processes` setting): a Celery worker, an RQ worker, any
long-running command of the project, run from the current release as the app user with
the app's environment, kept running by gunicorn's process manager (docs/processes.md).

Parsed and checked here, before any host is touched: names, counts, where they run, and
that the command names a program the release or its virtualenv can hold.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

KEYS = ("command", "count", "hosts", "stop_timeout")
PLACES = ("all", "one")


class BackgroundError(Exception):
    """A bad `processes` setting: the message names the key and the fix."""


@dataclass(frozen=True)
class Process:
    """One named background command, run `count` times on each of its hosts."""

    name: str
    argv: tuple[str, ...]
    count: int = 1
    hosts: str = "all"  # every app host, or one (the first)
    stop_timeout: int = 60  # seconds a TERM may take (running tasks finish) before KILL

    @property
    def program(self) -> str:
        """What runs: manage.py with the virtualenv's python, a name from the virtualenv's
        bin/, or a path inside the release."""
        return self.argv[0]

    def command_line(self, venv: str) -> list[str]:
        """The argv as the host runs it, in the release directory."""
        first, rest = self.argv[0], list(self.argv[1:])
        if first == "manage.py":
            return [f"{venv}/bin/python", "manage.py", *rest]
        if "/" in first:
            return [first, *rest]
        return [f"{venv}/bin/{first}", *rest]


def parse(raw: dict, project: Path) -> tuple[Process, ...]:
    """The `processes` mapping, checked."""
    found = []
    for name, spec in raw.items():
        where = f"processes.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", str(name)):
            raise BackgroundError(f"{where}: use a name of lowercase letters, digits and - (it names units and logs)")
        if isinstance(spec, str):
            spec = {"command": spec}
        if not isinstance(spec, dict):
            raise BackgroundError(f"{where}: use a command line, or a mapping with command, count, hosts, stop_timeout")
        unknown = sorted(set(map(str, spec)) - set(KEYS))
        if unknown:
            raise BackgroundError(f"{where}.{unknown[0]} is not a process setting; use: {', '.join(KEYS)}")
        try:
            argv = tuple(shlex.split(str(spec.get("command") or "")))
        except ValueError as exc:
            raise BackgroundError(f"{where}.command does not parse ({exc}); quote it as a shell would") from None
        if not argv:
            raise BackgroundError(f"{where}.command is empty; give the command, e.g. celery -A mysite worker")
        first = argv[0]
        if first.startswith("/") or ".." in first.split("/"):
            raise BackgroundError(
                f"{where}.command: {first} is outside the release; run programs from the release or its virtualenv"
            )
        if ("/" in first or first == "manage.py") and not (project / first).is_file():
            raise BackgroundError(f"{where}.command: {first} is not in the project ({project}); fix the path")
        count, place, timeout = spec.get("count", 1), spec.get("hosts", "all"), spec.get("stop_timeout", 60)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise BackgroundError(f"{where}.count={count!r}: use 1 or more (remove the process to stop it)")
        if place not in PLACES:
            raise BackgroundError(f"{where}.hosts={place!r}: use all (every app host) or one (the first)")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise BackgroundError(f"{where}.stop_timeout={timeout!r}: use seconds >= 1")
        found.append(Process(str(name), argv, count, place, timeout))
    return tuple(found)
