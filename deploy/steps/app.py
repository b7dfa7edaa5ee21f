"""App steps (deploy): gunicorn's config, the project's requirements, and releases."""

from __future__ import annotations

import re
import shlex
from functools import partial

from deploy.layout import Layout
from deploy.release import Release
from deploy.render import environment, render
from deploy.runner import HostRun, StepFailed
from deploy.steps.files import ensure_file


def allowed_hosts(h: HostRun) -> list[str]:
    """Django's ALLOWED_HOSTS: the allowed_hosts setting if given, else the site's names
    from server_name (`*.example.com` as Django's `.example.com`); a `_` server_name (any
    name) gives this host's addresses and its load balancers'. Never `*`, unless set:
    a forged Host header then gets 400, not a password-reset link to the forger's site."""
    s = h.settings
    if s.allowed_hosts:
        return list(dict.fromkeys([*s.allowed_hosts, "localhost"]))
    names = [n.replace("*.", ".", 1) for n in s.server_name.split() if n != "_"]
    if not names or "_" in s.server_name.split():
        lbs = [m.address for m in s.inventory.with_role("lb")]
        addresses = [f"[{a}]" if ":" in a else a for a in [*h.facts.get("addresses", "").split(), *lbs]]
        names += [*addresses, "127.0.0.1", "[::1]"]
    return list(dict.fromkeys([*names, "localhost"]))


def app_env(h: HostRun) -> dict[str, str]:
    """The environment of every app process (gunicorn and manage.py); no secret values."""
    s, layout = h.settings, Layout.of(h.settings)
    return {
        "DJANGO_SETTINGS_MODULE": s.django_settings,
        "DJANGO_SECRET_KEY_FILE": layout.secret_key,
        "DJANGO_ALLOWED_HOSTS": ",".join(allowed_hosts(h)),
        "DJANGO_DB_PATH": layout.database,
        "DJANGO_MEDIA_ROOT": layout.media,
        "DJANGO_MEDIA_URL": s.media_url,
        "DJANGO_STATIC_URL": s.static_url,
        "FABSTACK_WORKER_CLASS": s.worker_class,
        **{f"DJANGO_{name}_FILE": layout.secret(name) for name in s.secrets},
    }


def workers(h: HostRun) -> int:
    if h.settings.workers == "auto":
        return 2 * int(h.facts.get("nproc") or 1) + 1
    return h.settings.workers


def gunicorn_config(h: HostRun, release_dir: str = "") -> bool:
    """gunicorn's config file (the guide's gun.conf) rendered from templates/. It replaces
    the running one only after gunicorn itself accepted it and loaded the app with it
    (from release_dir, else the current release), as the app user with the app's
    environment: a wrong wsgi_module or setting leaves the app running on the old one."""
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
        control_socket=f"{layout.run}/gunicorn.ctl",
        log_dir=layout.logs,
        loglevel=s.loglevel,
        env=[f"{k}={v}" for k, v in app_env(h).items()],
    )
    release_dir = release_dir or h.facts.get(f"link.{layout.current}", "")
    check = partial(_check_gunicorn_config, h, release_dir) if release_dir else None
    if ensure_file(h, layout.gunicorn_conf, content, "root", layout.app, "640", check=check):
        h.notify("reload_app")
        return True
    return False


def _check_gunicorn_config(h: HostRun, release_dir: str, config: str) -> str:
    """Shell: gunicorn --check-config with config, loading the app from release_dir."""
    layout = Layout.of(h.settings)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in app_env(h).items())
    check = f"{env} {layout.venv}/bin/gunicorn --check-config --config {config} --chdir {release_dir}"
    return (
        f'out=$({layout.as_app(check, release_dir)} 2>&1) || {{ echo "$out" | tail -n 15; '
        f'echo "gunicorn rejected the new config (wsgi_module {h.settings.wsgi_module}): $(echo "$out" | '
        f"grep -v '^ ' | tail -n 1); the app keeps running on the old one (a new project? fab deploy tries the config "
        f'with the release it uploads)"; false; }}'
    )


def app_python(h: HostRun, workdir: str, args: str) -> str:
    """The virtualenv's python as the app user, in workdir, with the app's environment."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in app_env(h).items())
    layout = Layout.of(h.settings)
    return layout.as_app(f"{env} {layout.venv}/bin/python {args}", workdir)


def provisioned(h: HostRun) -> bool:
    """The server is provisioned (else: run fab provision first). In a dry run (say
    `provision deploy --dry-run` on a new host) a host not provisioned yet is a change to
    come, not a failure: the deploy reports it and goes no further."""
    if h.facts.get("venv_marker") and h.facts.get("user") and h.facts.get("nginx_pid"):
        return False
    if h.dry_run:
        h.show_diff("(not provisioned yet: after fab provision, the release would be uploaded and started)\n")
        return True
    raise StepFailed("this host is not provisioned: run fab provision on it first")


def project_requirements(h: HostRun, release: Release) -> bool:
    """The project's own requirements.txt, installed into the virtualenv when it changed."""
    if not release.requirements or h.facts.get("requirements_marker") == release.requirements_marker:
        return False
    layout = Layout.of(h.settings)
    staged = "" if h.dry_run else h.stage("requirements.txt", release.requirements.encode())
    h.change(f"{layout.pip_install()} -r {staged} && echo {release.requirements_marker} > {layout.requirements_marker}")
    h.notify("restart_app")
    return True


def upload_release(h: HostRun, release: Release) -> bool:
    """The project as releases/ID: unpacked, its wsgi module imported (a broken app stops
    here, before the live site is touched), migrated, static files collected, then named."""
    layout = Layout.of(h.settings)
    if release.id in h.facts.get("releases", "").split():
        return False
    final = f"{layout.releases}/{release.id}"
    partial = f"{layout.releases}/.{release.id}.partial"
    archive = "" if h.dry_run else h.stage("release.tar.gz", release.archive)
    static = f"{partial}/{h.settings.static_dir}"
    wsgi = h.settings.wsgi_module.split(":")[0]
    h.change(  # a release that fails any check leaves nothing behind
        f"{{ rm -rf {partial} && mkdir -p {partial} && tar -xzf {archive} -C {partial} --no-same-owner "
        f"&& install -d -o {layout.app} -g {layout.app} -m 755 {static} "
        f"&& {app_python(h, partial, '-c ' + shlex.quote('import ' + wsgi))} "
        f"&& {app_python(h, partial, 'manage.py migrate --noinput -v 0')} "
        f"&& {app_python(h, partial, 'manage.py collectstatic --noinput -v 0')} "
        # root compiles the code only, never in the static files the app wrote
        f"&& {{ {layout.venv}/bin/python -m compileall -q -x {shlex.quote(re.escape(static))} {partial} >/dev/null "
        f"|| true; }} && {_release_modes(layout, partial, h.settings.static_dir)} "
        f"&& {_static_path_open(partial, h.settings.static_dir)} && mv -T {partial} {final}; }}"
        f" || {{ status=$?; rm -rf {partial}; exit $status; }}"
    )
    return True


def _release_modes(layout: Layout, release: str, static_dir: str) -> str:
    """Shell: a release's code root:APP with no world bits (the app reads it, nobody else
    does, nobody but root writes it); its collected static files root's and world-readable
    (nginx serves them; the app collected them but cannot rewrite them), with no symlink
    the app may have left among them. chown -h, chmod -R and find -P never follow one."""
    static = f"{release}/{static_dir}"
    return (
        f"chown -R -h root:{layout.app} {release} && chmod -R u+rwX,g+rX,g-w,o-rwx {release} "
        f"&& chown -R -h root:root {static} && find {static} -type l -delete && chmod -R u+rwX,go+rX,go-w {static}"
    )


def _static_path_open(release: str, static_dir: str) -> str:
    """Shell: others (nginx's worker user) may pass through the directories down to the
    static files, and read nothing else of the release."""
    parts = static_dir.strip("/").split("/")
    return "chmod o+x " + " ".join(f"{release}/{'/'.join(parts[:i])}".rstrip("/") for i in range(len(parts)))


def switch_release(h: HostRun, release: Release) -> bool:
    """`current` points at the release: an atomic symlink swap."""
    layout = Layout.of(h.settings)
    target = f"{layout.releases}/{release.id}"
    if h.facts.get(f"link.{layout.current}") == target:
        return False
    h.change(f"ln -sfn {target} {layout.current}.new && mv -T {layout.current}.new {layout.current}")
    h.notify("reload_app")
    return True


def releases(h: HostRun) -> list[str]:
    """Release ids on the host, newest first."""
    return h.facts.get("releases", "").split()


def previous_release(h: HostRun) -> str:
    """The newest release older than the current one ('' if there is none)."""
    current = h.facts.get(f"link.{Layout.of(h.settings).current}", "").rsplit("/", 1)[-1]
    ids = releases(h)
    return ids[ids.index(current) + 1] if current in ids and ids.index(current) + 1 < len(ids) else ""


def prune_releases(h: HostRun) -> bool:
    """Keep the newest keep_releases releases, and always the current one and the one before it."""
    layout = Layout.of(h.settings)
    current = h.facts.get(f"link.{layout.current}", "").rsplit("/", 1)[-1]
    keep = set(releases(h)[: h.settings.keep_releases]) | {current, previous_release(h)}
    old = [f"{layout.releases}/{rid}" for rid in releases(h) if rid not in keep]
    if not old:
        return False
    h.change(f"rm -rf {' '.join(old)}")
    return True
