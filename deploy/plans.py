"""Plans: the ordered steps of each task, run by deploy.runner on every host.

Each plan reads the host's facts once, then runs its steps; handlers (reload nginx,
reload or restart gunicorn) run at the end, only when a step notified them.
"""

from __future__ import annotations

import contextlib
from functools import partial

from deploy import facts
from deploy.layout import Layout
from deploy.release import Release
from deploy.runner import HostRun, StepFailed
from deploy.steps import app, nginx, process, server


def gather(h: HostRun) -> None:
    """Read the host's state in one remote command."""
    layout = Layout.of(h.settings)
    files = [layout.gunicorn_conf, layout.nginx_site, layout.nginx_lb_site, layout.unit_file, layout.program_file]
    secrets = [layout.secret_key, *(layout.secret(name) for name in h.settings.secrets if name != "SECRET_KEY")]
    h.facts = h.read_facts(facts.script(layout, files, secrets), facts.parse)


def provision(h: HostRun) -> None:
    gather(h)
    role = h.settings.inventory.roles_of(h.host)
    h.step("apt packages", server.apt_packages)
    if "app" in role:
        h.step("app user", server.app_user)
        h.step("directories", server.directories)
        h.step("virtualenv", server.virtualenv)
        h.step("secret key", server.secret_key)
        if set(h.settings.secrets) - {"SECRET_KEY"}:
            h.step("secrets", server.secrets)
        h.step("gunicorn config", app.gunicorn_config)
        h.step("nginx site", nginx.site)
    if "lb" in role and nginx.member(h):
        h.step("nginx load balancer", nginx.lb_site)
    h.step("nginx running", nginx.running)
    current = h.facts.get(f"link.{Layout.of(h.settings).current}", "")
    if "app" in role and current:
        # deployed: keep the app running, under the wanted manager, with today's config
        h.step("process manager", process.manager)
        try:
            h.step("gunicorn running", process.process)
        except StepFailed:
            if not h.dry_run and h.facts.get("passed") != current.rsplit("/", 1)[-1]:
                never_leave_failed(h, current.rsplit("/", 1)[-1])
            raise


def deploy_plan(release: Release):
    def deploy(h: HostRun) -> None:
        if "app" not in h.settings.inventory.roles_of(h.host):
            return  # a load balancer only: nothing of the app lives here
        gather(h)
        if h.step("provisioned", app.provisioned):
            return  # a dry run on a host not provisioned yet: nothing more to compare
        h.step("project requirements", partial(app.project_requirements, release=release))
        h.step("release uploaded", partial(app.upload_release, release=release))
        # checked by gunicorn against the release it will serve, before either goes live
        release_dir = f"{Layout.of(h.settings).releases}/{release.id}"
        h.step("gunicorn config", partial(app.gunicorn_config, release_dir=release_dir))
        previous = h.facts.get(f"link.{Layout.of(h.settings).current}", "")
        switched = h.step("release current", partial(app.switch_release, release=release))
        try:
            h.step("process manager", process.manager)
            if h.step("gunicorn running", process.process) or h.facts.get("passed") != release.id:
                h.step("health check", partial(process.health, release_id=release.id))
        except StepFailed:
            if not h.dry_run:
                never_leave_failed(h, release.id, previous.rsplit("/", 1)[-1] if switched else "")
            raise
        if switched:  # what the host has now, for pruning
            layout = Layout.of(h.settings)
            h.facts[f"link.{layout.current}"] = f"{layout.releases}/{release.id}"
            h.facts["releases"] = " ".join(dict.fromkeys([release.id, *app.releases(h)]))
        h.step("old releases pruned", app.prune_releases)

    return deploy


def never_leave_failed(h: HostRun, failed: str, previous: str = "") -> None:
    """A release that failed its health check never stays current: back to the release
    that last passed here (or, on a host without that record, the one serving before);
    with none to go back to, or when that one fails too, the app stops and nginx answers
    a plain 503 until a release passes."""
    releases = Layout.of(h.settings).releases
    passed = h.facts.get("passed", "")
    target = passed if passed in app.releases(h) else previous
    if target and target != failed:
        with contextlib.suppress(StepFailed):  # recorded; then the app stops
            h.step(
                "rollback", partial(process.rollback_to, target=f"{releases}/{target}", discard=f"{releases}/{failed}")
            )
            h.step("health check of the release before", partial(process.health, release_id=target))
            return
    h.step("app stopped: no release here passed its health check (nginx answers 503)", process.stop_unverified)


def lb_out(out: frozenset[str]):
    """Load balancers with the hosts in `out` marked down (none: all back in), reloaded."""

    def plan(h: HostRun) -> None:
        gather(h)
        name = f"upstream without {', '.join(sorted(out))}" if out else "upstream with every app host"
        h.step(name, partial(nginx.lb_site, out=out))
        h.step("nginx running", nginx.running)

    return plan


def serving(h: HostRun) -> None:
    """An app host answers its health check through its own nginx (one command): the
    load balancers then keep it in their upstream, or take it out."""
    h.step("answers its health check", process.answers)


def rollback(to: str):
    """Switch back to the release before the current one (or to `to`), reload, check health."""

    def plan(h: HostRun) -> None:
        if "app" not in h.settings.inventory.roles_of(h.host):
            return  # a load balancer only: it has no releases
        gather(h)
        layout = Layout.of(h.settings)
        current = h.facts.get(f"link.{layout.current}", "")
        target = to or app.previous_release(h)
        if not target or target not in app.releases(h):
            known = ", ".join(app.releases(h)) or "none"
            wanted = f"release {target!r}" if target else "release before the current one"
            raise_failed(h, "rollback", f"no {wanted} to roll back to; releases here: {known} (newest first)")
        if current.endswith(f"/{target}"):
            h.step("rollback", lambda h: False)
            return
        try:
            h.step("rollback", partial(process.rollback_to, target=f"{layout.releases}/{target}"))
            h.step("health check", partial(process.health, release_id=target))
        except StepFailed:  # that release does not run (any more): back to where we were
            h.step("back to the release before", partial(process.rollback_to, target=current))
            raise

    return plan


def raise_failed(h: HostRun, step: str, message: str) -> None:
    """Fail step with message (a check that needs no remote command)."""

    def fail(h: HostRun) -> bool:
        raise StepFailed(message)

    h.step(step, fail)


def app_control(action: str):
    """start / stop / restart / reload gunicorn through whichever manager runs it."""

    def act(h: HostRun) -> bool:
        s = h.settings
        name = process.running_manager(h) or process.wanted_manager(h)
        running = bool(h.facts.get("app_pid"))
        command = {
            "start": None if running else process.start_command(s, name),
            "stop": process.stop_command(s, name) if running else None,
            "restart": process.restart_command(s, name),
            "reload": process.reload_command(s) if running else process.start_command(s, name),
        }[action]
        if command is None:
            return False
        h.change(command)
        return True

    def control(h: HostRun) -> None:
        gather(h)
        h.step(f"gunicorn {action}", act)

    return control


def nginx_control(action: str):
    def control(h: HostRun) -> None:
        h.step(f"nginx {action}", lambda h: nginx.run_control(h, action))

    return control
