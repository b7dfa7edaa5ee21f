"""The runner: one task on many hosts at once, each host's steps in order.

A host that fails stops only itself; every host gets a summary line
`HOST ok=N changed=M failed=K` (a stable format scripts read) and the run fails when
any host did. Connections are opened once per host and reused by every task of a run.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fabric import Config, Connection

from deploy.connection import ConnectError, connect
from deploy.settings import Settings

_print_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_connections_lock = threading.Lock()
opened: dict[str, int] = {}  # SSH connections opened per host in this process (for -v and bench/)


class StepFailed(Exception):
    """A remote command failed; carries the command and the tail of its output."""

    def __init__(self, message: str, command: str = "", output: str = ""):
        super().__init__(message)
        self.command = command
        self.output = output


@dataclass
class StepResult:
    name: str
    status: str  # ok | changed | failed
    seconds: float
    diff: str = ""
    error: str = ""


@dataclass
class HostResult:
    host: str
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    commands: int = 0

    def count(self, status: str) -> int:
        return sum(1 for step in self.steps if step.status == status)

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.count("failed") > 0

    def summary(self) -> str:
        failed = self.count("failed") or (1 if self.error else 0)
        return f"{self.host} ok={self.count('ok')} changed={self.count('changed')} failed={failed}"


_quiet = threading.local()


def say(host: str, text: str) -> None:
    """Print whole lines prefixed by host, never interleaved with another host's."""
    if getattr(_quiet, "on", False):
        return
    with _print_lock:
        for line in text.splitlines() or [""]:
            sys.stdout.write(f"[{host}] {line}\n")
        sys.stdout.flush()


class HostRun:
    """One host during one task: its connection, facts, dry-run flag, results, handlers."""

    def __init__(self, host: str, conn: Connection, settings: Settings, dry_run: bool, verbose: bool):
        self.host = host
        self.conn = conn
        self.settings = settings
        self.dry_run = dry_run
        self.verbose = verbose
        self.facts: dict[str, str] = {}
        self.result = HostResult(host)
        self.notified: list[str] = []
        self.commands = 0
        self._diff = ""
        self._stage = ""
        self._sftp = None

    @property
    def is_root(self) -> bool:
        return self.conn.user == "root"

    def run(self, command: str, check: bool = True, timeout: int | None = None) -> str:
        """Run command as root on the host (via sudo for other users); return its stdout."""
        self.commands += 1
        if self.verbose:
            say(self.host, f"$ {command}")
        wrapped = command if self.is_root else f"sh -c {shlex.quote(command)}"
        runner = self.conn.run if self.is_root else self.conn.sudo
        result = runner(wrapped, hide=True, warn=True, in_stream=False, timeout=timeout)
        if check and result.exited != 0:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise StepFailed(output[-1] if output else f"exit code {result.exited}", command, "\n".join(output[-15:]))
        return result.stdout

    def show_diff(self, diff: str) -> None:
        """Record what a file would become (shown in a dry run, kept in the step result)."""
        self._diff += diff

    def change(self, command: str) -> None:
        """Run a command that changes the host, or only record it in a dry run."""
        if self.dry_run:
            if self.verbose:
                say(self.host, f"(dry run) would run: {command}")
            return
        self.run(command)

    def stage(self, name: str, content: bytes) -> str:
        """Upload content to a private staging directory on the host; return its path."""
        if self._sftp is None:
            self._sftp = self.conn.sftp()
            self._stage = self.conn.run("mktemp -d /tmp/fabstack.XXXXXXXX", hide=True, in_stream=False).stdout.strip()
            self.commands += 1
        path = f"{self._stage}/{name}"
        with self._sftp.open(path, "wb") as remote:
            remote.set_pipelined(True)
            remote.write(content)
        return path

    def read(self, path: str) -> str:
        """A file's current text on the host (used for dry-run diffs)."""
        return self.run(f"cat {shlex.quote(path)} 2>/dev/null || true")

    def notify(self, handler: str) -> None:
        if handler not in self.notified:
            self.notified.append(handler)

    def step(self, name: str, action: Callable[[HostRun], bool]) -> bool:
        """Run one idempotent step; record ok/changed/failed with timing and diff."""
        started = time.monotonic()
        self._diff = ""
        try:
            changed = action(self)
        except StepFailed as exc:
            self.result.steps.append(StepResult(name, "failed", time.monotonic() - started, error=str(exc)))
            say(self.host, f"{name}: failed: {exc}")
            if exc.output and exc.output.strip() != str(exc):
                say(self.host, "  " + exc.output.replace("\n", "\n  "))
            raise
        status = "changed" if changed else "ok"
        self.result.steps.append(StepResult(name, status, time.monotonic() - started, diff=self._diff))
        say(self.host, f"{name}: {status}" + (" (dry run)" if changed and self.dry_run else ""))
        if self._diff and self.dry_run:
            say(self.host, self._diff.rstrip("\n"))
        return changed

    def cleanup(self) -> None:
        if self._stage:
            self.conn.run(f"rm -rf {self._stage}", hide=True, warn=True, in_stream=False)
            self._stage = ""
        self._sftp = None  # Fabric caches the SFTP session on the connection; later tasks reuse it


Plan = Callable[[HostRun], None]


def _connection(host: str, config: Config | None, settings: Settings) -> Connection:
    with _connections_lock:
        conn = _connections.get(host)
    if conn is None or not conn.is_connected:
        conn = connect(host, config, settings.known_hosts, settings.connect_timeout, settings.accept_new_host_keys)
        with _connections_lock:
            _connections[host] = conn
            opened[host] = opened.get(host, 0) + 1
    return conn


def run_on_host(
    host: str, plan: Plan, settings: Settings, config: Config | None, dry_run: bool, verbose: bool, quiet: bool = False
) -> HostResult:
    started = time.monotonic()
    _quiet.on = quiet
    try:
        conn = _connection(host, config, settings)
    except ConnectError as exc:
        say(host, f"failed: {exc}")
        return HostResult(host, error=str(exc), seconds=time.monotonic() - started)
    run = HostRun(host, conn, settings, dry_run, verbose)
    try:
        plan(run)
    except StepFailed:
        pass
    except Exception as exc:  # a broken connection mid-run must not stop the other hosts
        run.result.error = f"{type(exc).__name__}: {exc}"
        say(host, f"failed: {run.result.error}")
    finally:
        with contextlib.suppress(Exception):  # the host may be gone; its result says so already
            run.cleanup()
    run.result.seconds = time.monotonic() - started
    run.result.commands = run.commands
    if verbose:
        say(host, f"remote commands: {run.commands}, ssh connections opened so far: {opened.get(host, 0)}")
    return run.result


def run_task(
    hosts: list[str], plan: Plan, settings: Settings, config: Config | None = None, dry_run: bool = False,
    verbose: bool = False, quiet: bool = False,
) -> list[HostResult]:  # fmt: skip
    """Run plan on every host concurrently (at most settings.parallel at once); quiet
    prints nothing (a look-ahead whose results the caller uses)."""
    with ThreadPoolExecutor(max_workers=min(settings.parallel, max(len(hosts), 1))) as pool:
        results = list(pool.map(lambda h: run_on_host(h, plan, settings, config, dry_run, verbose, quiet), hosts))
    if not quiet:
        with _print_lock:
            for result in results:
                print(result.summary())
    return results
