"""The deploy lock, and the audit trail it keeps.

Two runs that change one app's hosts at once would interleave a rolling update. So
every task that changes hosts (not a dry run; never status, logs, releases or check)
holds the app's lock from before its first change to the end of the fab run. It lives
in one place per farm: the first lb, else the first app host (with -H, the first host
given). There a root process holds flock(2) on /var/lib/fabstack/APP for as long as
fab's connection lives, beside a record of who holds it (deploy/remote/lock.sh). A
second run is refused in one line naming the holder and for how long. A run killed
mid-way lets go of the flock with its connection, and its record stays: the next run
names it and takes over, with a warning, never silently. `fab lock` holds the lock by
hand (a record with no process) until `fab unlock`.

Each task that changed hosts leaves one line in the audit log on the lock host
(/var/log/fabstack/APP/audit.log), written as the lock is let go: time, who, task,
hosts, release from and to, result. `fab audit` shows its last lines. A run that
changed nothing (a no-op, or one refused on a host before any change) leaves no line,
and the lock's directory goes with it when empty: such a run leaves the host as it was.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fabric import Connection
from invoke.exceptions import Failure, ResponseNotAccepted

from deploy import scripts
from deploy.layout import Layout
from deploy.runner import SUDO_REJECTED, as_root
from deploy.settings import Settings
from deploy.settings.validators import CONTROL

BUSY = 3  # lock.sh's exit code when another run, or a person, holds the lock
TAKE_WAIT = 30.0  # seconds for the lock host to answer (sudo's password prompt included)
RELEASE_WAIT = 15.0


def clean(value: str) -> str:
    """value as one line of the record and the log: no control character, no newline."""
    return CONTROL.sub(" ", value).strip()


def who() -> str:
    """Who runs fab: the local user at this machine, as the record and the log name them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return clean(f"{user}@{socket.gethostname()}").replace(" ", "_")


def lock_host(settings: Settings, hosts: list[str]) -> str:
    """Where the app's lock lives: the inventory's first lb, else its first app host;
    with no inventory (-H), the first host given."""
    members = settings.inventory.with_role("lb") or settings.inventory.with_role("app")
    return members[0].host if members else hosts[0]


def record(task: str, release: str = "", message: str = "") -> str:
    """The holder's record as lock.sh keeps it (KEY=VALUE lines)."""
    fields = {"who": who(), "task": task, "release": release, "message": message}
    return "\n".join(f"{key}={clean(value)}" for key, value in fields.items() if value)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, read back from its record."""

    fields: dict[str, str]

    @classmethod
    def parse(cls, lines: list[str]) -> Holder:
        return cls(dict(line.split("=", 1) for line in lines if "=" in line))

    @property
    def held_for(self) -> str:
        try:
            seconds = max(0, int(self.fields["now"]) - int(self.fields["since"]))
        except (KeyError, ValueError):
            return "a while"
        return duration(seconds)

    def describe(self) -> str:
        f = self.fields
        someone = f.get("who", "someone")
        if f.get("state") == "manual":
            said = f": {f['message']}" if f.get("message") else ""
            return f"{someone} by hand{said} (for {self.held_for})"
        release = f" of release {f['release']}" if f.get("release") else ""
        return f"{someone}'s {f.get('task', 'run')}{release} (for {self.held_for})"

    def audit_words(self) -> str:
        return " ".join(f"{key}={shlex.quote(self.fields[key])}" for key in ("who", "task") if key in self.fields)


def duration(seconds: int) -> str:
    """3s, 2m 5s, 1h 4m, 2d 3h."""
    for unit, size, smaller, small in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // small
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


class LockBusy(Exception):
    """Another run, or a person, holds the lock."""

    def __init__(self, host: str, holder: Holder):
        super().__init__(holder.describe())
        self.host = host
        self.holder = holder


class LockFailed(Exception):
    """The lock host could not be asked (unreachable, not root's directory, ...)."""


class SudoRejected(LockFailed):
    """sudo on the lock host refused the password it was given (or that none was)."""


class Lines:
    """A run's standard output as lines, for the lock's answers as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""
        self.changed = threading.Event()

    def write(self, text: str) -> None:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self.lines.extend(parts)
        self.changed.set()

    def flush(self) -> None:
        pass


@dataclass
class Hold:
    """The lock one run holds on its host: kept alive while the run lasts, let go (with
    the run's audit lines) when it ends."""

    host: str
    promise: Any  # invoke's Promise of lock_hold, running until released
    output: Lines
    every: float = 10.0  # seconds between the `alive` lines
    audit: list[str] = field(default_factory=list)
    left: Holder | None = None  # the record of a run that ended without releasing it, taken over
    _ended: threading.Event = field(default_factory=threading.Event)
    _sending: threading.Lock = field(default_factory=threading.Lock)

    def keep_alive(self) -> None:
        """Say `alive` every few seconds until released (a thread of its own): the host
        lets go of a lock whose run went silent for lock_timeout."""
        channel = self.promise.runner.channel
        while not self._ended.wait(self.every):
            with self._sending:
                if self._ended.is_set():
                    return
                try:
                    channel.sendall(b"alive\n")
                except OSError:  # the connection is gone: the host lets go by itself
                    return

    def release(self) -> None:
        """Send `release` and the audit lines; wait until the host says the lock is free
        (so a run started right after this one finds it free, not busy)."""
        channel = self.promise.runner.channel
        lines = "".join(f"{line}\n" for line in self.audit)
        with self._sending:
            self._ended.set()
            channel.sendall(f"release\n{lines}".encode())
            channel.shutdown_write()
        deadline = time.monotonic() + RELEASE_WAIT
        while "released" not in self.output.lines and not self.promise.runner.process_is_finished:
            if time.monotonic() > deadline:
                return
            self.output.changed.wait(0.05)
            self.output.changed.clear()
        self.promise.join()


def take(conn: Connection, settings: Settings, task: str, release: str = "") -> Hold:
    """Hold the app's lock on conn's host for this run; LockBusy when someone holds it,
    LockFailed when the host cannot keep it."""
    values = Layout.of(settings).values() | {"LOCK_ALIVE": settings.lock_timeout}
    shell = scripts.call(["lock.sh"], "lock_hold", record(task, release), values=values)
    output = Lines()
    promise = as_root(conn, shell, asynchronous=True, hide="err", out_stream=output)
    deadline = time.monotonic() + TAKE_WAIT
    runner = promise.runner
    while "held" not in output.lines and not runner.process_is_finished and not runner.has_dead_threads:
        if time.monotonic() > deadline:
            raise LockFailed(f"no answer from {conn.host} within {TAKE_WAIT:.0f}s")
        output.changed.wait(0.05)
        output.changed.clear()
    if "held" not in output.lines:
        try:
            result = promise.join()
        except Failure as failure:  # sudo's prompt answered wrong: its watcher gave up
            if isinstance(failure.reason, ResponseNotAccepted):
                raise SudoRejected(SUDO_REJECTED.format(user=conn.user)) from None
            raise LockFailed(str(failure.reason or failure)) from None
        return _refused(conn.host, result, output.lines)
    hold = Hold(conn.host, promise, output, every=min(10.0, settings.lock_timeout / 3))
    threading.Thread(target=hold.keep_alive, name=f"lock {conn.host}", daemon=True).start()
    if "left" in output.lines:
        lines = output.lines
        hold.left = Holder.parse(lines[lines.index("left") + 1 : lines.index("held")])
        hold.audit.append(f"lock taken over from a run that ended without releasing it: {hold.left.audit_words()}")
    return hold


def _refused(host: str, result: Any, lines: list[str]) -> Hold:
    if result.exited == BUSY and lines[:1] == ["busy"]:
        raise LockBusy(host, Holder.parse(lines[1:]))
    said = (result.stderr.strip() or result.stdout.strip()).splitlines()
    raise LockFailed(said[-1] if said else f"exit code {result.exited}")


def hold_by_hand(conn: Connection, settings: Settings, message: str) -> Holder | None:
    """fab lock: the lock held by a record alone, until fab unlock; returns the record
    of a run that ended without releasing it, when one was taken over."""
    line = f"who={who()} task=lock message={shlex.quote(clean(message))}"
    shell = scripts.call(
        ["lock.sh"], "lock_set", record("lock", message=message), line, values=Layout.of(settings).values()
    )
    result = as_root(conn, shell, hide=True)
    lines = result.stdout.splitlines()
    if "held" not in lines:
        _refused(conn.host, result, lines)
    return Holder.parse(lines[lines.index("left") + 1 : lines.index("held")]) if "left" in lines else None


def unlock(conn: Connection, settings: Settings) -> Holder | None:
    """fab unlock: the lock held by hand (or left by a killed run) let go; the record it
    had, or None when there was no lock. LockBusy when a running fab holds it."""
    shell = scripts.call(["lock.sh"], "lock_clear", f"who={who()} task=unlock", values=Layout.of(settings).values())
    result = as_root(conn, shell, hide=True)
    lines = result.stdout.splitlines()
    if lines[:1] == ["none"]:
        return None
    if lines[:1] != ["was"] or result.exited:
        _refused(conn.host, result, lines)
    return Holder.parse(lines[1:])


def audit_tail(conn: Connection, settings: Settings, lines: int) -> list[str]:
    """The last lines of the app's audit log on the lock host."""
    shell = scripts.call(["lock.sh"], "audit_tail", lines, values=Layout.of(settings).values())
    result = as_root(conn, shell, hide=True)
    if result.exited:
        _refused(conn.host, result, [])
    return result.stdout.splitlines()


def audit_line(task: str, runs: list[dict]) -> str:
    """The audit log's line for one task of one app (its runs as --json records them):
    '' when it changed nothing (a no-op run, or one refused on a host before any
    change, leaves no line, and nothing else on the host either)."""
    hosts = list(dict.fromkeys(h["host"] for r in runs for h in r["hosts"]))
    changed = sum(h["changed"] for r in runs for h in r["hosts"])
    failed = [h["host"] for r in runs for h in r["hosts"] if h["status"] == "failed"]
    if not changed:
        return ""
    moved = {
        (h["data"].get("previous", ""), h["data"]["release"])
        for r in runs
        for h in r["hosts"]
        if "release" in h["data"]
    }
    words = [f"who={who()}", f"task={task}", f"hosts={','.join(hosts)}"]
    if moved:
        before = ",".join(sorted({a or "none" for a, _ in moved}))
        after = ",".join(sorted({b for _, b in moved}))
        words.append(f"release={before}->{after}")
    words += [f"result={'failed' if failed else 'ok'}", f"changed={changed}"]
    if failed:
        words.append(f"failed={','.join(dict.fromkeys(failed))}")
    return " ".join(words)
