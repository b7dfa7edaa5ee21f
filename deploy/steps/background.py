"""Background processes (provision, deploy): each process of the settings under the
app's process manager, from the current release, as the app user.

provision keeps them as configured (files, counts; a changed unit or environment
restarts them); deploy restarts them after a new release passed its health check, all
stopped before any starts (deploy/remote/background.sh). A process removed from the
settings, or moved to another manager, is stopped and its files removed.
"""

from __future__ import annotations

import re

from deploy import appenv
from deploy.background import Process
from deploy.host import HostContext
from deploy.ops import Check, Command, Steps
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.steps.files import ensure_file
from deploy.steps.process import wanted_manager

BACKGROUND = ["background.sh"]
PLAIN = re.compile(r"[\w./:=@+,-]+")


def systemd_quote(arg: str) -> str:
    """One ExecStart word: systemd splits on spaces, honours double quotes, expands
    %-specifiers and $VARIABLES: both doubled."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if PLAIN.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def supervisor_quote(arg: str) -> str:
    """One word of a supervisor command or environment value (shlex, %-expansions)."""
    escaped = arg.replace("%", "%%")
    if PLAIN.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_text(h: HostContext) -> str:
    """The app's environment as systemd's EnvironmentFile reads it (no secret values)."""
    env = appenv.app_env(h.settings, h.facts)
    return "".join(f"{name}={systemd_env_value(value)}\n" for name, value in env.items())


def systemd_env_value(value: str) -> str:
    return value if PLAIN.fullmatch(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unit(h: HostContext, process: Process) -> str:
    s, layout = h.settings, h.layout
    argv = process.command_line(layout.venv)
    return render(
        environment(s.templates_dir), "background.service.j2", app_name=s.app_name, process=process.name,
        current=layout.current, env_file=layout.app_env_file, exec_start=" ".join(map(systemd_quote, argv)),
        stop_timeout=process.stop_timeout, unit=layout.bg_unit(process.name),
    )  # fmt: skip


def _program(h: HostContext, process: Process) -> str:
    s, layout = h.settings, h.layout
    env = appenv.app_env(s, h.facts)
    return render(
        environment(s.templates_dir), "background-program.conf.j2", app_name=s.app_name, process=process.name,
        program=layout.bg_program(process.name), command=" ".join(map(supervisor_quote, process.command_line(layout.venv))),
        current=layout.current, count=process.count, stop_timeout=process.stop_timeout,
        environment=",".join(f"{k}={supervisor_quote(v)}" for k, v in env.items()),
    )  # fmt: skip


def processes(h: HostContext, restart: bool = False, new: bool = True) -> Steps:
    """Every background process of this host running COUNT instances under the app's
    manager (restart: a new release, so every one restarts); the others gone. Without
    new (provision), a process never started here waits for the deploy that brings its
    program (the current release may not have it)."""
    if not h.facts.current_release:
        return  # nothing to run them from yet: the first deploy starts them
    layout, manager, app = h.layout, wanted_manager(h), h.layout.app
    wanted = {p.name: p for p in h.background_here if new or p.name in h.facts.background}
    for name, (running_under, _) in sorted(h.facts.background.items()):
        if name not in wanted or running_under != manager:
            yield Command(h.shell(BACKGROUND, "bg_remove", name, running_under))
            h.facts.background.pop(name)
    if not wanted:
        return
    env_changed = yield from ensure_file(h, layout.app_env_file, env_text(h), "root", app, "640")
    for name, process in wanted.items():
        if manager == "systemd":
            changed = yield from ensure_file(h, layout.bg_unit_file(name), _unit(h, process))
            if changed:
                yield Command(h.shell(["gunicorn.sh"], "systemd_unit_changed"))
        elif manager == "supervisor":
            changed = yield from ensure_file(h, layout.bg_program_file(name), _program(h, process))
        else:
            changed = False
        _, running = h.facts.background.get(name, (manager, 0))
        argv = process.command_line(layout.venv)
        if restart or changed or env_changed:
            yield Command(h.shell(BACKGROUND, "bg_restart", name, manager, process.count, process.stop_timeout, *argv))
        elif running != process.count:
            yield Command(h.shell(BACKGROUND, "bg_start", name, manager, process.count, *argv))
        h.facts.background[name] = (manager, process.count)


def control(h: HostContext, name: str, action: str) -> Steps:
    """fab start / stop / restart --process NAME on the hosts that run it."""
    wanted = {p.name: p for p in h.background_here}
    if name not in wanted:
        known = ", ".join(p.name for p in h.settings.background) or "none"
        if name not in {p.name for p in h.settings.background}:
            raise StepFailed(f"no background process {name} in the settings; processes: {known}")
        return  # it runs on the first app host only
    process, manager = wanted[name], wanted_manager(h)
    argv = process.command_line(h.layout.venv)
    call = {
        "start": ("bg_start", name, manager, process.count, *argv),
        "stop": ("bg_stop", name, manager, process.stop_timeout),
        "restart": ("bg_restart", name, manager, process.count, process.stop_timeout, *argv),
    }[action]
    yield Command(h.shell(BACKGROUND, *call))


def programs_present(h: HostContext, release) -> Steps:
    """Every background process's program is in the uploaded release or its virtualenv
    (a Celery worker needs celery in the project's requirements)."""
    target = f"{h.layout.releases}/{release.id}"
    checks = [f"{p.name}={p.command_line(h.layout.venv)[0]}" for p in h.background_here]
    yield Check(h.shell(BACKGROUND, "bg_programs", target, *checks))
