"""The tasks of `fab` (in the checkout, through fabfile.py) and `fabstack` (installed):
a thin map from the command line onto deploy/."""

from invoke import Collection, Exit, task

from deploy import checks, invocation, plans, reports
from deploy.console import Console
from deploy.invocation import each_app, execute, execute_in_one_report, hosts_of, load_apps, one_app, run_manage
from deploy.invocation import provision as run_provision
from deploy.lab.tasks import lab
from deploy.release import release_of
from deploy.rollout import migrate_once, rolling
from deploy.steps import registered

brief = Console.brief

HELP = {
    "settings": "settings file (default: ./fabstack.yaml or $FABSTACK_SETTINGS)",
    "dry_run": "report what would change, with diffs, and change nothing",
    "verbose": "show every remote command as it runs",
    "role": "with no -H: only the inventory's hosts with this role (app or lb)",
    "limit": "with no -H: only these inventory hosts (comma-separated host strings or addresses)",
    "json": "print one JSON document on stdout (schema: docs/json.md); progress goes to stderr",
    "app": "with several apps in the settings (apps:), only this one (docs/apps.md)",
}
COMMON = ("settings", "app", "dry_run", "verbose", "role", "limit", "json")


@task(
    help={
        **HELP,
        "workers": "gunicorn workers, or auto (2 x cores + 1)",
        "worker_class": "sync, gevent or gthread",
        "server_name": "nginx server_name",
    }
)
def provision(
    c, settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False, workers=None,
    worker_class=None, server_name=None,
):  # fmt: skip
    """Set up the server: nginx, python3, app user, virtualenv, gunicorn and nginx configs."""
    apps = load_apps(settings, app, workers=workers, worker_class=worker_class, server_name=server_name)
    each_app(c, apps, lambda s: run_provision(c, s, dry_run, verbose, role, limit), limit)


@task(help={**HELP, "project": "Django project to deploy (default: the bundled sample)"})
def deploy(c, settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False, project=None):
    """Upload the app as a release, migrate, collectstatic, start or reload gunicorn."""
    apps = load_apps(settings, app, project_path=project)
    if project and len(apps) > 1:
        raise Exit("fabstack: --project names one app's code; with several apps add --app NAME", code=2)

    def deploy_app(s):
        release = release_of(s)
        plan = plans.deploy(release)
        if s.postgresql and not dry_run:  # one shared database: migrated once, before any host switches
            migrate_once(c, s, release, hosts_of(c, s, role, limit), verbose)
        if dry_run or role or limit or not rolling(c, "deploy", plan, s, verbose):
            execute(c, "deploy", plan, s, dry_run, verbose, role, limit)

    each_app(c, apps, deploy_app, limit)


@task(name="renew", help={**{k: HELP[k] for k in ("settings", "app", "dry_run", "verbose", "json")},
                          "force": "renew now, even when the certificate is not due"})  # fmt: skip
def tls_renew(c, settings=None, app="", dry_run=False, verbose=False, json=False, force=False):
    """Renew the site's ACME certificate when due (--force: now); the other lbs get copies."""
    apps = load_apps(settings, app)
    each_app(c, apps, lambda s: invocation.tls_renew(c, s, force, dry_run, verbose))


def _host_task(name: str, doc: str, plan, report=None):
    @task(name=name, help={k: HELP[k] for k in COMMON})
    def host_task(c, settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False):
        apps = load_apps(settings, app)
        each_app(c, apps, lambda s: execute(c, name, plan, s, dry_run, verbose, role, limit, report), limit)

    host_task.__doc__ = doc
    return host_task


def _control_task(name: str, doc: str):
    @task(name=name, help={**{k: HELP[k] for k in COMMON}, "process": "a background process of the settings"})
    def control_task(
        c, settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False, process=""
    ):  # fmt: skip
        apps = load_apps(settings, app)
        control = plans.app_control(name, process)
        each_app(c, apps, lambda s: execute(c, name, control, s, dry_run, verbose, role, limit), limit)

    control_task.__doc__ = doc
    return control_task


@task(
    help={
        "lines": "how many lines of each log (default 20)",
        "process": "a background process's or scheduled job's output instead",
        "gunicorn": "only gunicorn's logs",
        "nginx": "only nginx's logs for the site",
        "follow": "keep printing new lines as they come, until Ctrl-C",
        **{k: HELP[k] for k in COMMON},
    }
)
def logs(
    c, lines=20, gunicorn=False, nginx=False, follow=False, settings=None, app="", dry_run=False, verbose=False,
    role="", limit="", json=False, process="",
):  # fmt: skip
    """Show the last lines of gunicorn's and nginx's logs on each host, prefixed by host."""
    both = not gunicorn and not nginx
    plan = reports.logs(int(lines), gunicorn or both, nginx or both, follow, process)
    role = role or ("app" if process else "")
    apps = load_apps(settings, app)
    if follow and len(apps) > 1:
        raise Exit("fabstack: logs --follow follows one app's logs; add --app NAME", code=2)
    try:
        each_app(
            c, apps, lambda s: execute(c, "logs", plan, s, verbose=verbose, role=role, limit=limit, report=brief), limit
        )
    except KeyboardInterrupt:  # Ctrl-C is how --follow is meant to end (tail -f's user expects 0, not 1)
        if not follow:
            raise


@task(help={k: HELP[k] for k in ("settings", "app", "verbose", "json")})
def manage(c, settings=None, app="", verbose=False, json=False):
    """Run manage.py with the arguments after -- (fab manage -- createsuperuser) on one app
    host (the first, or -H), as the app user in the current release; its exit code is fab's."""
    s = one_app(load_apps(settings, app), "manage")
    run_manage(c, s, c.config.get("fabstack_remainder") or "", verbose)


@task(help={"to": "release id to return to (default: the one before the current)", **{k: HELP[k] for k in COMMON}})
def rollback(c, to="", settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False):
    """Return to the previous release (or --to ID): switch, reload gunicorn, health check.
    Behind load balancers, host by host like deploy (batch_size), each out while it switches."""
    apps, plan = load_apps(settings, app), plans.rollback(to)
    if to and len(apps) > 1:
        raise Exit("fabstack: --to names one app's release; with several apps add --app NAME", code=2)

    def rollback_app(s):
        if dry_run or role or limit or not rolling(c, "rollback", plan, s, verbose):
            execute(c, "rollback", plan, s, dry_run, verbose, role, limit)

    each_app(c, apps, rollback_app, limit)


@task(
    name="backup",
    help={
        "to": "directory for the copy here (default: backups)",
        **{k: HELP[k] for k in ("settings", "app", "verbose", "json")},
    },
)
def db_backup(c, to="backups", settings=None, app="", verbose=False, json=False):
    """A copy of the app's data (pg_dump from the db host, or SQLite's online backup) on
    its host and here in backups/APP-TIME.dump, checked by size and sha256 on both ends."""
    each_app(c, load_apps(settings, app), lambda s: invocation.backup(c, s, to, verbose))


@task(name="restore", help={"file": "the backup to restore", "yes": "really replace the app's data",
                            **{k: HELP[k] for k in ("settings", "app", "verbose", "json")}})  # fmt: skip
def db_restore(c, file, yes=False, settings=None, app="", verbose=False, json=False):
    """Replace the app's data with a backup: the app stopped on every app host for the
    duration and started after."""
    invocation.restore(c, one_app(load_apps(settings, app), "db.restore"), file, yes, verbose)


@task(name="backups", help={"where": "directory of the copies (default: backups)", "settings": HELP["settings"],
                             "app": HELP["app"]})  # fmt: skip
def db_backups(c, where="backups", settings=None, app=""):
    """The app's backups here, newest first, with size and sha256."""
    for s in load_apps(settings, app):
        invocation.list_backups(c, s, where)


@task(
    help={
        "yes": "really take it off",
        "purge": "its data (database, media, secrets), logs and user too",
        **{k: HELP[k] for k in COMMON},
        "app": "the app to take off: its name (always given: a second look at what goes)",
    }
)
def remove(
    c, app="", yes=False, purge=False, settings=None, dry_run=False, verbose=False, role="", limit="", json=False
):  # fmt: skip
    """Take an app off its hosts: processes, units, nginx site, code; its data kept unless --purge."""
    if not app:
        raise Exit("fabstack: fab remove needs --app NAME, the app to take off (a second look at what goes)", code=2)
    s = one_app(load_apps(settings, app), "remove")
    invocation.remove(c, s, yes, purge, dry_run, verbose, role, limit)


@task(help={k: HELP[k] for k in COMMON})
def status(c, settings=None, app="", dry_run=False, verbose=False, role="", limit="", json=False):
    """A row per app per host: reachable, nginx and its config test, app, manager, pid,
    workers, release, health, uptime."""
    apps = load_apps(settings, app)
    execute_in_one_report(c, "status", apps, reports.status, reports.status_table, dry_run, verbose, role, limit)


@task
def steps(c):
    """List every step fabstack runs: its key (MODULE.FUNCTION, as in tests/steps/), the
    name runs show, and what it makes true."""
    for line in reports.steps_table(registered()):
        print(line)


db = Collection("db", db_backup, db_restore, db_backups)
tls = Collection("tls", tls_renew)

ns = Collection(
    provision,
    deploy,
    manage,
    logs,
    rollback,
    remove,
    _host_task(
        "releases", "List the releases on each host, newest first, the current one marked.", reports.releases, brief
    ),
    status,
    steps,
    _control_task("start", "Start gunicorn (or --process NAME) if it is not running, through its process manager."),
    _control_task("stop", "Stop gunicorn (or --process NAME) through its manager (never pkill); confirm it is gone."),
    _control_task("restart", "Stop and start gunicorn (a new master), or every instance of --process NAME."),
    _host_task("reload", "Graceful reload: HUP the master, every worker replaced.", plans.app_control("reload")),
    _host_task("restart-nginx", "Restart nginx, refused when nginx -t fails.", plans.nginx_control("restart")),
    _host_task("reload-nginx", "Reload nginx's config, refused when nginx -t fails.", plans.nginx_control("reload")),
    _host_task(
        "check",
        "Security check per host: host key, app user, gunicorn bind, secret modes, check --deploy, nginx -t.",
        checks.check,
    ),
    _host_task("start-nginx", "Start nginx, refused when nginx -t fails.", plans.nginx_control("start")),
    _host_task("stop-nginx", "Stop nginx.", plans.nginx_control("stop")),
    _host_task("nginx-configtest", "Test nginx's configuration (nginx -t).", plans.nginx_control("configtest")),
    lab,
    db,
    tls,
)
