"""The runner: one task on many hosts at once, each host's steps in order.

A host that fails stops only itself; every host gets a summary line
`HOST ok=N changed=M failed=K` (a stable format scripts read) and the run fails when
any host did. Connections are opened once per host and reused by every task of a run.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fabric import Config, Connection
from invoke.exceptions import AuthFailure

from deploy import output
from deploy.connection import ConnectError, connect
from deploy.settings import Settings

_connections: dict[str, Connection] = {}
_connections_lock = threading.Lock()
opened: dict[str, int] = {}  # SSH connections opened per host in this process (for -v and bench/)
# Facts a task read and left true (it changed nothing), for the next task of the same run
# on that host: `fab provision deploy` on a converged host reads each host once.
_facts_cache: dict[str, tuple[str, dict[str, str]]] = {}


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
    command: str = ""
    output: str = ""


@dataclass
class HostResult:
    host: str
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    commands: int = 0
    data: dict = field(default_factory=dict)  # what a read-only task found (status, releases, logs)
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(1 for step in self.steps if step.status == status)

    @property
    def failures(self) -> int:
        """Failed steps; a host that broke off outside any step (unreachable) counts one."""
        return self.count("failed") or (1 if self.error else 0)

    @property
    def failed(self) -> bool:
        return self.failures > 0

    def summary(self) -> str:
        return f"{self.host} ok={self.count('ok')} changed={self.count('changed')} failed={self.failures}"

    @property
    def status(self) -> str:
        return "failed" if self.failed else "changed" if self.count("changed") else "ok"

    def as_dict(self) -> dict:
        """This host in the --json document (docs/json.md)."""
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.count("ok"),
            "changed": self.count("changed"),
            "failed": self.failures,
            "seconds": round(self.seconds, 3),
            "commands": self.commands,
            "error": self.error,
            "steps": [
                {
                    "name": s.name,
                    "status": s.status,
                    "seconds": round(s.seconds, 3),
                    "diff": s.diff,
                    "error": s.error,
                    "command": s.command,
                    "output": s.output,
                }
                for s in self.steps
            ],
            "data": self.data,
        }


say = output.say


class HostRun:
    """One host during one task: its connection, facts, dry-run flag, results, handlers."""

    def __init__(self, host: str, conn: Connection, settings: Settings, dry_run: bool, verbose: bool):
        self.host = host
        self.conn = conn
        self.settings = settings
        self.dry_run = dry_run
        self.verbose = verbose
        self.facts: dict[str, str] = {}
        self.result = HostResult(host, dry_run=dry_run)
        self.notified: list[str] = []
        self.commands = 0
        self._diff = ""
        self._stage = ""
        self._sftp = None
        self._facts_read: tuple[str, dict[str, str]] | None = None

    SUDO_REJECTED = (
        "sudo rejected the password for {user}; give the right one with fab --prompt-for-sudo-password "
        "(or sudo.password in fabric.yaml), or allow {user} passwordless sudo"
    )

    @property
    def wants_diffs(self) -> bool:
        """Diffs of changed files: shown in a dry run, kept for --json (one read each)."""
        return self.dry_run or output.json_mode

    @property
    def is_root(self) -> bool:
        return self.conn.user == "root"

    def run(self, command: str, check: bool = True, timeout: int | None = None) -> str:
        """Run command as root on the host (via sudo for other users); return its stdout."""
        try:
            result = self._as_root(command, hide=True, timeout=timeout)
        except AuthFailure:
            raise StepFailed(self.SUDO_REJECTED.format(user=self.conn.user), command) from None
        if check and result.exited != 0:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise StepFailed(output[-1] if output else f"exit code {result.exited}", command, "\n".join(output[-15:]))
        return result.stdout

    def stream(self, command: str) -> None:
        """Run a long command (tail -F) whose output is printed line by line as it comes,
        prefixed by host. On a pty, so closing the connection (Ctrl-C) ends it on the host."""
        self._as_root(command, pty=True, out_stream=output.LineWriter(self.host))

    def _as_root(self, command: str, **options):
        """Run command as root: directly when logged in as root, else the whole command in
        root's shell through sudo (so no `cd` or redirect depends on sudo's behaviour)."""
        self.commands += 1
        if self.verbose:
            say(self.host, f"$ {command}")
        if self.is_root:
            return self.conn.run(command, warn=True, in_stream=False, **options)
        return self.conn.sudo(f"sh -c {shlex.quote(command)}", warn=True, in_stream=False, **options)

    def read_facts(self, script: str, parse: Callable[[str], dict[str, str]]) -> dict[str, str]:
        """The host's facts from script's output, or from the previous task of this run
        when it read the same script and changed nothing since."""
        cached = _facts_cache.pop(self.host, None)
        facts = dict(cached[1]) if cached and cached[0] == script else parse(self.run(script))
        self._facts_read = (script, dict(facts))
        return facts

    def keep_facts(self) -> None:
        """After the task: its facts still hold if nothing changed (or it was a dry run)."""
        result = self.result
        if self._facts_read and not result.failed and (self.dry_run or not result.count("changed")):
            _facts_cache[self.host] = self._facts_read

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
        try:
            with self._sftp.open(path, "wb") as remote:
                remote.set_pipelined(True)
                remote.write(content)
            written = self._sftp.stat(path).st_size  # pipelined writes can fail without a word
        except OSError as exc:
            written = f"failed: {exc or 'SFTP failure'}"
        if written != len(content):
            raise StepFailed(
                f"upload of {name} to {self._stage} stopped at {written} of {len(content)} bytes; "
                "is the host's disk full? (df -h /tmp)"
            )
        return path

    def read(self, path: str) -> str:
        """A file's current text on the host (used for dry-run diffs)."""
        return self.run(f"cat {shlex.quote(path)} 2>/dev/null || true")

    def notify(self, handler: str) -> None:
        if handler not in self.notified:
            self.notified.append(handler)

    def step(self, name: str, action: Callable[[HostRun], bool], report: bool = True) -> bool:
        """Run one idempotent step; record ok/changed/failed with timing and diff. Without
        report (a read-only task's one step), only a failure is printed."""
        started = time.monotonic()
        self._diff = ""
        if report:
            output.step_started(self.host, name)
        try:
            changed = action(self)
        except StepFailed as exc:
            took = time.monotonic() - started
            self.result.steps.append(
                StepResult(name, "failed", took, error=str(exc), command=exc.command, output=exc.output)
            )
            output.step_finished(self.host, name, "failed", took, self.dry_run, str(exc))
            if exc.output and exc.output.strip() != str(exc):
                say(self.host, "  " + exc.output.replace("\n", "\n  "))
            raise
        took = time.monotonic() - started
        status = "changed" if changed else "ok"
        self.result.steps.append(StepResult(name, status, took, diff=self._diff))
        if report:
            output.step_finished(self.host, name, status, took, self.dry_run)
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
    output.quiet(quiet)
    try:
        conn = _connection(host, config, settings)
    except ConnectError as exc:
        say(host, f"failed: {exc}")
        return HostResult(host, error=str(exc), seconds=time.monotonic() - started, dry_run=dry_run)
    run = HostRun(host, conn, settings, dry_run, verbose)
    try:
        plan(run)
    except StepFailed as exc:  # a failed step is recorded already; a failure outside one (facts) is not
        if not run.result.failed:
            run.result.error = str(exc)
            say(host, f"failed: {exc}")
    except Exception as exc:  # a broken connection mid-run must not stop the other hosts
        run.result.error = f"{type(exc).__name__}: {exc}"
        say(host, f"failed: {run.result.error}")
    finally:
        with contextlib.suppress(Exception):  # the host may be gone; its result says so already
            run.cleanup()
        run.keep_facts()
    run.result.seconds = time.monotonic() - started
    run.result.commands = run.commands
    if verbose:
        say(host, f"remote commands: {run.commands}, ssh connections opened so far: {opened.get(host, 0)}")
    return run.result


def run_task(
    task: str, hosts: list[str], plan: Plan, settings: Settings, config: Config | None = None, dry_run: bool = False,
    verbose: bool = False, quiet: bool = False, phase: str = "", report: Callable[[list[HostResult]], None] | None = None,
) -> list[HostResult]:  # fmt: skip
    """Run plan on every host concurrently (at most settings.parallel at once), then print
    the report (default: the summary table) and keep the results for --json; quiet
    prints and keeps nothing (a look-ahead whose results the caller uses)."""
    pool = ThreadPoolExecutor(max_workers=min(settings.parallel, max(len(hosts), 1)))
    try:
        results = list(pool.map(lambda h: run_on_host(h, plan, settings, config, dry_run, verbose, quiet), hosts))
    except KeyboardInterrupt:  # Ctrl-C (logs --follow): end every host's command, then stop
        close_all()
        raise
    finally:
        pool.shutdown(wait=True)
    if not quiet:
        (report or output.summary)(results)
        output.record(task, results, dry_run, phase)
    return results


def close_all() -> None:
    """Close every open connection; a command running on one fails at once."""
    with _connections_lock:
        conns = list(_connections.values())
        _connections.clear()
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()
