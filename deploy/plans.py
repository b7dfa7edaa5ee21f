"""Plans: the ordered steps of each task, run by deploy.runner on every host.

Each plan reads the host's facts once, then runs its steps; the handler steps (nginx
running, gunicorn running) come last and act once, only on what a step notified.
Plans are the one place that decides what follows a failure.
"""

from __future__ import annotations

import contextlib

from deploy import steps
from deploy.ops import Step, Steps
from deploy.release import Release
from deploy.results import StepFailed
from deploy.runner import HostRun, Plan
from deploy.steps import (
    background,
    claims,
    database,
    firewall,
    gunicorn,
    health,
    maintenance,
    media,
    nginx,
    redis,
    release,
    rotation,
    server,
    tls,
)


def provision(h: HostRun) -> None:
    """The server: packages, app user, directories, virtualenv, secrets, configs, nginx;
    on a host that has a release, the app kept running under today's config."""
    h.read_facts()
    if h.is_app or h.serves_lb:  # before anything changes: no name, port or default server another app holds
        h.step(claims.no_clash)
    if h.is_app:  # and no account or directory of another program's, and a Python that runs the project's Django
        h.step(server.app_account)
        h.step(release.python_fits)
    if "db" in h.roles:
        h.step(database.port_free)
    h.step(server.apt_packages)
    for upkeep in steps.upkeep():  # security updates, the journal's size: every host's
        h.step(upkeep)
    if h.firewall_here:  # before any service listens on a private address
        h.step(firewall.rules)
    if "db" in h.roles:
        h.step(database.config)
        h.step(database.access)
        h.step(database.running)
        h.step(database.database)
        h.step(database.backup_timer)
    if h.runs_redis:
        h.step(redis.config)
    if h.is_app:
        h.step(server.app_user)
        h.step(server.directories)
        if h.shares_media:  # glusterd; the volume, when there is one, at the media directory
            h.step(media.glusterd)
            h.step(media.mounted)
            mounted = h.facts.media_mount == "fuse.glusterfs" and media.volume_complete(h)
            h.result.data["media_mounted"] = mounted or h.dry_run
        h.step(server.virtualenv)
        h.step(server.secret_key)
        if set(h.settings.secrets) - {"SECRET_KEY"}:
            h.step(server.secrets)
        if h.runs_postgresql:
            h.step(database.app_password)
        if h.runs_redis:
            h.step(redis.app_url)
        h.step(release.gunicorn_config)
    if h.ends_tls:
        h.step(tls.certificate_files)
    if h.is_app:
        h.step(nginx.site)
    if h.serves_lb:
        h.step(nginx.lb_site)
    if h.is_app or h.serves_lb or h.runs_postgresql or h.runs_redis:  # what the app owns here, and holds
        h.step(claims.recorded)
    if h.is_app or "lb" in h.roles:
        h.step(nginx.running)
        h.step(rotation.logs_rotated)
    current = h.facts.current_release
    if h.is_app and current:
        try:
            h.step(gunicorn.manager)
            h.step(gunicorn.running)
        except StepFailed:
            if not h.dry_run and h.facts.passed != current:
                never_leave_failed(h, current)
            raise
        h.step(background.processes, False, False)
        h.step(background.jobs)
    if h.tls_mode == "acme":  # last: an ACME CA that fails leaves everything else done
        h.step(tls.acme_files)
        if h.step(tls.acme_certificate):  # now the site can serve HTTPS
            h.step(nginx.https)
            h.step(nginx.running)
    if h.ends_tls and h.facts.certificate:  # the other lbs compare their copy with it
        h.result.data["certificate_sha256"] = h.facts.certificate.sha256


def media_volume(h: HostRun) -> None:
    """A farm's shared media, on its first app host: every app host in GlusterFS's pool,
    the app's volume made (or a brick added for a new app host) and started."""
    h.read_facts()
    h.step(media.volume)


def media_mounted(h: HostRun) -> None:
    """A farm's shared media on an app host: the volume mounted at the media directory,
    then the nginx site that checks it's there."""
    h.read_facts()
    h.step(media.mounted)
    h.step(nginx.site)
    h.step(nginx.running)


def shared_secrets(h: HostRun) -> None:
    """Read what the db host made for the app hosts (the database password, Redis's URL)
    as NAME=VALUE lines: into this run's memory only (never printed, recorded or put in
    --json)."""
    lines = []
    if h.settings.postgresql:
        lines.append("DB_PASSWORD=" + h.run(h.shell(["postgres.sh"], "read_db_password")).strip())
    if h.settings.redis:
        lines.append("REDIS_URL=" + h.run(h.shell(["redis.sh"], "read_redis_url")).strip())
    h.secret = "\n".join(lines)


def secret_key_applied(key_step: Step) -> Plan:
    """fab secret.rotate on the app hosts: key_step (a single host's own key rotated, or
    the farm's keys written), then the app reloaded to read them."""

    def plan(h: HostRun) -> None:
        h.read_facts()
        if h.is_app:
            h.step(key_step)
            if h.facts.current_release:
                h.step(gunicorn.running)

    return plan


def farm_key(make: bool) -> Plan:
    """Read the farm's one SECRET_KEY on its key host, made first when make and there is
    none: into this run's memory only (never printed, recorded or put in --json)."""

    def plan(h: HostRun) -> None:
        h.secret = h.run(h.shell(["secret_key.sh"], "farm_secret_key", "yes" if make else "no")).strip()

    return plan


def tls_renew(force: bool) -> Plan:
    """certbot renews the ACME host's certificate when due (force: now)."""

    def plan(h: HostRun) -> None:
        h.read_facts()
        h.step(tls.renew, force)
        h.step(nginx.running)

    return plan


def certificate_pair(h: HostRun) -> None:
    """Read the ACME host's certificate and key, for the other lbs' copies: into this
    run's memory only (never printed, recorded or put in --json)."""
    h.secret = h.run(h.shell(["tls.sh"], "read_certificate_pair"))


def certificate_copy(h: HostRun) -> None:
    """An lb that is not the ACME host: the first lb's certificate put here, nginx reloaded."""
    h.read_facts()
    h.step(tls.certificate_files)
    h.step(nginx.https)
    h.step(nginx.running)


def deploy(new: Release, upload_only: bool = False) -> Plan:
    """Upload the release, check it, switch to it, serve it, check its health; a release
    that fails never stays current. upload_only stops before the switch (the first phase
    of a deploy with a shared database: every host has the release before it migrates)."""

    def plan(h: HostRun) -> None:
        if not h.is_app:
            return  # a load balancer only: nothing of the app lives here
        h.read_facts()
        if h.step(release.provisioned):
            return  # a dry run on a host not provisioned yet: nothing more to compare
        h.step(release.python_fits)
        h.step(release.room_for_release, new)
        h.step(release.project_requirements, new)
        h.step(release.upload, new)
        if h.background_here:  # checked before the switch: a process whose program is not there never starts
            h.step(background.programs_present, new)
        # checked by gunicorn against the release it will serve, before either goes live
        h.step(release.gunicorn_config, f"{h.layout.releases}/{new.id}")
        if upload_only:
            return
        previous = h.facts.current_release  # before the switch, which updates the facts
        switched = h.step(release.switch, new)
        if switched:  # for the audit line: from which release to which
            h.result.data.update(release=new.id, previous=previous)
        try:
            h.step(gunicorn.manager)
            if h.step(gunicorn.running) or h.facts.passed != new.id:
                h.step(health.passes, new.id)
        except StepFailed:
            if not h.dry_run:
                never_leave_failed(h, new.id, previous if switched else "")
            raise
        # after the new release passed: every background process restarts on it
        h.step(background.processes, switched)
        h.step(background.jobs)
        h.step(release.prune)

    return plan


def migrate(new: Release) -> Plan:
    """The shared database migrated by the release (on one app host that has it)."""

    def plan(h: HostRun) -> None:
        h.step(release.migrate, new)

    return plan


def one_step(action: Step, *args: str) -> Plan:
    """A plan of one step on the host that holds what it needs (a backup, a restore)."""

    def plan(h: HostRun) -> None:
        h.step(action, *args)

    return plan


def never_leave_failed(h: HostRun, failed: str, previous: str = "") -> None:
    """A release that failed its health check never stays current: back to the release
    that last passed here (or, on a host without that record, the one serving before);
    with none to go back to, or when that one fails too, the app stops and nginx answers
    a plain 503 until a release passes."""
    passed = h.facts.passed
    target = passed if passed in h.facts.releases else previous
    if target and target != failed:
        with contextlib.suppress(StepFailed):  # recorded; then the app stops
            h.step(gunicorn.serve_release, target, failed)
            h.step(health.passes_before, target)
            return
    h.step(gunicorn.stop_unverified)


def lb_out(out: frozenset[str]) -> Plan:
    """Load balancers with the hosts in `out` marked down (none: all back in), reloaded."""

    def plan(h: HostRun) -> None:
        h.read_facts()
        name = f"upstream without {', '.join(sorted(out))}" if out else "upstream with every app host"
        h.step(nginx.lb_site, out, name=name)
        h.step(nginx.running)

    return plan


def serving(h: HostRun) -> None:
    """An app host answers its health check through its own nginx (one command): the
    load balancers then keep it in their upstream, or take it out."""
    h.step(health.answers)


def rollback(to: str) -> Plan:
    """Switch back to the release before the current one (or to `to`), reload, check health."""

    def plan(h: HostRun) -> None:
        if not h.is_app:
            return  # a load balancer only: it has no releases
        h.read_facts()
        current = h.facts.current_release
        target = to or h.facts.previous_release
        if not target or target not in h.facts.releases:
            known = ", ".join(h.facts.releases) or "none"
            wanted = f"release {target!r}" if target else "release before the current one"
            h.step(refuse, f"no {wanted} to roll back to; releases here: {known} (newest first)", name="rollback")
        try:
            if h.step(gunicorn.serve_release, target):
                h.result.data.update(release=target, previous=current)
                h.step(health.passes, target)
                h.step(background.processes, True)
        except StepFailed:  # that release does not run (any more): back to where we were
            h.step(gunicorn.back_to_before, current)
            raise

    return plan


def refuse(h: HostRun, message: str) -> Steps:
    """A step that fails with message (a check that needs no remote command)."""
    raise StepFailed(message)
    yield  # a generator, like every step


def app_control(action: str, name: str = "") -> Plan:
    """fab start / stop / restart / reload; with name, that background process."""

    def plan(h: HostRun) -> None:
        if not h.is_app:
            return  # a load balancer only: no gunicorn and no process of the app here
        h.read_facts()
        if name:
            h.step(background.control, name, action)
            return
        h.step(gunicorn.control, action)

    return plan


def remove(purge: bool) -> Plan:
    """fab remove: the app's processes stopped, then the app taken off the host; another
    app's files, processes and site are never touched."""

    def plan(h: HostRun) -> None:
        h.read_facts()
        if not (h.is_app or h.serves_lb or h.runs_postgresql or h.runs_redis):
            return
        if h.is_app:
            h.step(gunicorn.control, "stop")
            for p in h.background_here:
                h.step(background.control, p.name, "stop")
        if h.runs_postgresql:  # the other apps' access rules stay; its database only with purge
            h.step(database.access, True)
            h.step(database.running)
            if purge:
                h.step(database.dropped)
        if h.runs_redis:
            h.step(redis.removed)
        if h.shares_media:  # before anything goes: a purge deletes the media directory
            h.step(media.unmounted, purge)
        h.step(claims.removed, purge)  # a load balancer: its lb site and records

    return plan


def maintenance_mode(on: bool, message: str) -> Plan:
    """fab maintenance on/off, on each host that faces the clients (the lbs, or the single
    host): the page in place or gone. The site's config first, brought up to date (one
    written before maintenance mode existed has no test for the page)."""

    def plan(h: HostRun) -> None:
        if "lb" not in h.roles:
            return  # an app host behind the lbs, a db host: the lbs answer for the site
        h.read_facts()
        h.step(nginx.lb_site if h.behind_lbs else nginx.site)
        h.step(nginx.running)
        h.step(maintenance.page, on, message)

    return plan


def manage(args: str, terminal: bool) -> Plan:
    """fab manage -- ARGS: manage.py ARGS in the current release, as the app user with
    the app's environment; its exit code lands in the result's data."""

    def plan(h: HostRun) -> None:
        h.read_facts()
        h.step(release.has_release)
        h.result.data = {"exit_code": h.interact(release.manage_command(h, args), terminal)}

    return plan


def nginx_control(action: str) -> Plan:
    """fab start-nginx / stop-nginx / restart-nginx / reload-nginx / nginx-configtest."""

    def plan(h: HostRun) -> None:
        h.step(nginx.control, action)

    return plan
