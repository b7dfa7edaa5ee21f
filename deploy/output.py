"""What the user sees: live per-host progress, the summary of each task, the --json document.

Human output goes to stdout, or to stderr when --json owns stdout. Lines are whole and
prefixed by host, never interleaved with another host's. Colour only on a terminal, and
never when NO_COLOR is set (no-color.org) or TERM is dumb. A step that runs long (apt,
pip) says it is alive every `FABSTACK_PROGRESS_EVERY` seconds (default 10).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from deploy.runner import HostResult

SCHEMA = "fabstack.run/1"
COLOURS = {"ok": "32", "changed": "33", "failed": "31", "dim": "2", "bold": "1"}

_lock = threading.Lock()
_local = threading.local()
json_mode = False
runs: list[dict[str, Any]] = []  # every task's results, for the --json document
_running: dict[tuple[str, str], list[float]] = {}  # (host, step) -> [started, last report]
_ticker: threading.Thread | None = None


def stream() -> TextIO:
    return sys.stderr if json_mode else sys.stdout


def colour_on() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream().isatty()


def paint(text: str, style: str) -> str:
    return f"\033[{COLOURS[style]}m{text}\033[0m" if colour_on() else text


def quiet(on: bool) -> None:
    """Silence this thread (a look-ahead run whose results the caller uses)."""
    _local.quiet = on


def write(text: str) -> None:
    """Print text as whole lines under the output lock."""
    if getattr(_local, "quiet", False):
        return
    with _lock:
        out = stream()
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()


def say(host: str, text: str) -> None:
    prefix = paint(f"[{host}]", "dim")
    write("".join(f"{prefix} {line}\n" for line in text.splitlines() or [""]))


def seconds(value: float) -> str:
    return f"{value:.1f}s"


def step_started(host: str, name: str) -> None:
    if getattr(_local, "quiet", False):
        return
    now = time.monotonic()
    with _lock:
        _running[(host, name)] = [now, now]
    if colour_on():  # on a terminal, show what runs now; logs get the result lines only
        say(host, paint(f"{name} ...", "dim"))
    _start_ticker()


def step_finished(host: str, name: str, status: str, took: float, dry_run: bool, error: str = "") -> None:
    with _lock:
        _running.pop((host, name), None)
    note = " (dry run)" if dry_run and status == "changed" else f": {error}" if error else ""
    say(host, f"{name}: {paint(status, status)}{note} {paint(seconds(took), 'dim')}")


def _start_ticker() -> None:
    global _ticker
    with _lock:
        if _ticker is not None:
            return
        _ticker = threading.Thread(target=_tick, name="fabstack-progress", daemon=True)
    _ticker.start()


def _tick() -> None:
    every = float(os.environ.get("FABSTACK_PROGRESS_EVERY", "10"))
    while True:
        time.sleep(min(every, 1.0))
        now = time.monotonic()
        with _lock:
            due = [(key, now - times[0]) for key, times in _running.items() if now - times[1] >= every]
            for key, _ in due:
                _running[key][1] = now
        for (host, name), took in due:
            say(host, f"{name}: still running, {seconds(took)}")


def summary(results: list[HostResult]) -> None:
    """The table of hosts, what failed on each failed host, then the stable summary lines.
    A dry run says so first: its CHANGED column is what a real run would change."""
    width = max([len("HOST"), *(len(r.host) for r in results)])
    lines = (
        ["dry run: no host was changed; CHANGED counts what a real run would change"]
        if any(r.dry_run for r in results)
        else []
    )
    lines += [paint(f"{'HOST':<{width}}  {'OK':>4} {'CHANGED':>8} {'FAILED':>7} {'TIME':>8}", "bold")]
    for r in results:
        row = f"{r.host:<{width}}  {r.count('ok'):>4} {r.count('changed'):>8} {r.failures:>7} {seconds(r.seconds):>8}"
        lines.append(paint(row, r.status))
    for r in results:
        if r.failed:
            lines += _failure(r)
    lines += [r.summary() for r in results]
    write("\n".join(lines))


def brief(results: list[HostResult]) -> None:
    """What failed on each failed host, then the stable summary lines (read-only tasks)."""
    lines = [line for r in results if r.failed for line in _failure(r)]
    write("\n".join(lines + [r.summary() for r in results]))


def _failure(r: HostResult) -> list[str]:
    step = next((s for s in r.steps if s.status == "failed"), None)
    if step is None:  # never connected, or the connection broke; the error names the host
        return [paint(r.error if r.host.rpartition("@")[2] in r.error else f"{r.host}: {r.error}", "failed")]
    lines = [paint(f"{r.host}: step '{step.name}' failed: {step.error}", "failed")]
    if step.command:
        command = step.command if len(step.command) <= 300 else step.command[:300] + " ..."
        lines.append("  command: " + command.replace("\n", "\n    "))
    if step.output:
        lines += ["  | " + line for line in step.output.splitlines()[-10:]]
    return lines


class LineWriter:
    """A file-like sink for a streamed command: whole lines, prefixed by host."""

    def __init__(self, host: str):
        self.host = host
        self.partial = ""

    def write(self, text: str) -> None:
        lines = (self.partial + text.replace("\r", "")).split("\n")
        self.partial = lines.pop()
        for line in lines:
            say(self.host, line)

    def flush(self) -> None:
        pass


def record(task: str, results: list[HostResult], dry_run: bool, phase: str = "") -> None:
    """Keep a task's results for the --json document."""
    with _lock:
        runs.append(
            {
                "task": task,
                "phase": phase,
                "dry_run": dry_run,
                "hosts": [r.as_dict() for r in results],
            }
        )


def document(error: str = "") -> dict[str, Any]:
    """The --json document: every task's hosts and steps (schema in docs/json.md)."""
    ok = not error and all(h["status"] != "failed" for run in runs for h in run["hosts"])
    return {"schema": SCHEMA, "ok": ok, "error": error, "runs": runs}


def print_document(error: str = "") -> None:
    with _lock:
        sys.stdout.write(json.dumps(document(error), indent=2) + "\n")
        sys.stdout.flush()
