"""App steps (deploy): gunicorn's config, releases, and the gunicorn process.

gunicorn is started the guide's way (nohup, in the background, detached from the SSH
session) as the app user, with a pidfile; it is stopped by that pidfile, never by
`pkill gunicorn`. A code or config change is a graceful reload (HUP: the master stays,
workers are replaced); a new virtualenv is a full restart.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from deploy.layout import Layout
from deploy.release import Release
from deploy.render import environment, render
from deploy.runner import HostRun, StepFailed
from deploy.settings import Settings
from deploy.steps.files import ensure_file

HEALTH = (Path(__file__).resolve().parent.parent / "remote" / "health.py").read_text()


def app_env(s: Settings) -> dict[str, str]:
    """The environment of every app process (gunicorn and manage.py); no secret values."""
    layout = Layout.of(s)
    names = [n for n in s.server_name.split() if n != "_"]
    return {
        "DJANGO_SETTINGS_MODULE": s.django_settings,
        "DJANGO_SECRET_KEY_FILE": layout.secret_key,
        "DJANGO_ALLOWED_HOSTS": ",".join(dict.fromkeys([*s.allowed_hosts, *names, "localhost"])),
        "DJANGO_DB_PATH": layout.database,
        "DJANGO_MEDIA_ROOT": layout.media,
        "DJANGO_MEDIA_URL": s.media_url,
        "DJANGO_STATIC_URL": s.static_url,
        "FABSTACK_WORKER_CLASS": s.worker_class,
    }


def workers(h: HostRun) -> int:
    if h.settings.workers == "auto":
        return 2 * int(h.facts.get("nproc") or 1) + 1
    return h.settings.workers


def gunicorn_config(h: HostRun) -> bool:
    """gunicorn's config file (the guide's gun.conf) rendered from templates/."""
    s, layout = h.settings, Layout.of(h.settings)
    content = render(
        environment(s.templates_dir),
        "gunicorn.conf.py.j2",
        app_name=s.app_name,
        wsgi_module=s.wsgi_module,
        current=layout.current,
        bind=s.bind,
        workers=workers(h),
        worker_class=s.worker_class,
        threads=s.threads,
        worker_connections=s.worker_connections,
        backlog=s.backlog,
        timeout=s.timeout,
        pidfile=layout.pidfile,
        control_socket=f"{layout.run}/gunicorn.ctl",
        log_dir=layout.logs,
        loglevel=s.loglevel,
        env=[f"{k}={v}" for k, v in app_env(s).items()],
    )
    if ensure_file(h, layout.gunicorn_conf, content, "root", layout.app, "640"):
        h.notify("reload_app")
        return True
    return False


def as_app(layout: Layout, command: str, workdir: str = "/") -> str:
    """Run command as the app user with a clean environment (no `cd`, no sudo tricks)."""
    return f"setpriv --reuid={layout.app} --regid={layout.app} --init-groups --reset-env env -C {workdir} {command}"


def _manage(h: HostRun, workdir: str, args: str) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in app_env(h.settings).items())
    return as_app(Layout.of(h.settings), f"{env} {Layout.of(h.settings).venv}/bin/python manage.py {args}", workdir)


def provisioned(h: HostRun) -> bool:
    """The server is provisioned (else: run fab provision first)."""
    if not h.facts.get("venv_marker") or not h.facts.get("user") or not h.facts.get("nginx_pid"):
        raise StepFailed("this host is not provisioned: run fab provision on it first")
    return False


def project_requirements(h: HostRun, release: Release) -> bool:
    """The project's own requirements.txt, installed into the virtualenv when it changed."""
    if not release.requirements or h.facts.get("requirements_marker") == release.requirements_marker:
        return False
    layout = Layout.of(h.settings)
    staged = "" if h.dry_run else h.stage("requirements.txt", release.requirements.encode())
    h.change(
        f"{layout.venv}/bin/pip install --disable-pip-version-check -q -r {staged} "
        f"&& echo {release.requirements_marker} > {layout.requirements_marker}"
    )
    h.notify("restart_app")
    return True


def upload_release(h: HostRun, release: Release) -> bool:
    """The project as releases/ID: unpacked, migrated, static files collected, then named."""
    layout = Layout.of(h.settings)
    if release.id in h.facts.get("releases", "").split():
        return False
    final = f"{layout.releases}/{release.id}"
    partial = f"{layout.releases}/.{release.id}.partial"
    archive = "" if h.dry_run else h.stage("release.tar.gz", release.archive)
    static = f"{partial}/{h.settings.static_dir}"
    h.change(
        f"rm -rf {partial} && mkdir -p {partial} && tar -xzf {archive} -C {partial} --no-same-owner "
        f"&& install -d -o {layout.app} -g {layout.app} -m 755 {static} "
        f"&& {_manage(h, partial, 'migrate --noinput -v 0')} "
        f"&& {_manage(h, partial, 'collectstatic --noinput -v 0')} "
        f"&& {layout.venv}/bin/python -m compileall -q {partial} >/dev/null; mv -T {partial} {final}"
    )
    return True


def switch_release(h: HostRun, release: Release) -> bool:
    """`current` points at the release: an atomic symlink swap."""
    layout = Layout.of(h.settings)
    target = f"{layout.releases}/{release.id}"
    if h.facts.get(f"link.{layout.current}") == target:
        return False
    h.change(f"ln -sfn {target} {layout.current}.new && mv -T {layout.current}.new {layout.current}")
    h.notify("reload_app")
    return True


def _alive_sh(layout: Layout) -> str:
    """Shell functions: `alive` reads the pidfile into $pid; `live PID` skips zombies."""
    return (
        'live() { [ -n "$1" ] && [ -d /proc/$1 ] && ! grep -q "^State:.*Z" /proc/$1/status 2>/dev/null; }\n'
        f'alive() {{ pid=$(cat {layout.pidfile} 2>/dev/null); [ -n "$pid" ] && '
        f'tr "\\0" " " < /proc/$pid/cmdline 2>/dev/null | grep -q gunicorn; }}'
    )


def _health_target(s: Settings) -> str:
    names = [n for n in s.server_name.split() if n != "_" and "*" not in n]
    return names[0] if names else "localhost"


def health_command(h: HostRun, address: str) -> str:
    s = h.settings
    return f"python3 -c {shlex.quote(HEALTH)} {shlex.quote(address)} {shlex.quote(s.health_path)} {_health_target(s)}"


def start_command(h: HostRun) -> str:
    layout = Layout.of(h.settings)
    # setsid in a non-interactive shell execs (no fork), as do setpriv, env and nohup:
    # $! is the gunicorn master itself, so a crash at start is seen at once.
    start = as_app(layout, f"nohup {layout.venv}/bin/gunicorn --config {layout.gunicorn_conf}")
    return f"""{_alive_sh(layout)}
if alive; then exit 0; fi
rm -f {layout.pidfile}
setsid {start} >> {layout.logs}/gunicorn.out 2>&1 < /dev/null &
master=$!
{_wait_healthy(h, "started")}"""


def _wait_healthy(h: HostRun, what: str, extra: str = "true") -> str:
    """Poll the app's health until it answers, or fail early when the master dies."""
    layout = Layout.of(h.settings)
    return f"""for i in $(seq 1 150); do
  live $master || break
  if {extra} && {health_command(h, h.settings.bind)} 2>/dev/null; then exit 0; fi
  sleep 0.2
done
echo "gunicorn {what} but does not answer on {h.settings.bind}{h.settings.health_path}; its last log lines:" >&2
tail -q -n 12 {layout.logs}/error.log {layout.logs}/gunicorn.out 2>/dev/null | tail -n 12 >&2
exit 1"""


def reload_command(h: HostRun) -> str:
    """HUP: the master re-reads its config and replaces every worker; wait until it has."""
    layout = Layout.of(h.settings)
    old_gone = 'gone=1; for w in $old; do live $w && gone=; done; [ -n "$gone" ]'
    return f"""{_alive_sh(layout)}
alive || exit 3
master=$pid
old=$(pgrep -P $master | tr '\\n' ' ')
kill -HUP $master
{_wait_healthy(h, "reloaded", "{ " + old_gone + "; }")}"""


def stop_command(layout: Layout) -> str:
    """TERM the master named by the pidfile and wait until it is gone (a subshell, so a
    restart can go on after it)."""
    return f"""({_alive_sh(layout)}
alive || {{ rm -f {layout.pidfile}; exit 0; }}
kill -TERM $pid
for i in $(seq 1 150); do live $pid || {{ rm -f {layout.pidfile}; exit 0; }}; sleep 0.2; done
kill -KILL $pid; rm -f {layout.pidfile})"""


def restart_command(h: HostRun) -> str:
    """A new master: needed when the virtualenv's Python or gunicorn itself changed."""
    return stop_command(Layout.of(h.settings)) + " &&\n" + start_command(h)


def process(h: HostRun, may_start: bool = True) -> bool:
    """gunicorn running the current release: started if down, reloaded or restarted on change."""
    running = bool(h.facts.get("app_pid"))
    if not running:
        if not may_start:
            return False
        h.change(start_command(h))
    elif "restart_app" in h.notified:
        h.change(restart_command(h))
    elif "reload_app" in h.notified:
        h.change(reload_command(h))
    else:
        return False
    return True


def health(h: HostRun) -> bool:
    """The site answers through nginx (checked after every change)."""
    if h.dry_run:
        return False
    h.run(health_command(h, f"127.0.0.1:{h.settings.listen_port}"))
    return False
