"""fab tasks: a thin map from the command line onto deploy/."""

from invoke import Collection, task

from deploy import plans
from deploy.cli import execute, load_settings
from deploy.lab.tasks import lab
from deploy.release import Release

COMMON = {
    "settings": "settings file (default: ./fabstack.yaml or $FABSTACK_SETTINGS)",
    "dry_run": "report what would change, with diffs, and change nothing",
    "verbose": "show every remote command as it runs",
}


@task(
    help={
        **COMMON,
        "workers": "gunicorn workers (default: 2 x cores + 1)",
        "worker_class": "sync, gevent or gthread",
        "server_name": "nginx server_name",
    }
)
def provision(c, settings=None, dry_run=False, verbose=False, workers=None, worker_class=None, server_name=None):
    """Set up the server: nginx, python3, app user, virtualenv, gunicorn and nginx configs."""
    s = load_settings(settings, workers=workers, worker_class=worker_class, server_name=server_name)
    execute(c, plans.provision, s, dry_run, verbose)


@task(help={**COMMON, "project": "Django project to deploy (default: the bundled sample)"})
def deploy(c, settings=None, dry_run=False, verbose=False, project=None):
    """Upload the app as a release, migrate, collectstatic, start or reload gunicorn."""
    s = load_settings(settings, project_path=project)
    execute(c, plans.deploy_plan(Release(s.project, s.static_dir)), s, dry_run, verbose)


def _app_task(action: str, doc: str):
    @task(name=action, help={"settings": COMMON["settings"], "verbose": COMMON["verbose"]})
    def app_task(c, settings=None, verbose=False):
        execute(c, plans.app_control(action), load_settings(settings), verbose=verbose)

    app_task.__doc__ = doc
    return app_task


def _nginx_task(action: str, doc: str):
    @task(name=f"{action}-nginx" if action != "configtest" else "nginx-configtest", help={"verbose": COMMON["verbose"]})
    def nginx_task(c, verbose=False):
        execute(c, plans.nginx_control(action), load_settings(None), verbose=verbose)

    nginx_task.__doc__ = doc
    return nginx_task


@task(help={"settings": COMMON["settings"]})
def status(c, settings=None):
    """Show whether gunicorn runs, its master pid, workers and current release."""
    execute(c, plans.app_status, load_settings(settings))


@task(
    help={
        "lines": "how many lines of each log (default 20)",
        "app": "only gunicorn's logs",
        "nginx": "only nginx's logs for the site",
        "settings": COMMON["settings"],
    }
)
def logs(c, lines=20, app=False, nginx=False, settings=None):
    """Show the last lines of gunicorn's and nginx's logs on each host, prefixed by host."""
    both = not app and not nginx
    execute(c, plans.logs(int(lines), app or both, nginx or both), load_settings(settings))


ns = Collection(
    provision,
    deploy,
    status,
    logs,
    _app_task("start", "Start gunicorn in the background (nohup, pidfile) if it is not running."),
    _app_task("stop", "Stop gunicorn by its pidfile (never pkill) and confirm it is gone."),
    _app_task("restart", "Stop and start gunicorn (a new master)."),
    _app_task("reload", "Graceful reload: HUP the master, every worker replaced."),
    _nginx_task("restart", "Restart nginx, refused when nginx -t fails."),
    _nginx_task("reload", "Reload nginx's config, refused when nginx -t fails."),
    _nginx_task("start", "Start nginx, refused when nginx -t fails."),
    _nginx_task("stop", "Stop nginx."),
    _nginx_task("configtest", "Test nginx's configuration (nginx -t)."),
    lab,
)
