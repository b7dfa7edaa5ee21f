"""Flags that describe the whole run stand anywhere on the line and apply to every task.

Invoke binds a flag to the task it follows, and refuses one before the first task
(`No idea what '--settings' is!`), so `fab provision --settings P deploy` used to deploy
with ./fabstack.yaml. A run is one thing to its user: one settings file, dry or not,
one output format. So the run flags are taken out of the words before invoke parses
the tasks, then given to every task of the line that has them (Ansible's and pyinfra's
flags cover the whole run alike). Given twice with different values is refused (exit 2, as bad input).

Long forms only (`--settings P`, `--settings=P`); a short form (`-s P`) stays the flag
of the task it follows, as invoke makes it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invoke import Exit, Program, Task, task


@dataclass(frozen=True)
class Run:
    """The flags that describe the whole run, as one value: built once from the command
    line by the task, passed on to invocation, the session and every host's run. Each
    field is a flag (`dry_run` is --dry-run); a bool takes no value, the others one."""

    settings: str | None = None
    app: str = ""
    dry_run: bool = False
    verbose: bool = False
    role: str = ""
    limit: str = ""
    json: bool = False


RUN_HELP = {
    "settings": "settings file (default: ./fabstack.yaml or $FABSTACK_SETTINGS)",
    "app": "with several apps in the settings (apps:), only this one (docs/apps.md)",
    "dry_run": "report what would change, with diffs, and change nothing",
    "verbose": "show every remote command as it runs",
    "role": "with no -H: only the inventory's hosts with this role (app or lb)",
    "limit": "with no -H: only these inventory hosts (comma-separated host strings or addresses)",
    "json": "print one JSON document on stdout (schema: docs/json.md); progress goes to stderr",
}
EVERY = tuple(f.name for f in dataclasses.fields(Run))
# the run flags, and whether each takes a value
RUN_FLAGS = {"--" + f.name.replace("_", "-"): f.type != "bool" for f in dataclasses.fields(Run)}


def fab_task(
    *, flags: tuple[str, ...] = EVERY, help: dict[str, str] | None = None, name: str = "", positional: tuple = ()
) -> Callable:
    """A fab task written as body(c, run, OWN ARGS): invoke sees the run flags it takes
    (flags: all of them by default) after the task's own arguments, and the body gets
    them as one Run. So no task signature spells a run flag."""

    def make(body: Callable[..., Any]) -> Task:
        own = list(inspect.signature(body).parameters.values())[2:]
        defaults = {f.name: f.default for f in dataclasses.fields(Run)}
        taken = [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[f]) for f in flags]
        context = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        signature = inspect.Signature([context, *own, *taken])

        def task_body(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = dict(bound.arguments)
            c = given.pop("c")
            run = Run(**{f: given.pop(f) for f in flags})
            return body(c, run, **given)

        task_body.__signature__ = signature  # type: ignore[attr-defined]
        task_body.__name__, task_body.__doc__ = body.__name__, body.__doc__
        task_body.__module__ = body.__module__
        helps = {**{f: RUN_HELP[f] for f in flags}, **(help or {})}
        return task(name=name or body.__name__, help=helps, positional=list(positional) or None)(task_body)

    return make


def take_run_flags(words: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """words without the run flags, and the run flags' values by argument name
    (`dry_run`); nothing after `--` (manage's arguments) is looked at."""
    rest: list[str] = []
    found: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            rest.extend(words[i:])
            break
        flag, has_equals, given = word.partition("=")
        if flag not in RUN_FLAGS:
            rest.append(word)
            i += 1
            continue
        value: str | bool = True
        if RUN_FLAGS[flag]:
            if not has_equals:
                if i + 1 >= len(words) or words[i + 1].startswith("-"):
                    raise Exit(f"fabstack: {flag} needs a value, e.g. {flag} {_example(flag)}", code=2)
                i += 1
                given = words[i]
            value = given
        elif has_equals:
            raise Exit(f"fabstack: {flag} takes no value; drop ={given}", code=2)
        name = flag[2:].replace("-", "_")
        if name in found and found[name] != value:
            raise Exit(f"fabstack: {flag} given twice ({found[name]} and {value}); a run has one {flag[2:]}", code=2)
        found[name] = value
        i += 1
    return rest, found


def _example(flag: str) -> str:
    return {"--settings": "fabstack.yaml", "--app": "shop", "--role": "app", "--limit": "web1"}.get(flag, "")


def run_flags_anywhere(program: Program) -> None:
    """Make program (fab's or fabstack's) take the run flags anywhere on its line: its
    task parsing, on this instance only, first takes them out, then gives them to every
    task that has them."""
    if getattr(program, "fabstack_run_flags", False):
        return
    program.fabstack_run_flags = True  # type: ignore[attr-defined]
    parse_tasks = program.parse_tasks

    def parse_tasks_with_run_flags() -> None:
        words, found = take_run_flags(list(program.core.unparsed))
        program.core.unparsed = words
        parse_tasks()
        for call in program.tasks:
            for name, value in found.items():
                if name in call.args:
                    call.args[name].value = value
                elif name == "dry_run":  # a lab task makes hosts: it cannot pretend to
                    raise Exit(
                        f"fabstack: {call.name} has no dry run; run it on its own line without --dry-run", code=2
                    )

    program.parse_tasks = parse_tasks_with_run_flags  # type: ignore[method-assign]
