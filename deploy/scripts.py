"""Shell that runs on a host lives in deploy/remote/*.sh (shellcheck-clean, readable as
shell). Python sends a command as one prelude (the values the functions read, as quoted
assignments, then the files' functions) plus one call: Kamal's commands built by small
helpers. Every value that reaches a shell is quoted here and nowhere else.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

# What each file's functions call in other files (common.sh comes with every one).
NEEDS = {
    "facts.sh": ("gunicorn.sh", "postgres.sh", "tls.sh", "background.sh", "redis.sh", "firewall.sh", "media.sh"),
    "background.sh": (),
    "status.sh": ("gunicorn.sh",),
    "release.sh": (),
    "check.sh": (),
}


@cache
def text(name: str) -> str:
    """A remote script's text (package data, so an installed wheel has it too)."""
    return resources.files("deploy").joinpath("remote", name).read_text()


def quote(value: object) -> str:
    """One shell word for value."""
    return shlex.quote(str(value))


@dataclass(frozen=True)
class Shell:
    """A command for a host: `text` is sent, `line` (the call) is what -v and errors show."""

    text: str
    line: str


def call(
    files: Iterable[str], function: str, *args: object, values: Mapping[str, object] | None = None, stdin: str = ""
) -> Shell:
    """`function args` with the functions of common.sh and files (and what they need),
    the values assigned first."""
    return calls(files, [line(function, *args) + (f" < {quote(stdin)}" if stdin else "")], values)


def calls(files: Iterable[str], lines: list[str], values: Mapping[str, object] | None = None) -> Shell:
    """Several call lines (each built by call's quoting) in one command, one after the other."""
    names = ["common.sh"]
    for name in files:
        for needed in (*NEEDS.get(name, ()), name):
            if needed not in names:
                names.append(needed)
    body = "".join(text(name) for name in names) + "\n".join(lines) + "\n"
    read = reads(body)
    assignments = "".join(f"{key}={quote(value)}\n" for key, value in (values or {}).items() if key in read)
    return Shell("set -u\n" + assignments + body, "; ".join(lines))


READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)(?![a-z])(:?[-=+])?")


def reads(script: str) -> set[str]:
    """The upper-case variables a script reads ($NAME, ${NAME...}): all it is sent, so a
    call carries what its functions use, not every value of every script."""
    return {name for name, default in READ.findall(script)} if script else set()


def line(function: str, *args: object) -> str:
    """One call line: the function and its arguments, each quoted."""
    return " ".join([function, *map(quote, args)])


def plain(command: str) -> Shell:
    """A one-line command of Python's own (a word or two, every value quoted)."""
    return Shell(command, command)
