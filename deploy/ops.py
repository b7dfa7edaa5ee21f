"""Operations: what a step yields, and the runner executes (pyinfra's operations).

A step is a generator. It reads the host's facts and yields only what must happen:
commands that change the host, uploads, diffs, checks, notifications. The runner runs
them in order, or in a dry run lists them, and sends back what a step needs (an
upload's staged path, a probe's output). A step that yielded a change is `changed`;
one that yielded none is `ok`. So no step looks at the dry-run flag or counts its own
changes, and a step's unit test is: these facts in, these operations out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from deploy.scripts import Shell


@dataclass(frozen=True)
class Command:
    """Shell that changes the host. Skipped in a dry run, where `rehearse` (read-only,
    e.g. nginx -t for an nginx start) runs instead when given."""

    shell: Shell
    rehearse: Shell | None = None


@dataclass(frozen=True)
class Upload:
    """Bytes staged in the run's private directory on the host; the runner sends back
    their path (a placeholder in a dry run, where nothing is uploaded)."""

    name: str
    content: bytes


@dataclass(frozen=True)
class Diff:
    """What path would become. The runner reads the host's copy only when diffs are
    wanted (a dry run, --json); content None is a secret's: never shown."""

    path: str
    content: str | None
    exists: bool
    note: str = ""


@dataclass(frozen=True)
class Check:
    """Read-only shell that must pass after changes (a health check): it fails the
    step when it does not. Skipped in a dry run: it would check the old state."""

    shell: Shell


@dataclass(frozen=True)
class Probe:
    """Read-only shell that runs in every run, dry ones too; the runner sends back its
    output. A failing probe fails the step."""

    shell: Shell


@dataclass(frozen=True)
class Reach:
    """Shell run over a new SSH connection, not the run's: does the host still let fab
    in? The runner sends back its output, or UNREACHABLE and the reason when no new
    connection can be made; in a dry run, nothing is run and '' comes back."""

    shell: Shell


UNREACHABLE = "unreachable: "


@dataclass(frozen=True)
class Claim:
    """A build that every host of a kind needs once (a virtualenv's contents, keyed by
    what decides them). The runner sends back the local path of its archive when the
    controller's cache has it, or when another host of the run has just built it (this
    one waits for that); or '' when this host is to build it and Publish it. In a dry
    run, the cache's path or ''."""

    key: str


@dataclass(frozen=True)
class Publish:
    """The build for the Claim this host won: shell makes it on the host and prints the
    archive's path (in a directory only root can write) and its sha256; the archive is
    copied into the controller's cache, for the other hosts of the run and the next runs,
    only if the copy has that sha256."""

    key: str
    shell: Shell


@dataclass(frozen=True)
class Blocked:
    """The step cannot go on here yet (a deploy to a host not provisioned): a real run
    fails with `reason`; a dry run shows `preview` as a change to come."""

    reason: str
    preview: str


@dataclass(frozen=True)
class Download:
    """A file of the host copied here, to local; the runner sends back `sha256 size` of
    the copy (in a dry run nothing is copied)."""

    path: str
    local: str


@dataclass(frozen=True)
class Say:
    """A line for the user now, prefixed by the host (apt is busy: waiting for it)."""

    text: str


class Handler(enum.Enum):
    """Notifications: a step notifies, the plan's last steps act once. Declared in the
    order they run: nginx first (a new site for the app), PostgreSQL, then the app."""

    RELOAD_NGINX = "reload nginx"
    RESTART_DB = "restart PostgreSQL"  # listen_addresses or port changed
    RELOAD_DB = "reload PostgreSQL"  # pg_hba.conf changed
    RESTART_APP = "restart the app"  # a new master: new virtualenv, unit or bind
    RELOAD_APP = "reload the app"  # a HUP: new code, config or secret


@dataclass(frozen=True)
class Notify:
    handler: Handler


Op = Command | Upload | Diff | Check | Probe | Reach | Claim | Publish | Blocked | Notify | Say | Download
# What a step returns: a generator of operations; the runner sends back each one's result
# (a staged path, a command's output, a cached build's path; None for most).
Steps = Generator[Op, Any, None]
# A helper a step delegates to (`yield from`) that says whether it changed anything.
Changes = Generator[Op, Any, bool]


@dataclass(frozen=True)
class Step:
    """A step, named once where it is written (`@step("nginx running")`): plans run it by
    reference, results and output show its name, `fab steps` and the data tests
    (tests/steps/) list it. A name with {0}, {1} takes the step's arguments (`gunicorn
    {0}` for gunicorn.control("reload")), so a step with a verb is still one step."""

    name: str
    action: Callable[..., Steps]
    files: tuple[str, ...] = ()  # the host's own files it writes (not an app's): the facts read them
    upkeep: bool = False  # a server's upkeep: provision runs it on every host, after the packages

    def __call__(self, *args: Any, **kwargs: Any) -> Steps:
        return self.action(*args, **kwargs)

    def title(self, *args: Any) -> str:
        """The name this run shows: the arguments put in its {0}, {1}."""
        return self.name.format(*args) if "{" in self.name else self.name

    @property
    def summary(self) -> str:
        """The first line of the step's docstring: what it makes true."""
        return " ".join((self.action.__doc__ or "").split("\n\n")[0].split())


def step(name: str, files: tuple[str, ...] = (), upkeep: bool = False) -> Callable[[Callable[..., Steps]], Step]:
    """Register a generator of operations as a step named name; files are the host's own
    files it writes (an app's are in its manifest, deploy/manifest.py), upkeep puts it
    in every host's provision. So a new step is its module, its template or script, and
    its data case: nothing else names it."""

    def named(action: Callable[..., Steps]) -> Step:
        return Step(name, action, files, upkeep)

    return named


CHANGES = (Command, Upload, Publish, Blocked)  # a step that yields one of these is `changed`
