"""The tasks of `fab` (in the checkout, through fabfile.py) and `fabstack` (installed):
a thin map from the command line onto deploy/."""

import dataclasses

from invoke import Collection, Exit, task

from deploy import checks, invocation, plans, reports
from deploy.cli import Run, fab_task
from deploy.console import Console
from deploy.invocation import (
    Changes,
    each_app,
    execute,
    execute_in_one_report,
    guard,
    hosts_of,
    load_apps,
    one_app,
    run_manage,
)
from deploy.invocation import provision as run_provision
from deploy.lab.tasks import lab
from deploy.release import Release, release_of
from deploy.rollout import migrate_once, rolling, rolling_restarts
from deploy.steps import registered

brief = Console.brief
READ_ONLY = ("settings", "app", "verbose", "json")  # the run flags of a task with no dry run


@fab_task(help={"workers": "gunicorn workers, or auto (2 x cores + 1)", "worker_class": "sync, gevent or gthread",
                "server_name": "nginx server_name"})  # fmt: skip
def provision(c, run: Run, workers=None, worker_class=None, server_name=None):
    """Set up the server: nginx, python3, app user, virtualenv, gunicorn and nginx configs."""
    apps = load_apps(c, run.settings, run.app, workers=workers, worker_class=worker_class, server_name=server_name)
    roll = lambda s, hosts, name: rolling_restarts(c, s, run, hosts, name)  # noqa: E731
    each_app(c, apps, lambda s: run_provision(c, s, run, roll), run.limit, Changes("provision", run))


@fab_task(help={"project": "Django project to deploy (default: the bundled sample)"})
def deploy(c, run: Run, project=None):
    """Upload the app as a release, migrate, collectstatic, start or reload gunicorn."""
    apps = load_apps(c, run.settings, run.app, project_path=project)
    if project and len(apps) > 1:
        raise Exit("fabstack: --project names one app's code; with several apps add --app NAME", code=2)

    made: dict[str, Release] = {}

    def release(s) -> Release:  # made once per app: the lock's record names it, then it is uploaded
        if s.app_name not in made:
            made[s.app_name] = release_of(s)
        return made[s.app_name]

    def deploy_app(s):
        invocation.say_notes(c, s)
        plan = plans.deploy(release(s))
        if s.postgresql and not run.dry_run:  # one shared database: migrated once, before any host switches
            migrate_once(c, s, release(s), hosts_of(c, s, run.role, run.limit), run)
        if run.dry_run or run.role or run.limit or not rolling(c, "deploy", plan, s, run):
            execute(c, "deploy", plan, s, run)

    each_app(c, apps, deploy_app, run.limit, Changes("deploy", run, lambda s: release(s).id))


@fab_task(name="renew", flags=("settings", "app", "dry_run", "verbose", "json"),
          help={"force": "renew now, even when the certificate is not due"})  # fmt: skip
def tls_renew(c, run: Run, force=False):
    """Renew the site's ACME certificate when due (--force: now); the other lbs get copies."""
    apps = load_apps(c, run.settings, run.app)
    for s in apps:
        invocation.refuse_renewal(s)
    renew = Changes("tls.renew", run)
    each_app(c, apps, lambda s: invocation.tls_renew(c, s, force, run), changes=renew)


@fab_task()
def check(c, run: Run):
    """Security check per host: host key, app user, gunicorn bind, secret modes, one farm key, check --deploy, nginx -t."""

    def check_app(s):
        execute(c, "check", checks.check, invocation.with_farm_key_read(c, s, run), run)

    each_app(c, load_apps(c, run.settings, run.app), check_app, run.limit)


@fab_task(name="rotate")
def secret_rotate(c, run: Run):
    """A new SECRET_KEY (the farm's one, or each single host's); the old one stays Django's fallback, so sessions hold."""
    apps = load_apps(c, run.settings, run.app)
    for s in apps:
        invocation.refuse_rotation(s)
    each_app(c, apps, lambda s: invocation.rotate_secret_key(c, s, run), run.limit, Changes("secret.rotate", run))


def _host_task(name: str, doc: str, plan, report=None, changes: bool = True):
    def host_task(c, run: Run):
        apps = load_apps(c, run.settings, run.app)
        guarded = Changes(name, run) if changes else None
        each_app(c, apps, lambda s: execute(c, name, plan, s, run, report), run.limit, guarded)

    host_task.__doc__ = doc
    return fab_task(name=name)(host_task)


def _control_task(name: str, doc: str):
    def control_task(c, run: Run, process=""):
        apps = load_apps(c, run.settings, run.app)
        control = plans.app_control(name, process)
        each_app(c, apps, lambda s: execute(c, name, control, s, run), run.limit, Changes(name, run))

    control_task.__doc__ = doc
    return fab_task(name=name, help={"process": "a background process of the settings"})(control_task)


@fab_task(
    help={
        "lines": "how many lines of each log (default 20)",
        "process": "a background process's or scheduled job's output instead",
        "gunicorn": "only gunicorn's logs",
        "nginx": "only nginx's logs for the site",
        "follow": "keep printing new lines as they come, until Ctrl-C",
    }
)
def logs(c, run: Run, lines=20, gunicorn=False, nginx=False, follow=False, process=""):
    """Show the last lines of gunicorn's and nginx's logs on each host, prefixed by host."""
    both = not gunicorn and not nginx
    plan = reports.logs(int(lines), gunicorn or both, nginx or both, follow, process)
    reading = dataclasses.replace(run, dry_run=False, role=run.role or ("app" if process else ""))  # reads only
    apps = load_apps(c, run.settings, run.app)
    if follow and len(apps) > 1:
        raise Exit("fabstack: logs --follow follows one app's logs; add --app NAME", code=2)
    try:
        each_app(c, apps, lambda s: execute(c, "logs", plan, s, reading, report=brief), run.limit)
    except KeyboardInterrupt:  # Ctrl-C is how --follow is meant to end (tail -f's user expects 0, not 1)
        if not follow:
            raise


@fab_task(flags=READ_ONLY)
def manage(c, run: Run):
    """Run manage.py with the arguments after -- (fab manage -- createsuperuser) on one app
    host (the first, or -H), as the app user in the current release; its exit code is fab's."""
    s = one_app(load_apps(c, run.settings, run.app), "manage")
    run_manage(c, s, c.config.get("fabstack_remainder") or "", run)


@fab_task(help={"to": "release id to return to (default: the one before the current)"})
def rollback(c, run: Run, to=""):
    """Return to the previous release (or --to ID): switch, reload gunicorn, health check.
    Behind load balancers, host by host like deploy (batch_size), each out while it switches."""
    apps, plan = load_apps(c, run.settings, run.app), plans.rollback(to)
    if to and len(apps) > 1:
        raise Exit("fabstack: --to names one app's release; with several apps add --app NAME", code=2)

    def rollback_app(s):
        if run.dry_run or run.role or run.limit or not rolling(c, "rollback", plan, s, run):
            execute(c, "rollback", plan, s, run)

    each_app(c, apps, rollback_app, run.limit, Changes("rollback", run))


@fab_task(name="backup", flags=READ_ONLY, help={"to": "directory for the copy here (default: backups)"})
def db_backup(c, run: Run, to="backups"):
    """A copy of the app's data (pg_dump from the db host, or SQLite's online backup) on
    its host and here in backups/APP-TIME.dump, checked by size and sha256 on both ends."""
    each_app(c, load_apps(c, run.settings, run.app), lambda s: invocation.backup(c, s, to, run))


@fab_task(
    name="restore", flags=READ_ONLY, help={"file": "the backup to restore", "yes": "really replace the app's data"}
)
def db_restore(c, run: Run, file, yes=False):
    """Replace the app's data with a backup: the app stopped on every app host for the
    duration and started after."""
    s = one_app(load_apps(c, run.settings, run.app), "db.restore")
    invocation.refuse_restore(file, yes)  # before the lock is asked for
    guard(c, s, Changes("db.restore", run), lambda s: invocation.restore(c, s, file, run))


@fab_task(name="backups", flags=("settings", "app"), help={"where": "directory of the copies (default: backups)"})
def db_backups(c, run: Run, where="backups"):
    """The app's backups here, newest first, with size and sha256."""
    for s in load_apps(c, run.settings, run.app):
        invocation.list_backups(c, s, where)


@fab_task(
    help={
        "yes": "really take it off",
        "purge": "its data (database, media, secrets), logs and user too",
        "app": "the app to take off: its name (always given: a second look at what goes)",
    }
)
def remove(c, run: Run, yes=False, purge=False):
    """Take an app off its hosts: processes, units, nginx site, code; its data kept unless --purge."""
    if not run.app:
        raise Exit("fabstack: fab remove needs --app NAME, the app to take off (a second look at what goes)", code=2)
    s = one_app(load_apps(c, run.settings, run.app), "remove")
    invocation.refuse_removal(s, yes, purge, run)  # before the lock is asked for
    guard(c, s, Changes("remove", run), lambda s: invocation.remove(c, s, purge, run))


@fab_task()
def status(c, run: Run):
    """A row per app per host: reachable, nginx and its config test, app, manager, pid,
    workers, release, health, uptime, the SECRET_KEY's hash (one on a farm)."""
    apps = [invocation.with_farm_key_read(c, s, run) for s in load_apps(c, run.settings, run.app)]
    execute_in_one_report(c, "status", apps, reports.status, reports.status_table, run)


@fab_task(
    name="maintenance", positional=("state",),
    help={"state": "on or off", "message": "what the page says (on)"},
)  # fmt: skip
def maintenance_mode(c, run: Run, state, message="The site is down for maintenance and will be back shortly."):
    """fab maintenance on [--message TEXT] / off: the lbs (or the single host) answer 503
    with a page and Retry-After, but for the health check, the ACME challenge and the
    maintenance_allow addresses; a deploy keeps it on; fab status shows it."""
    if state not in ("on", "off"):
        raise Exit(f"fabstack: fab maintenance {state}: say on or off", code=2)
    invocation.refuse_message(message)
    apps, plan = load_apps(c, run.settings, run.app), plans.maintenance_mode(state == "on", message)
    name = f"maintenance-{state}"
    each_app(c, apps, lambda s: execute(c, name, plan, s, run), run.limit, Changes(name, run))


@fab_task(name="lock", flags=("settings", "app"), help={"message": "why, shown to every run it refuses"})
def hold_lock(c, run: Run, message=""):
    """Hold the app's deploy lock by hand: every run that changes its hosts is refused,
    naming you and the message, until fab unlock."""
    invocation.refuse_message(message)
    each_app(c, load_apps(c, run.settings, run.app), lambda s: invocation.lock_by_hand(c, s, message))


@fab_task(flags=("settings", "app"))
def unlock(c, run: Run):
    """Let go of the deploy lock held by fab lock, or left by a run that was killed."""
    each_app(c, load_apps(c, run.settings, run.app), lambda s: invocation.unlock(c, s))


@fab_task(flags=("settings", "app"), help={"lines": "how many lines (default 20)"})
def audit(c, run: Run, lines=20):
    """The last runs that changed the app's hosts: time, who, task, hosts, release from
    and to, result (the audit log on the lock host)."""
    if not str(lines).isdigit() or int(lines) < 1:
        raise Exit(f"fabstack: --lines {lines!r} is not a number of lines; e.g. --lines 50", code=2)
    each_app(c, load_apps(c, run.settings, run.app), lambda s: invocation.show_audit(c, s, int(lines)))


@task
def steps(c):
    """List every step fabstack runs: its key (MODULE.FUNCTION, as in tests/steps/), the
    name runs show, and what it makes true."""
    for line in reports.steps_table(registered()):
        print(line)


db = Collection("db", db_backup, db_restore, db_backups)
tls = Collection("tls", tls_renew)
secret = Collection("secret", secret_rotate)

ns = Collection(
    provision,
    deploy,
    manage,
    logs,
    rollback,
    remove,
    _host_task(
        "releases",
        "List the releases on each host, newest first, the current one marked.",
        reports.releases,
        brief,
        False,
    ),
    status,
    steps,
    maintenance_mode,
    hold_lock,
    unlock,
    audit,
    _control_task("start", "Start gunicorn (or --process NAME) if it is not running, through its process manager."),
    _control_task("stop", "Stop gunicorn (or --process NAME) through its manager (never pkill); confirm it is gone."),
    _control_task("restart", "Stop and start gunicorn (a new master), or every instance of --process NAME."),
    _host_task("reload", "Graceful reload: HUP the master, every worker replaced.", plans.app_control("reload")),
    _host_task("restart-nginx", "Restart nginx, refused when nginx -t fails.", plans.nginx_control("restart")),
    _host_task("reload-nginx", "Reload nginx's config, refused when nginx -t fails.", plans.nginx_control("reload")),
    check,
    _host_task("start-nginx", "Start nginx, refused when nginx -t fails.", plans.nginx_control("start")),
    _host_task("stop-nginx", "Stop nginx.", plans.nginx_control("stop")),
    _host_task(
        "nginx-configtest", "Test nginx's configuration (nginx -t).", plans.nginx_control("configtest"), changes=False
    ),
    lab,
    db,
    tls,
    secret,
)
