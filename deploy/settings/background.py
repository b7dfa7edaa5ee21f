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


def parse(raw: dict, project: Path, section: str = "processes") -> tuple[Process, ...]:
    """The `processes` mapping (or a schedule's commands), checked."""
    found = []
    for name, spec in raw.items():
        where = f"{section}.{name}"
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


# Schedules (the `schedule` setting) ------------------------------------------------------
EVERY = {  # shorthand -> (cron, systemd OnCalendar)
    "minute": ("* * * * *", "*-*-* *:*:00"),
    "hourly": ("0 * * * *", "*-*-* *:00:00"),
    "daily": ("0 0 * * *", "*-*-* 00:00:00"),
    "weekly": ("0 0 * * 1", "Mon *-*-* 00:00:00"),
    "monthly": ("0 0 1 * *", "*-*-01 00:00:00"),
}
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Job:
    """A command run on a schedule, on one host (the first app host), never two at once."""

    name: str
    argv: tuple[str, ...]
    cron: str  # five cron fields
    calendar: str  # the same time as systemd's OnCalendar

    def command_line(self, venv: str) -> list[str]:
        return Process(self.name, self.argv).command_line(venv)


def parse_schedule(raw: dict, project: Path) -> tuple[Job, ...]:
    """The `schedule` mapping, checked: NAME: {command, every}."""
    jobs = []
    for name, spec in raw.items():
        where = f"schedule.{name}"
        if not isinstance(spec, dict) or set(map(str, spec)) - {"command", "every"} or "every" not in spec:
            raise BackgroundError(
                f"{where}: use a mapping with command and every (minute, hourly, daily, or cron fields)"
            )
        (process,) = parse({name: {"command": spec.get("command")}}, project, "schedule")
        every = str(spec["every"]).strip()
        cron = EVERY[every][0] if every in EVERY else every
        jobs.append(Job(process.name, process.argv, cron, calendar(cron, f"{where}.every")))
    return tuple(jobs)


def calendar(cron: str, where: str) -> str:
    """systemd's OnCalendar for five cron fields (numbers, *, lists, ranges, steps)."""
    fields = cron.split()
    if len(fields) != 5:
        raise BackgroundError(f"{where}={cron!r}: use minute, hourly, daily, weekly, monthly or five cron fields")
    parts = []
    for text, (what, low, high) in zip(fields, CRON_FIELDS, strict=True):
        parts.append(_field(text, what, low, high, where, cron))
    minute, hour, day, month, weekday = parts
    days = "" if weekday == "*" else ",".join(_weekdays(weekday)) + " "
    return f"{days}*-{month}-{day} {hour}:{minute}:00"


def _field(text: str, what: str, low: int, high: int, where: str, cron: str) -> str:
    """One cron field in systemd's words: `*/15` -> `00/15`, `1-5` -> `1..5`."""
    out = []
    for item in text.split(","):
        found = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", item)
        if not found or (found[2] and found[1] == "*"):
            raise BackgroundError(f"{where}={cron!r}: {what} {item!r} does not parse; use N, N-M, */N or *")
        start, end, step = found[1], found[2], found[3]
        numbers = [int(n) for n in (start, end) if n and n != "*"]
        if any(not low <= n <= high for n in numbers) or (step and int(step) == 0):
            raise BackgroundError(f"{where}={cron!r}: {what} {item!r} is out of range {low}-{high}")
        if start == "*":
            out.append(f"{low}/{step}" if step else "*")
        elif end:
            out.append(f"{start}..{end}" + (f"/{step}" if step else ""))
        else:
            out.append(start + (f"/{step}" if step else ""))
    return ",".join(out)


def _weekdays(field: str) -> list[str]:
    """systemd's day names for a converted day-of-week field (0 and 7 are Sunday)."""
    names = []
    for item in field.split(","):
        first, _, last = item.partition("..")
        if "/" in item or (first == "0" and last):
            raise BackgroundError("schedule: a day-of-week step or a range from 0 is not supported; list the days")
        names.append(f"{DAYS[int(first)]}..{DAYS[int(last)]}" if last else DAYS[int(first)])
    return names
