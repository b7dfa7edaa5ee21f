"""The runner: one task on many hosts at once, each host's steps in order.

A Session is one fab invocation: its connections (one per host, shared by every task
of the run), the facts a task left true for the next, and its console. A HostRun is one
host during one task: it executes the operations its steps yield (deploy.ops), or in a
dry run lists them. A host that fails stops only itself; results are returned, and the
task layer (deploy.invocation) prints and records them.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from inspect import isgenerator
from pathlib import Path
from typing import Any, Protocol

from fabric import Config, Connection
from invoke.exceptions import AuthFailure
from paramiko import SFTPClient

from deploy import cache, manifest
from deploy import facts as host_facts
from deploy.cli import Run
from deploy.connection import ConnectError, connect
from deploy.console import Console, LineWriter
from deploy.facts import HostFacts
from deploy.host import HostContext
from deploy.layout import Layout
from deploy.ops import (
    CHANGES,
    UNREACHABLE,
    Blocked,
    Check,
    Claim,
    Command,
    Diff,
    Download,
    Notify,
    Op,
    Probe,
    Publish,
    Reach,
    Say,
    Step,
    Steps,
    Upload,
)
from deploy.results import HostResult, StepFailed, StepResult
from deploy.scripts import Shell
from deploy.settings import Settings
from deploy.steps import host_files

SUDO_REJECTED = (
    "sudo rejected the password for {user}; give the right one with fab --prompt-for-sudo-password "
    "(or sudo.password in fabric.yaml), or allow {user} passwordless sudo"
)


BUILD_WAIT = 900  # seconds a host waits for another's build of what it needs


@dataclass
class Build:
    """One host's build for the others of its kind: done when published or abandoned."""

    owner: str
    path: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class Hold(Protocol):
    """A lock a run holds until it ends (deploy.lock.Hold), with the audit lines its
    release carries."""

    audit: list[str]

    def release(self) -> None: ...


class Session:
    """One fab invocation. invoke copies config values between tasks; a session is
    shared, not copied, so every task of a run sees the same connections."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}
        self.opened: dict[str, int] = {}  # SSH connections opened per host (for -v and bench/)
        # Facts a task read and left true (it changed nothing), for the next task of the
        # run on that host: `fab provision deploy` on a converged host reads it once.
        self._kept_facts: dict[str, tuple[str, str]] = {}
        self._interrupted = False
        self.secrets: dict[str, str] = {}  # host -> a secret a plan read there (never in results)
        self._builds: dict[str, Build] = {}  # key -> the build one host of the run makes for the others
        self.secret_commands: dict[str, str] = {}  # a cmd: secret's command -> its output, asked once per run
        self.holds: dict[str, Hold] = {}  # app -> the deploy lock this run holds (deploy.lock), until it ends

    def __copy__(self) -> Session:
        return self

    def __deepcopy__(self, memo: dict) -> Session:
        return self

    def connection(self, host: str, config: Config | None, settings: Settings) -> Connection:
        with self._lock:
            conn = self._connections.get(host)
        if conn is None or not conn.is_connected:
            if self._interrupted:
                raise ConnectError(f"{host}: interrupted")
            conn = connect(host, config, settings.known_hosts, settings.connect_timeout, settings.accept_new_host_keys)
            with self._lock:
                self._connections[host] = conn
                self.opened[host] = self.opened.get(host, 0) + 1
                late = self._interrupted  # Ctrl-C came while this one was being opened
            if late:
                self.interrupt()
                raise ConnectError(f"{host}: interrupted")
        return conn

    def interrupt(self) -> None:
        """Ctrl-C: close every connection, and let none open again (Fabric reopens a
        closed connection on its next command: a `tail -F` started a moment after the
        close would then run on, and fab with it)."""
        self._interrupted = True
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            conn.open = _refuse_to_open
        self.close_all()

    def claim(self, host: str, key: str, wait: float = BUILD_WAIT) -> str:
        """The local archive of build key: the cache's, or the one another host of this
        run is making (waited for); '' when host is to make it (the first to ask)."""
        cached = cache.archive(key)
        with self._lock:
            if cached.is_file():
                return str(cached)
            build = self._builds.get(key)
            if build is None:
                self._builds[key] = Build(host)
                return ""
        if build.owner == host:
            return ""
        build.done.wait(wait)
        return build.path  # '' when the builder failed: this host builds for itself

    def publish(self, key: str, path: str) -> None:
        with self._lock:
            build = self._builds.setdefault(key, Build(""))
        build.path = path
        build.done.set()

    def release_builds(self, host: str) -> None:
        """host's run ended: hosts waiting on a build it never published build their own."""
        with self._lock:
            mine = [b for b in self._builds.values() if b.owner == host and not b.done.is_set()]
        for build in mine:
            build.done.set()

    def take_facts(self, host: str, script: str) -> str | None:
        """The output of script on host, when an earlier task read it and changed nothing."""
        with self._lock:
            kept = self._kept_facts.pop(host, None)
        return kept[1] if kept and kept[0] == script else None

    def keep_facts(self, host: str, script: str, output: str) -> None:
        with self._lock:
            self._kept_facts[host] = (script, output)

    def close_all(self) -> None:
        """Let go of the locks this run holds, then close every open connection; a
        command running on one fails at once."""
        holds, self.holds = list(self.holds.values()), {}
        for hold in holds:
            with contextlib.suppress(Exception):  # its host gone: the next run names the lock left
                hold.release()
        with self._lock:
            conns = list(self._connections.values())
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    def run_task(
        self, hosts: list[str], plan: Plan, settings: Settings, config: Config | None, run: Run,
        quiet: bool = False,
    ) -> list[HostResult]:  # fmt: skip
        """Run plan on every host concurrently (at most settings.parallel at once) and
        return each host's result; quiet prints nothing (a look-ahead)."""
        pool = ThreadPoolExecutor(max_workers=min(settings.parallel, max(len(hosts), 1)))
        try:
            return list(pool.map(lambda h: self._run_host(h, plan, settings, config, run, quiet), hosts))
        except KeyboardInterrupt:  # Ctrl-C (logs --follow): end every host's command, then stop
            self.interrupt()
            raise
        finally:
            pool.shutdown(wait=True)

    def _run_host(
        self, host: str, plan: Plan, settings: Settings, config: Config | None, flags: Run, quiet: bool
    ) -> HostResult:  # fmt: skip
        started = time.monotonic()
        self.console.quiet(quiet)
        try:
            conn = self.connection(host, config, settings)
        except ConnectError as exc:
            self.console.say(host, f"failed: {exc}")
            return HostResult(host, error=str(exc), seconds=time.monotonic() - started, dry_run=flags.dry_run)
        run = HostRun(self, host, conn, settings, flags)
        try:
            plan(run)
        except StepFailed as exc:  # a failed step is recorded already; a failure outside one (facts) is not
            if not run.result.failed:
                run.result.error = str(exc)
                self.console.say(host, f"failed: {exc}")
        except Exception as exc:  # a broken connection mid-run must not stop the other hosts
            run.result.error = f"{type(exc).__name__}: {exc}"
            self.console.say(host, f"failed: {run.result.error}")
        finally:
            self.release_builds(host)
            with contextlib.suppress(Exception):  # the host may be gone; its result says so already
                run.cleanup()
            run.keep_facts()
        run.result.seconds = time.monotonic() - started
        run.result.commands = run.commands
        if run.secret:
            self.secrets[host] = run.secret
        if flags.verbose:
            self.console.say(
                host, f"remote commands: {run.commands}, ssh connections opened so far: {self.opened.get(host, 0)}"
            )
        return run.result


EXCEPTION_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Failure|Refused)\b.*")
PIP_ERROR_RE = re.compile(r"^(ERROR|error): ")


def headline(output: list[str]) -> str:
    """The line that says why a command failed: the exception a Python traceback ends
    with (not a warning printed after it), pip's last `error:` line (not its closing
    `hint: See above for details.`), else the last line."""
    lines = [line.strip() for line in output if line.strip()]
    if not lines:
        return ""
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        raised = [line for line in lines if EXCEPTION_RE.match(line)]
        if raised:
            return raised[-1]
    if lines[-1].startswith(("hint:", "note:")):
        errors = [line for line in lines if PIP_ERROR_RE.match(line)]
        if errors:
            return errors[-1]
    return lines[-1]


def as_root(conn: Connection, shell: Shell, **options: Any) -> Any:
    """shell run as root: directly when logged in as root, else the whole script in
    root's shell through sudo (so no `cd` or redirect depends on sudo's behaviour)."""
    options = {"warn": True, "in_stream": False, **options}
    if conn.user == "root":
        return conn.run(shell.text, **options)
    return conn.sudo(f"sh -c {shlex.quote(shell.text)}", **options)


class HostRun(HostContext):
    """One host during one task: its connection, the operations its steps yield, its result."""

    def __init__(self, session: Session, host: str, conn: Connection, settings: Settings, flags: Run):
        super().__init__(host, settings)
        self.session = session
        self.console = session.console
        self.conn = conn
        self.flags = flags  # the run's flags; `run` is this host's remote command
        self.dry_run = flags.dry_run
        self.verbose = flags.verbose
        self.result = HostResult(host, dry_run=flags.dry_run)
        self.commands = 0
        self._stage = ""
        self._sftp: SFTPClient | None = None
        self._unchecked = 0  # checks a dry run skipped in the step running now
        self._facts_read: tuple[str, str] | None = None
        self.secret = ""  # a secret a plan read for the task layer (the db password); never in results

    @property
    def wants_diffs(self) -> bool:
        """Diffs of changed files: shown in a dry run, kept for --json (one read each)."""
        return self.dry_run or self.console.json_mode

    # remote commands ----------------------------------------------------------------------
    def run(self, shell: Shell, check: bool = True, timeout: int | None = None) -> str:
        """Run shell as root on the host (via sudo for other users); return its stdout."""
        try:
            result = self._as_root(shell, hide=True, timeout=timeout)
        except AuthFailure:
            raise StepFailed(SUDO_REJECTED.format(user=self.conn.user), shell.line) from None
        if check and result.exited != 0:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise StepFailed(headline(output) or f"exit code {result.exited}", shell.line, "\n".join(output[-15:]))
        return result.stdout

    def stream(self, shell: Shell) -> None:
        """Run a long command (tail -F) whose output is printed line by line as it comes,
        prefixed by host. On a pty, so closing the connection (Ctrl-C) ends it on the host."""
        self._as_root(shell, pty=True, out_stream=LineWriter(self.console, self.host))

    def interact(self, shell: Shell, terminal: bool) -> int:
        """Run a command the user talks to (manage.py shell, createsuperuser): its output
        straight to this terminal, this terminal's input to it, on a pty when this is a
        terminal; returns its exit code."""
        self.commands += 1
        if self.verbose:
            self.console.say(self.host, f"$ {shell.line}")
        command = shell.text if self.conn.user == "root" else f"sh -c {shlex.quote(shell.text)}"
        runner = self.conn.run if self.conn.user == "root" else self.conn.sudo
        return runner(command, warn=True, pty=terminal, in_stream=None if terminal else False).exited

    def _as_root(self, shell: Shell, **options):
        """Run as root: directly when logged in as root, else the whole script in root's
        shell through sudo (so no `cd` or redirect depends on sudo's behaviour)."""
        self.commands += 1
        if self.verbose:
            self.console.say(self.host, f"$ {shell.line}")
        return as_root(self.conn, shell, **options)

    # facts --------------------------------------------------------------------------------
    def gather(self, shell: Shell) -> HostFacts:
        """The host's facts from shell's output, or from the previous task of this run
        when it read the same and changed nothing since."""
        output = self.session.take_facts(self.host, shell.text)
        if output is None:
            output = self.run(shell)
        self._facts_read = (shell.text, output)
        self.facts = HostFacts.parse(output)
        return self.facts

    def keep_facts(self) -> None:
        """After the task: its facts still hold if nothing changed (or it was a dry run)."""
        result = self.result
        if self._facts_read and not result.failed and (self.dry_run or not result.count("changed")):
            self.session.keep_facts(self.host, *self._facts_read)

    def read_facts(self, also: tuple[str, list[str]] = ("", [])) -> HostFacts:
        """The facts every plan starts from (deploy/remote/facts.sh); with also, a
        read-only task's own reads in the same command."""
        layout = self.layout
        secrets = layout.secret_files(self.settings.secrets)
        owned = manifest.owned(layout, self.settings)
        files = [*manifest.of_kind(owned, "file"), *manifest.of_kind(owned, "cron")]
        extra = tuple(self.settings.system_packages) if self.is_app else ()
        return self.gather(host_facts.read_command(layout, secrets, self.values, files, host_files(), also, extra))

    # steps ---------------------------------------------------------------------------------
    def step(
        self, action: Step | Callable[..., Steps], *args: Any, name: str = "", report: bool = True, **kwargs: Any
    ) -> bool:
        """Run one step: execute (or, in a dry run, list) the operations it yields; record
        ok (it yielded no change), changed, or failed, with timing and diffs. Shown by
        its registered name (deploy.ops.step) unless name says more (a read-only task's
        check, an lb's upstream). Without report (a read-only task's one step), only a
        failure is printed."""
        if not name:
            if not isinstance(action, Step):
                raise TypeError(f"{action.__name__} is not a registered step (@step): give it a name")
            name = action.title(*args)
        started = time.monotonic()
        if report:
            self.console.step_started(self.host, name)
        diffs: list[str] = []
        self._unchecked = 0
        try:
            changed = self._execute(action(self, *args, **kwargs), diffs)
        except StepFailed as exc:
            took = time.monotonic() - started
            self.result.steps.append(
                StepResult(name, "failed", took, "".join(diffs), str(exc), exc.command, exc.output)
            )
            self.console.step_finished(self.host, name, "failed", took, self.dry_run, str(exc))
            if exc.output and exc.output.strip() != str(exc):
                self.console.say(self.host, "  " + exc.output.replace("\n", "\n  "))
            raise
        took = time.monotonic() - started
        status = "changed" if changed else "skipped" if self._unchecked else "ok"
        self.result.steps.append(StepResult(name, status, took, diff="".join(diffs)))
        if report:
            self.console.step_finished(self.host, name, status, took, self.dry_run)
        if diffs and self.dry_run:
            self.console.say(self.host, "".join(diffs).rstrip("\n"))
        return changed

    def _execute(self, steps: Steps, diffs: list[str]) -> bool:
        """Drive a step's generator: each operation's result is sent back; a failure is
        thrown into it (a step may catch it to say more) and ends the step if not."""
        driven: Steps = steps  # typed before isgenerator narrows it
        if not isgenerator(steps):
            raise TypeError(f"a step must yield operations, got {type(steps).__name__}")
        changed, reply, error = False, None, None  # type: tuple[bool, str | None, StepFailed | None]
        while True:
            try:
                op = driven.throw(error) if error else driven.send(reply)
            except StopIteration:
                return changed
            error, reply = None, None
            changed = changed or isinstance(op, CHANGES)
            try:
                reply = self._do(op, diffs)
            except StepFailed as exc:
                error = exc

    def _do(self, op: Op, diffs: list[str]) -> str | None:
        if isinstance(op, Command):
            if not self.dry_run:
                self.run(op.shell)
            else:
                if self.verbose:
                    self.console.say(self.host, f"(dry run) would run: {op.shell.line}")
                if op.rehearse:
                    self.run(op.rehearse)
            return None
        if isinstance(op, Upload):
            return f"(not uploaded: dry run)/{op.name}" if self.dry_run else self._upload(op.name, op.content)
        if isinstance(op, Diff):
            if self.wants_diffs:
                diffs.append(self._diff(op))
            return None
        if isinstance(op, Check):
            if self.dry_run:
                self._unchecked += 1  # the step reports "skipped", not ok: nothing was verified
            else:
                self.run(op.shell)
            return None
        if isinstance(op, Probe):
            return self.run(op.shell)
        if isinstance(op, Reach):
            return "" if self.dry_run else self._reach(op.shell)
        if isinstance(op, Claim):
            if self.dry_run:
                return str(cache.archive(op.key)) if cache.archive(op.key).is_file() else ""
            return self.session.claim(self.host, op.key)
        if isinstance(op, Publish):
            if self.dry_run:
                if self.verbose:
                    self.console.say(self.host, f"(dry run) would run: {op.shell.line}")
                return ""
            local = self._fetch_build(op)
            self.session.publish(op.key, local)
            return local
        if isinstance(op, Notify):
            self.notify(op.handler)
            return None
        if isinstance(op, Download):
            return "" if self.dry_run else self._download(op.path, op.local)
        if isinstance(op, Say):
            self.console.say(self.host, op.text)
            return None
        if isinstance(op, Blocked):
            if not self.dry_run:
                raise StepFailed(op.reason)
            diffs.append(op.preview + "\n")
            return None
        raise TypeError(f"unknown operation {op!r}")

    def _reach(self, shell: Shell) -> str:
        """shell over a connection of its own, opened now and closed after."""
        s = self.settings
        try:
            conn = connect(
                self.host, self.conn.config, s.known_hosts, min(s.connect_timeout, 15), s.accept_new_host_keys
            )
        except ConnectError as exc:
            return f"{UNREACHABLE}{exc}"
        try:
            return conn.run(shell.text, hide=True, warn=True, in_stream=False).stdout
        finally:
            conn.close()

    def _diff(self, op: Diff) -> str:
        """A unified diff of the host's file (read only now) against the new text."""
        text = ""
        if op.content is not None:
            old = (
                self.run(Shell(f"cat {shlex.quote(op.path)} 2>/dev/null || true", f"cat {op.path}"))
                if op.exists
                else ""
            )
            lines = difflib.unified_diff(
                old.splitlines(True), op.content.splitlines(True), f"{op.path} (host)", f"{op.path} (new)"
            )
            text = "".join(lines)
        return text or op.note.rstrip("\n") + "\n"

    def _files(self) -> SFTPClient:
        """The SFTP session of this run's connection, opened on first use."""
        if self._sftp is None:
            self._sftp = self.conn.sftp()
        return self._sftp

    def _staging(self) -> str:
        """This run's staging directory on the host: the SSH user's, 700, made by mktemp."""
        if not self._stage:
            self._stage = self.conn.run("mktemp -d /tmp/fabstack.XXXXXXXX", hide=True, in_stream=False).stdout.strip()
            self.commands += 1
        return self._stage

    def _upload(self, name: str, content: bytes) -> str:
        """Upload content to a private staging directory on the host; return its path."""
        path = f"{self._staging()}/{name}"
        sftp = self._files()
        written: int | str | None
        try:
            with sftp.open(path, "wb") as remote:
                remote.set_pipelined(True)
                remote.write(content)
            written = sftp.stat(path).st_size  # pipelined writes can fail without a word
        except OSError as exc:
            written = f"failed: {exc or 'SFTP failure'}"
        if written != len(content):
            raise StepFailed(
                f"upload of {name} to {self._stage} stopped at {written} of {len(content)} bytes; "
                f"is the host's disk full? (df -h {self._stage})"
            )
        return path

    def _download(self, path: str, local: str, sha256: str = "") -> str:
        """Copy path from the host to local over SFTP (into a file of mode 600 from its
        creation); return `sha256 size` of the copy. With sha256, a copy whose hash is
        another is deleted and the step fails: it is not what the host made."""
        sftp = self._files()
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            sftp.getfo(path, out)
        return keep_copy(partial, target, sha256, path)

    def _fetch_build(self, op: Publish) -> str:
        """Make the build (op.shell prints its archive's path and sha256), copy it into the
        controller's cache, checked against that sha256, and remove it from the host. An
        SSH user other than root reads it from a copy root hands it in its staging
        directory (the build directory is root's alone)."""
        built = self.run(op.shell).strip().splitlines()
        path, _, sha256 = (built[-1] if built else "").partition(" ")
        if not path.startswith(f"{Layout.BUILDS}/") or len(sha256) != 64:
            raise StepFailed(f"the build printed no archive and sha256 (got {built[-1:]!r})", op.shell.line)
        source = path
        if self.conn.user != "root":
            source = f"{self._staging()}/{op.key}.tar.gz"
            handover = f"install -o {shlex.quote(self.conn.user)} -m 600 {shlex.quote(path)} {shlex.quote(source)}"
            self.run(Shell(handover, handover))
        try:
            local = str(cache.archive(op.key))
            self._download(source, local, sha256)
        finally:
            build = path.rsplit("/", 1)[0]
            self.run(Shell(f"rm -rf {shlex.quote(build)}", f"rm -rf {build}"), check=False)
        return local

    def cleanup(self) -> None:
        if self._stage:
            self.conn.run(f"rm -rf {self._stage}", hide=True, warn=True, in_stream=False)
            self._stage = ""
        self._sftp = None  # Fabric caches the SFTP session on the connection; later tasks reuse it


def keep_copy(partial: Path, target: Path, sha256: str, source: str) -> str:
    """partial renamed to target; return `sha256 size`. With sha256, a copy whose hash
    is another is deleted instead, and StepFailed names both."""
    digest = hashlib.sha256()
    with partial.open("rb") as copy:
        for chunk in iter(lambda: copy.read(1 << 20), b""):
            digest.update(chunk)
    if sha256 and digest.hexdigest() != sha256:
        partial.unlink()
        raise StepFailed(
            f"the copy of {source} has sha256 {digest.hexdigest()[:16]}..., the host made {sha256[:16]}...: "
            "not used; run again (and look for who writes there)"
        )
    partial.rename(target)
    return f"{digest.hexdigest()} {target.stat().st_size}"


Plan = Callable[[HostRun], None]


def _refuse_to_open() -> None:
    raise ConnectionError("interrupted (Ctrl-C): no new connection")
