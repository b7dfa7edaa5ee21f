"""The gunicorn process, under nohup (the guide's way), systemd or supervisor.

Whatever the manager, root finds the master the same way (deploy/remote/master.sh: the
manager's own pid, or root's record of a nohup master, never a file the app can write):
reload is always a HUP to that pid (the master stays, every worker is replaced), and
stop always confirms that pid is gone. Nothing is ever killed by name.
Start, stop and restart go through the manager, which is what keeps the app alive:
systemd and supervisor restart a crashed master and start it at boot; nohup does not.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from deploy.facts import master_sh
from deploy.layout import Layout
from deploy.render import environment, render
from deploy.runner import HostRun
from deploy.settings import Settings
from deploy.steps.files import ensure_file
from deploy.steps.nginx import app_port

HEALTH = (Path(__file__).resolve().parent.parent / "remote" / "health.py").read_text()
ACTIVE = {"systemd": ("active", "activating", "reloading"), "supervisor": ("RUNNING", "STARTING", "BACKOFF")}


def wanted_manager(h: HostRun) -> str:
    """The process_manager setting; auto is systemd where systemd runs as PID 1, else nohup."""
    chosen = h.settings.process_manager
    if chosen != "auto":
        return chosen
    systemd = h.facts.get("pid1") == "systemd" and h.facts.get("systemd") not in ("", "offline", "unknown")
    return "systemd" if systemd else "nohup"


def running_manager(h: HostRun) -> str:
    """Which manager runs the app now ('' when it does not run)."""
    if h.facts.get("unit_state") in ACTIVE["systemd"]:
        return "systemd"
    if h.facts.get("supervisor_state") in ACTIVE["supervisor"]:
        return "supervisor"
    return "nohup" if h.facts.get("app_pid") else ""


# shell building blocks ------------------------------------------------------------------
def app_logs_tail(layout: Layout, lines: int) -> str:
    """The last lines of gunicorn's logs, read as the app user (the log directory is the
    app's: root never opens a path the app could have linked elsewhere)."""
    files = f"{layout.logs}/error.log {layout.logs}/gunicorn.out"
    return (
        f"{{ {layout.as_app(f'tail -q -n {lines} {files}')}; tail -q -n {lines} {layout.supervisor_log}; }} 2>/dev/null"
    )


def _health_host(s: Settings) -> str:
    names = [n for n in s.server_name.split() if n != "_" and "*" not in n]
    return names[0] if names else "localhost"


def health_command(s: Settings, address: str) -> str:
    """GET health_path (or /) from address on the host (stdlib Python only): exit 0 when
    healthy, 1 on an answer that says no, 2 when nothing answers (deploy/remote/health.py)."""
    return (
        f"python3 -c {shlex.quote(HEALTH)} {shlex.quote(address)} {shlex.quote(s.health_path or '/')} "
        f"{_health_host(s)} {s.health_timeout} {1 if s.health_path else 0}"
    )


BAD_ANSWERS = 3  # answers that say no (a 500, a 404 at health_path) before a start counts as failed


MASTER_DIED = '[ -n "$master" ] && ! live "$master"'


def _wait_healthy(s: Settings, what: str, extra: str = "true", gave_up: str = MASTER_DIED) -> str:
    """Poll until the master answers; fail early when the master is gone for good
    (`gave_up`: it died, or its manager stopped or is restarting it), and after
    BAD_ANSWERS answers that say no: only silence (nothing listens yet) is worth
    waiting health_retries x 0.2 s for."""
    layout = Layout.of(s)
    return f"""bad=0; why=
for i in $(seq 1 {s.health_retries}); do
  if {gave_up}; then why=; break; fi
  if alive && {extra}; then
    why=$({layout.as_app(health_command(s, s.bind))} 2>&1)
    case $? in 0) exit 0;; 1) bad=$((bad + 1)); [ "$bad" -ge {BAD_ANSWERS} ] && break;; esac
  fi
  sleep 0.2
done
echo "last lines of gunicorn's logs:" >&2
{app_logs_tail(layout, 12)} | tail -n 12 >&2
echo "gunicorn {what} but does not answer on {s.bind}{s.health_path or "/"}: ${{why:-its master exited}}" >&2
exit 1"""


def manager_gave_up(layout: Layout, manager: str) -> str:
    """Shell: true when the app started through manager has exited: systemd restarted it
    (NRestarts passed $restarts, read right after the start) or marked it failed; supervisor
    backs off, or gave up (FATAL); under nohup, the master died."""
    if manager == "systemd":
        return (
            f"{{ systemctl is-failed -q {layout.unit} || "
            f'[ "$(systemctl show -p NRestarts --value {layout.unit})" != "$restarts" ]; }}'
        )
    if manager == "supervisor":
        return f"supervisorctl status {layout.program} 2>/dev/null | grep -qE 'BACKOFF|FATAL|EXITED'"
    return MASTER_DIED


def manager_running(layout: Layout, manager: str) -> str:
    """Shell: true when the manager itself says the app runs (supervisor leaves STARTING
    for RUNNING only after startsecs; a start is done when it says so)."""
    if manager == "systemd":
        return f"systemctl is-active -q {layout.unit}"
    if manager == "supervisor":
        return f"supervisorctl status {layout.program} 2>/dev/null | grep -q RUNNING"
    return "true"


def _wait_gone(layout: Layout) -> str:
    return f"""for i in $(seq 1 150); do live $pid || {{ rm -f {layout.master_record}; exit 0; }}; sleep 0.2; done"""


# manager commands -----------------------------------------------------------------------
def start_command(s: Settings, manager: str) -> str:
    layout = Layout.of(s)
    prelude = f"{master_sh(layout)}\nif alive; then exit 0; fi\nrm -f {layout.master_record}\nmaster="
    if manager == "nohup":
        # setsid in a non-interactive shell execs (no fork), as do setpriv, env, sh -c's
        # exec and nohup: $! is the gunicorn master itself, so a crash at start is seen at
        # once, and root records it in its own directory. The log is opened by the app
        # user's shell, never by root's (its directory is the app's).
        gunicorn = (
            f"exec nohup {layout.venv}/bin/gunicorn --config {layout.gunicorn_conf} >> {layout.logs}/gunicorn.out 2>&1"
        )
        launch = (
            f"setsid {layout.as_app('sh -c ' + shlex.quote(gunicorn))} < /dev/null > /dev/null 2>&1 &\nmaster=$!\n"
            f"mkdir -p {layout.state} && echo $master > {layout.master_record}.new "
            f"&& mv -f {layout.master_record}.new {layout.master_record}"
        )
    elif manager == "systemd":
        # a manual start resets NRestarts (and reset-failed lifts the start limit an earlier
        # crash loop may have hit): the count right after the start is the baseline
        launch = (
            f"systemctl reset-failed {layout.unit} 2>/dev/null; systemctl start {layout.unit}\n"
            f"restarts=$(systemctl show -p NRestarts --value {layout.unit})"
        )
    else:
        launch = f"supervisorctl start {layout.program} >/dev/null || true"
    wait = _wait_healthy(s, "started", manager_running(layout, manager), manager_gave_up(layout, manager))
    return f"{prelude}\n{launch}\n{wait}"


def stop_command(s: Settings, manager: str) -> str:
    """Stop through the manager (nohup: TERM to the master), then confirm the master is
    gone. A subshell, so a restart can go on after it."""
    layout = Layout.of(s)
    ask = {
        "nohup": "kill -TERM $pid",
        "systemd": f"systemctl stop {layout.unit}",
        "supervisor": f"supervisorctl stop {layout.program} >/dev/null",
    }[manager]
    return f"""({master_sh(layout)}
alive || {{ rm -f {layout.master_record}; exit 0; }}
{ask}
{_wait_gone(layout)}
kill -KILL $pid; rm -f {layout.master_record})"""


def restart_command(s: Settings, manager: str) -> str:
    """A new master: needed when the virtualenv's Python or gunicorn itself changed."""
    return stop_command(s, manager) + " &&\n" + start_command(s, manager)


def reload_command(s: Settings) -> str:
    """HUP the master; wait until every old worker has gone."""
    layout = Layout.of(s)
    old_gone = 'gone=1; for w in $old; do live $w && gone=; done; [ -n "$gone" ]'
    return f"""{master_sh(layout)}
alive || exit 3
master=$pid
old=$(pgrep -P $master | tr '\\n' ' ')
kill -HUP $master
{_wait_healthy(s, "reloaded", "{ " + old_gone + "; }")}"""


# steps ----------------------------------------------------------------------------------
def _manager_files(h: HostRun, manager: str) -> bool:
    """Write the unit or program file for manager; apply it when it changed."""
    s, layout = h.settings, Layout.of(h.settings)
    context = dict(
        app_name=s.app_name, venv=layout.venv, config=layout.gunicorn_conf, log_dir=layout.logs,
        stop_timeout=s.timeout + 10, unit=layout.unit, program=layout.program, stdout_log=layout.supervisor_log,
    )  # fmt: skip
    jinja = environment(s.templates_dir)
    changed = False
    if manager == "systemd":
        unit = render(jinja, "gunicorn.service.j2", **context)
        if ensure_file(h, layout.unit_file, unit):
            h.change("systemctl daemon-reload")
            h.notify("restart_app")  # a new unit (user, command) takes a new master
            changed = True
        if h.facts.get("unit_enabled") != "enabled":
            h.change(f"systemctl enable -q {layout.unit}")
            changed = True
    elif manager == "supervisor":
        h.change("supervisorctl pid >/dev/null 2>&1 || service supervisor start >/dev/null")
        program = render(jinja, "supervisor-program.conf.j2", **context)
        if ensure_file(h, layout.program_file, program):
            # update adds (and so starts) a new program, or restarts a changed one
            h.change(
                "for i in $(seq 50); do supervisorctl pid >/dev/null 2>&1 && break; sleep 0.1; done\n"
                "supervisorctl reread >/dev/null && supervisorctl update >/dev/null\n"
                f"{master_sh(layout)}\nmaster=\n{_wait_healthy(s, 'started by supervisor', manager_running(layout, 'supervisor'), manager_gave_up(layout, 'supervisor'))}"
            )
            changed = True
    return changed


def _remove_command(layout: Layout, manager: str) -> str:
    if manager == "systemd":
        return f"systemctl disable -q --now {layout.unit}; rm -f {layout.unit_file} && systemctl daemon-reload"
    return f"rm -f {layout.program_file}; supervisorctl update >/dev/null 2>&1; true"


def manager(h: HostRun) -> bool:
    """The app under the wanted process manager: the old one stopped and its files gone."""
    layout = Layout.of(h.settings)
    wanted, running = wanted_manager(h), running_manager(h)
    changed = False
    if running and running != wanted:
        h.change(stop_command(h.settings, running))
        h.facts["app_pid"] = ""  # stopped: the process step starts it under the new manager
        changed = True
    stale = {"systemd": layout.unit_file, "supervisor": layout.program_file}
    for other, path in stale.items():
        if other != wanted and f"file.{path}" in h.facts:
            h.change(_remove_command(layout, other))
            changed = True
    if _manager_files(h, wanted):
        if wanted == "supervisor":  # supervisorctl update (re)started it with today's config
            h.facts["app_pid"] = "started by supervisor"
            h.notified = [n for n in h.notified if n not in ("restart_app", "reload_app")]
        changed = True
    return changed


def process(h: HostRun) -> bool:
    """gunicorn running the current release: started if down, reloaded or restarted on change."""
    s, name = h.settings, wanted_manager(h)
    if not h.facts.get("app_pid"):
        h.change(start_command(s, name))
    elif "restart_app" in h.notified or _bound_elsewhere(h):
        h.change(restart_command(s, name))
    elif "reload_app" in h.notified:
        h.change(reload_command(s))
    else:
        return False
    return True


def _bound_elsewhere(h: HostRun) -> bool:
    """The running master listens on TCP addresses other than `bind` (a HUP does not
    always move gunicorn's listener, so this takes a restart)."""
    listening = h.facts.get("app_listen", "").split()
    return bool(listening) and not h.settings.bind.startswith("unix:") and listening != [h.settings.bind]


def health(h: HostRun, release_id: str) -> bool:
    """The site answers through nginx: checked after every change, and on every run until
    the current release has passed once (a run cut off before its check, or a first
    release that failed with nothing to return to, is checked again, never taken on
    trust). The host records the release that passed, in a root-owned file."""
    recorded = h.facts.get("passed") == release_id
    if h.dry_run:
        return not recorded
    answers(h)
    if recorded:
        return False
    passed = Layout.of(h.settings).passed
    state = Layout.of(h.settings).state  # mkdir: a host provisioned before this record existed
    h.run(f"mkdir -p {state} && echo {release_id} > {passed}.new && mv -f {passed}.new {passed}")
    h.facts["passed"] = release_id
    return True


def answers(h: HostRun) -> bool:
    """The app answers its health check through this host's nginx (changes nothing)."""
    h.run(health_command(h.settings, f"127.0.0.1:{app_port(h)}"))
    return False


def stop_unverified(h: HostRun) -> bool:
    """Stop the app: its release failed its health check and no release on this host
    passed one, so nothing is served but nginx's plain 503 until a release passes."""
    h.change(stop_command(h.settings, wanted_manager(h)))
    h.facts["app_pid"] = ""
    return True


def rollback_to(h: HostRun, target: str, discard: str = "") -> bool:
    """Put `current` on target and serve it: a graceful reload where the master still runs
    (no request is dropped), else a start. Discard a release that failed."""
    layout = Layout.of(h.settings)
    h.change(f"ln -sfn {target} {layout.current}.new && mv -T {layout.current}.new {layout.current}")
    h.change(f"({reload_command(h.settings)}) || ({start_command(h.settings, wanted_manager(h))})")
    if discard:
        h.change(f"rm -rf {discard}")
    return True
