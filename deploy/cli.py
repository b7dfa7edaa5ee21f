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

from invoke import Exit, Program

# the run flags, and whether each takes a value
RUN_FLAGS = {
    "--settings": True,
    "--app": True,
    "--role": True,
    "--limit": True,
    "--dry-run": False,
    "--verbose": False,
    "--json": False,
}


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
