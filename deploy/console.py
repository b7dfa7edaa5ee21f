"""What the user sees: live per-host progress, the summary of each task, the --json document.

Human output goes to stdout, or to stderr when --json owns stdout. Lines are whole and
prefixed by host, never interleaved with another host's. Colour only on a terminal, and
never when NO_COLOR is set (no-color.org) or TERM is dumb. A step that runs long (apt,
pip) says it is alive every `FABSTACK_PROGRESS_EVERY` seconds (default 10).

One Console per fab invocation (deploy.runner.Session holds it): it keeps the run's
--json document and the steps in progress; nothing here is module-level state.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

from deploy.results import HostResult

SCHEMA = "fabstack.run/1"
COLOURS = {"ok": "32", "changed": "33", "failed": "31", "skipped": "2", "dim": "2", "bold": "1"}


def seconds(value: float) -> str:
    return f"{value:.1f}s"


class Console:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.runs: list[dict[str, Any]] = []  # every task's results, for the --json document
        self._lock = threading.Lock()
        self._local = threading.local()
        self._running: dict[tuple[str, str], list[float]] = {}  # (host, step) -> [started, last report]
        self._ticker: threading.Thread | None = None
        self._phases: list[list[HostResult]] = []  # the phases of the task running now, folded at its end

    def stream(self) -> TextIO:
        return sys.stderr if self.json_mode else sys.stdout

    def colour_on(self) -> bool:
        if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
            return False
        return self.stream().isatty()

    def paint(self, text: str, style: str) -> str:
        return f"\033[{COLOURS[style]}m{text}\033[0m" if self.colour_on() else text

    def quiet(self, on: bool) -> None:
        """Silence this thread (a look-ahead run whose results the caller uses)."""
        self._local.quiet = on

    @property
    def silenced(self) -> bool:
        return getattr(self._local, "quiet", False)

    def write(self, text: str) -> None:
        """Print text as whole lines under the output lock."""
        if self.silenced:
            return
        with self._lock:
            out = self.stream()
            out.write(text if text.endswith("\n") else text + "\n")
            out.flush()

    def say(self, host: str, text: str) -> None:
        prefix = self.paint(f"[{host}]", "dim")
        self.write("".join(f"{prefix} {line}\n" for line in text.splitlines() or [""]))

    def step_started(self, host: str, name: str) -> None:
        if self.silenced:
            return
        now = time.monotonic()
        with self._lock:
            self._running[(host, name)] = [now, now]
        if self.colour_on():  # on a terminal, show what runs now; logs get the result lines only
            self.say(host, self.paint(f"{name} ...", "dim"))
        self._start_ticker()

    def step_finished(self, host: str, name: str, status: str, took: float, dry_run: bool, error: str = "") -> None:
        with self._lock:
            self._running.pop((host, name), None)
        note = " (dry run)" if dry_run and status in ("changed", "skipped") else f": {error}" if error else ""
        self.say(host, f"{name}: {self.paint(status, status)}{note} {self.paint(seconds(took), 'dim')}")

    def _start_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None:
                return
            self._ticker = threading.Thread(target=self._tick, name="fabstack-progress", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        every = float(os.environ.get("FABSTACK_PROGRESS_EVERY", "10"))
        while True:
            time.sleep(min(every, 1.0))
            now = time.monotonic()
            with self._lock:
                due = [(key, now - times[0]) for key, times in self._running.items() if now - times[1] >= every]
                for key, _ in due:
                    self._running[key][1] = now
            for (host, name), took in due:
                self.say(host, f"{name}: still running, {seconds(took)}")

    def summary(self, results: list[HostResult]) -> None:
        """The table of hosts, what failed on each failed host, then the stable summary
        lines. A dry run says so first: its CHANGED column is what a real run would change."""
        width = max([len("HOST"), *(len(r.host) for r in results)])
        lines = (
            ["dry run: no host was changed; CHANGED counts what a real run would change"]
            if any(r.dry_run for r in results)
            else []
        )
        lines += [self.paint(f"{'HOST':<{width}}  {'OK':>4} {'CHANGED':>8} {'FAILED':>7} {'TIME':>8}", "bold")]
        for r in results:
            row = (
                f"{r.host:<{width}}  {r.count('ok'):>4} {r.count('changed'):>8} {r.failures:>7} {seconds(r.seconds):>8}"
            )
            lines.append(self.paint(row, r.status))
        for r in results:
            if r.failed:
                lines += self._failure(r)
        lines += [r.summary() for r in results]
        self.write("\n".join(lines))

    def task_started(self) -> None:
        self._phases = []

    @property
    def in_phases(self) -> bool:
        return bool(self._phases)

    def phase_done(self, results: list[HostResult]) -> None:
        """Keep one phase's results (a batch of a rolling deploy, the db host first...)
        for the task's one summary."""
        self._phases.append(results)

    def task_summary(self) -> None:
        """The summary of a task that ran in phases: every host once, its steps over
        every phase added up (a rolling deploy printed a table per batch, and none whole)."""
        if not self._phases:
            return
        folded: dict[str, HostResult] = {}
        for results in self._phases:
            for r in results:
                into = folded.setdefault(r.host, HostResult(r.host, dry_run=r.dry_run))
                into.steps += r.steps
                into.seconds += r.seconds
                into.commands += r.commands
                into.error = into.error or r.error
        self._phases = []
        self.summary(list(folded.values()))

    def brief(self, results: list[HostResult]) -> None:
        """What failed on each failed host, then the stable summary lines (read-only tasks)."""
        lines = [line for r in results if r.failed for line in self._failure(r)]
        self.write("\n".join(lines + [r.summary() for r in results]))

    def _failure(self, r: HostResult) -> list[str]:
        step = next((s for s in r.steps if s.status == "failed"), None)
        if step is None:  # never connected, or the connection broke; the error names the host
            return [self.paint(r.error if r.host.rpartition("@")[2] in r.error else f"{r.host}: {r.error}", "failed")]
        lines = [self.paint(f"{r.host}: step '{step.name}' failed: {step.error}", "failed")]
        if step.command:
            command = step.command if len(step.command) <= 300 else step.command[:300] + " ..."
            lines.append("  command: " + command.replace("\n", "\n    "))
        if step.output:
            lines += ["  | " + line for line in step.output.splitlines()[-10:]]
        return lines

    def record(self, task: str, app: str, results: list[HostResult], dry_run: bool, phase: str = "") -> None:
        """Keep a task's results for the --json document."""
        with self._lock:
            self.runs.append(
                {"task": task, "app": app, "phase": phase, "dry_run": dry_run, "hosts": [r.as_dict() for r in results]}
            )

    def document(self, error: str = "") -> dict[str, Any]:
        """The --json document: every task's hosts and steps (schema in docs/json.md)."""
        ok = not error and all(h["status"] != "failed" for run in self.runs for h in run["hosts"])
        return {"schema": SCHEMA, "ok": ok, "error": error, "runs": self.runs}

    def print_document(self, error: str = "") -> None:
        with self._lock:
            sys.stdout.write(json.dumps(self.document(error), indent=2) + "\n")
            sys.stdout.flush()


class LineWriter:
    """A file-like sink for a streamed command: whole lines, prefixed by host."""

    def __init__(self, console: Console, host: str):
        self.console = console
        self.host = host
        self.partial = ""

    def write(self, text: str) -> None:
        lines = (self.partial + text.replace("\r", "")).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.console.say(self.host, line)

    def flush(self) -> None:
        pass
