"""The gunicorn process, under nohup (the guide's way), systemd or supervisor.

Whatever the manager, root finds the master the same way (deploy/remote/gunicorn.sh:
the manager's own pid, or root's record of a nohup master, never a file the app can
write): reload is always a HUP to that pid (the master stays, every worker is
replaced), and stop always confirms that pid is gone. Nothing is ever killed by name.
Start, stop and restart go through the manager, which is what keeps the app alive:
systemd and supervisor restart a crashed master and start it at boot; nohup does not.
"""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Changes, Command, Handler, Notify, Steps, step
from deploy.render import environment, render
from deploy.steps.files import ensure_file

ACTIVE = {"systemd": ("active", "activating", "reloading"), "supervisor": ("RUNNING", "STARTING", "BACKOFF")}
GUNICORN = ["gunicorn.sh"]


def wanted_manager(h: HostContext) -> str:
    """The process_manager setting; auto is systemd where systemd runs as PID 1, else nohup."""
    chosen = h.settings.process_manager
    if chosen != "auto":
        return chosen
    systemd = h.facts.pid1 == "systemd" and h.facts.systemd not in ("", "offline", "unknown")
    return "systemd" if systemd else "nohup"


def running_manager(h: HostContext) -> str:
    """Which manager runs the app now ('' when it does not run)."""
    if h.facts.unit_state in ACTIVE["systemd"]:
        return "systemd"
    if h.facts.supervisor_state in ACTIVE["supervisor"]:
        return "supervisor"
    return "nohup" if h.facts.app_pid else ""


def _manager_files(h: HostContext, manager: str) -> Changes:
    """The unit or program file for manager, applied when it changed; returns whether
    supervisor (re)started the app with it."""
    s, layout = h.settings, h.layout
    context = dict(
        app_name=s.app_name, venv=layout.venv, config=layout.gunicorn_conf, log_dir=layout.logs,
        stop_timeout=s.timeout + 10, unit=layout.unit, program=layout.program, stdout_log=layout.supervisor_log,
        preload_app=s.preload_app,
    )  # fmt: skip
    jinja = environment(s.templates_dir)
    if manager == "systemd":
        if (yield from ensure_file(h, layout.unit_file, render(jinja, "gunicorn.service.j2", **context))):
            yield Command(h.shell(GUNICORN, "systemd_unit_changed"))
            yield Notify(Handler.RESTART_APP)  # a new unit (user, command) takes a new master
        if h.facts.unit_enabled != "enabled":
            yield Command(h.shell(GUNICORN, "enable_unit"))
    elif manager == "supervisor":
        if not h.facts.supervisord_running:
            yield Command(h.shell(GUNICORN, "start_supervisord"))
        program = render(jinja, "supervisor-program.conf.j2", **context)
        if (yield from ensure_file(h, layout.program_file, program)):
            yield Command(h.shell(GUNICORN, "supervisor_update"))
            return True
    return False


@step("process manager")
def manager(h: HostContext) -> Steps:
    """The app under the wanted process manager: the old one stopped and its files gone."""
    wanted, running = wanted_manager(h), running_manager(h)
    if running and running != wanted:
        yield Command(h.shell(GUNICORN, "stop_app", running))
        h.facts.app_pid = ""  # stopped: gunicorn running starts it under the new manager
    stale = {"systemd": h.layout.unit_file, "supervisor": h.layout.program_file}
    for other, path in stale.items():
        if other != wanted and h.facts.file(path):
            yield Command(h.shell(GUNICORN, "remove_manager", other))
    if (yield from _manager_files(h, wanted)):  # supervisorctl update (re)started it with today's config
        h.facts.app_pid = "started by supervisor"
        h.settle(Handler.RESTART_APP, Handler.RELOAD_APP)


@step("gunicorn running")
def running(h: HostContext) -> Steps:
    """The handlers of the app: gunicorn running the current release, started if down,
    restarted (a new master) or reloaded (a HUP) when a step asked for it."""
    name = wanted_manager(h)
    if not h.facts.app_pid:
        yield Command(h.shell(GUNICORN, "start_app", name))
    elif Handler.RESTART_APP in h.notified or _bound_elsewhere(h) or _preload_changed(h):
        yield Command(h.shell(GUNICORN, "restart_app", name))
    elif Handler.RELOAD_APP in h.notified:
        yield Command(h.shell(GUNICORN, "reload_app"))
    h.settle(Handler.RESTART_APP, Handler.RELOAD_APP)


def _preload_changed(h: HostContext) -> bool:
    """preload_app turned on or off: a master that preloaded holds the app's modules, so
    its next workers would run them whatever a reload reads; a new master is needed."""
    return Handler.RELOAD_APP in h.notified and h.facts.app_preload != h.settings.preload_app


def _bound_elsewhere(h: HostContext) -> bool:
    """The running master listens on TCP addresses other than `bind` (none for a unix
    socket: a master from before the socket still on 127.0.0.1:PORT); a HUP does not
    always move gunicorn's listener, so this takes a restart."""
    listening, bind = h.facts.app_listen, h.bind
    return bool(listening) and listening != ([] if bind.startswith("unix:") else [bind])


@step("app stopped: no release here passed its health check (nginx answers 503)")
def stop_unverified(h: HostContext) -> Steps:
    """Stop the app: its release failed its health check and no release on this host
    passed one, so nothing is served but nginx's plain 503 until a release passes."""
    yield Command(h.shell(GUNICORN, "stop_app", wanted_manager(h)))
    h.facts.app_pid = ""


@step("rollback")
def serve_release(h: HostContext, release_id: str, discard: str = "") -> Steps:
    """`current` on release_id, served: a graceful reload where the master runs (no
    request is dropped), else a start. Discard a release that failed."""
    target = f"{h.layout.releases}/{release_id}"
    if h.facts.current != target or not h.facts.app_pid:
        yield Command(h.shell(GUNICORN, "serve_release", target, wanted_manager(h)))
        h.facts.current = target
    if discard:
        yield Command(h.shell(["release.sh"], "remove_releases", discard))


# a rollback that failed: back to the release that was serving
back_to_before = step("back to the release before")(serve_release.action)


@step("gunicorn {0}")
def control(h: HostContext, action: str) -> Steps:
    """fab start / stop / restart / reload: gunicorn through whichever manager runs it."""
    name = running_manager(h) or wanted_manager(h)
    running = bool(h.facts.app_pid)
    call = {
        "start": None if running else ("start_app", name),
        "stop": ("stop_app", name) if running else None,
        "restart": ("restart_app", name),
        "reload": ("reload_app",) if running else ("start_app", name),
    }[action]
    if call:
        yield Command(h.shell(GUNICORN, *call))
