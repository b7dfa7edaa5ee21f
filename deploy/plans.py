"""Plans: the ordered steps of each task, run by deploy.runner on every host.

Each plan reads the host's facts once, then runs its steps; handlers (reload nginx,
reload or restart gunicorn) run at the end, only when a step notified them.
"""

from __future__ import annotations

from functools import partial

from deploy import facts
from deploy.layout import Layout
from deploy.release import Release
from deploy.runner import HostRun, say
from deploy.steps import app, nginx, server


def gather(h: HostRun) -> None:
    """Read the host's state in one remote command."""
    layout = Layout.of(h.settings)
    files = [layout.gunicorn_conf, layout.nginx_site, layout.secret_key]
    h.facts = facts.parse(h.run(facts.script(layout, files)))


def provision(h: HostRun) -> None:
    gather(h)
    h.step("apt packages", server.apt_packages)
    h.step("app user", server.app_user)
    h.step("directories", server.directories)
    h.step("virtualenv", server.virtualenv)
    h.step("secret key", server.secret_key)
    h.step("gunicorn config", app.gunicorn_config)
    h.step("nginx site", nginx.site)
    h.step("nginx running", nginx.running)
    h.step("gunicorn reloaded", partial(app.process, may_start=False))


def deploy_plan(release: Release):
    def deploy(h: HostRun) -> None:
        gather(h)
        h.step("provisioned", app.provisioned)
        h.step("gunicorn config", app.gunicorn_config)
        h.step("project requirements", partial(app.project_requirements, release=release))
        h.step("release uploaded", partial(app.upload_release, release=release))
        h.step("release current", partial(app.switch_release, release=release))
        if h.step("gunicorn running", app.process):
            h.step("health check", app.health)

    return deploy


def app_control(action: str):
    """start / stop / restart / reload gunicorn, whatever state it is in."""

    def control(h: HostRun) -> None:
        gather(h)
        layout = Layout.of(h.settings)
        running = bool(h.facts.get("app_pid"))
        commands = {
            "start": None if running else app.start_command(h),
            "stop": app.stop_command(layout) if running else None,
            "restart": app.restart_command(h),
            "reload": app.reload_command(h) if running else app.start_command(h),
        }

        def act(h: HostRun) -> bool:
            if commands[action] is None:
                return False
            h.change(commands[action])
            return True

        h.step(f"gunicorn {action}", act)

    return control


def app_status(h: HostRun) -> None:
    gather(h)
    pid = h.facts.get("app_pid")
    layout = Layout.of(h.settings)
    workers = h.run(f"pgrep -c -P {pid} || true").strip() if pid else "0"
    current = h.facts.get(f"link.{layout.current}", "").rsplit("/", 1)[-1] or "none"
    say(h.host, f"gunicorn: {'running pid ' + pid if pid else 'stopped'} workers={workers} release={current}")
    h.step("gunicorn status", lambda h: False)


def nginx_control(action: str):
    def control(h: HostRun) -> None:
        h.step(f"nginx {action}", lambda h: nginx.run_control(h, action))

    return control
