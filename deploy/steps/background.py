"""Background processes (provision, deploy): each process of the settings under the
app's process manager, from the current release, as the app user.

provision keeps them as configured (files, counts; a changed unit or environment
restarts them); deploy restarts them after a new release passed its health check, all
stopped before any starts (deploy/remote/background.sh). A process removed from the
settings, or moved to another manager, is stopped and its files removed.
"""

from __future__ import annotations

import re

from deploy import appenv, scripts
from deploy.facts import BackgroundFact, JobFact
from deploy.host import HostContext
from deploy.ops import Check, Command, Steps, step
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.scripts import quote
from deploy.settings.background import Process
from deploy.steps.files import ensure_file
from deploy.steps.gunicorn import wanted_manager

BACKGROUND = ["background.sh"]
PLAIN = re.compile(r"[\w./:=@+,-]+")


def _word(text: str, escaped: str) -> str:
    """escaped as is when text is plain, else in double quotes with \\ and \" escaped
    (what systemd and supervisor both read as one word)."""
    if PLAIN.fullmatch(text):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_quote(arg: str) -> str:
    """One ExecStart word: systemd splits on spaces, honours double quotes, expands
    %-specifiers and $VARIABLES: both doubled."""
    return _word(arg, arg.replace("%", "%%").replace("$", "$$"))


def supervisor_quote(arg: str) -> str:
    """One word of a supervisor command or environment value (shlex, %-expansions)."""
    return _word(arg, arg.replace("%", "%%"))


def env_text(h: HostContext) -> str:
    """The app's environment as systemd's EnvironmentFile reads it (no secret values)."""
    env = appenv.app_env(h.settings, h.facts)
    return "".join(f"{name}={_word(value, value)}\n" for name, value in env.items())


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


@step("background processes")
def processes(h: HostContext, restart: bool = False, new: bool = True) -> Steps:
    """Every background process of this host running COUNT instances under the app's
    manager (restart: a new release, so every one restarts); the others gone. Without
    new (provision), a process never started here waits for the deploy that brings its
    program (the current release may not have it)."""
    if not h.facts.current_release:
        return  # nothing to run them from yet: the first deploy starts them
    layout, manager, app = h.layout, wanted_manager(h), h.layout.app
    wanted = {p.name: p for p in h.background_here if new or p.name in h.facts.background}
    for name, found in sorted(h.facts.background.items()):
        if name not in wanted or found.manager != manager:
            yield Command(h.shell(BACKGROUND, "bg_remove", name, found.manager))
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
        running = h.facts.background.get(name, BackgroundFact(manager)).running
        argv = process.command_line(layout.venv)
        if restart or changed or env_changed:
            yield Command(h.shell(BACKGROUND, "bg_restart", name, manager, process.count, process.stop_timeout, *argv))
        elif running != process.count:
            yield Command(h.shell(BACKGROUND, "bg_start", name, manager, process.count, *argv))
        h.facts.background[name] = BackgroundFact(manager, process.count)


@step("{0} {1}")
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
    args: tuple[object, ...] = {
        "start": (name, manager, process.count, *argv),
        "stop": (name, manager, process.stop_timeout),
        "restart": (name, manager, process.count, process.stop_timeout, *argv),
    }[action]
    yield Command(h.shell(BACKGROUND, f"bg_{action}", *args))


@step("background programs")
def programs_present(h: HostContext, release) -> Steps:
    """Every background process's program is in the uploaded release or its virtualenv
    (a Celery worker needs celery in the project's requirements)."""
    target = f"{h.layout.releases}/{release.id}"
    checks = [f"{p.name}={p.command_line(h.layout.venv)[0]}" for p in h.background_here]
    yield Check(h.shell(BACKGROUND, "bg_programs", target, *checks))


@step("scheduled jobs")
def jobs(h: HostContext) -> Steps:
    """The scheduled jobs on the first app host: systemd timers (a oneshot service each:
    never two runs at once), or one cron file and a runner that takes a lock where systemd
    does not run; a job removed from the settings, or on a host that is no longer the
    first, is removed."""
    if not h.facts.current_release and h.jobs_here:
        return  # nothing to run them in yet: the first deploy sets them up
    layout, app = h.layout, h.layout.app
    kind = "cron" if h.jobs_by_cron else "systemd"
    wanted = {job.name: job for job in h.jobs_here}
    for name, existing in sorted(h.facts.jobs.items()):
        if name not in wanted or existing.kind != kind:
            yield Command(h.shell(BACKGROUND, "job_remove", name, existing.kind))
    if not wanted:
        return
    yield from ensure_file(h, layout.app_env_file, env_text(h), "root", app, "640")
    s, jinja = h.settings, environment(h.settings.templates_dir)
    if kind == "systemd":
        changed = []
        for name, job in wanted.items():
            unit = layout.job_unit(name)
            service_file, timer_file = layout.job_files(name)
            argv = " ".join(map(systemd_quote, job.command_line(layout.venv)))
            service = render(jinja, "job.service.j2", app_name=s.app_name, job=name, current=layout.current,
                             env_file=layout.app_env_file, exec_start=argv, unit=unit)  # fmt: skip
            timer = render(jinja, "job.timer.j2", app_name=s.app_name, job=name, cron=job.cron,
                           calendar=job.calendar, unit=unit)  # fmt: skip
            service_changed = yield from ensure_file(h, service_file, service)
            timer_changed = yield from ensure_file(h, timer_file, timer)
            found = h.facts.jobs.get(name, JobFact(""))
            if service_changed or timer_changed or (found.kind, found.state) != ("systemd", "active"):
                changed.append(unit)
        if changed:
            yield Command(h.shell([], "timers_enabled", *(f"{unit}.timer" for unit in changed)))
        return
    yield from ensure_file(h, layout.job_runner, scripts.text("run-job.sh"), "root", app, "750")
    lines = [
        {"name": name, "cron": job.cron,
         "command": " ".join(quote(a) for a in job.command_line(layout.venv)).replace("%", "\\%")}
        for name, job in wanted.items()
    ]  # fmt: skip
    table = render(jinja, "cron.j2", app_name=s.app_name, runner=layout.job_runner, run_dir=layout.run,
                   current=layout.current, env_file=layout.app_env_file, jobs=lines, log_dir=layout.logs)  # fmt: skip
    yield from ensure_file(h, layout.cron_file, table)
    if not h.facts.cron_running:
        yield Command(h.shell([], "cron_started"))
        h.facts.cron_running = True
