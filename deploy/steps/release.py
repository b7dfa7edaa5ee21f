"""App steps (deploy): gunicorn's config, the project's requirements, and releases."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from deploy import cache
from deploy.appenv import app_env
from deploy.host import HostContext
from deploy.ops import Blocked, Claim, Command, Handler, Notify, Probe, Publish, Say, Steps, Upload, step
from deploy.release import Release
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.scripts import Shell
from deploy.settings import project as project_files
from deploy.steps.files import ensure_file

RELEASE = ["release.sh"]


def workers(h: HostContext) -> int:
    if isinstance(h.settings.workers, int):
        return h.settings.workers
    return 2 * h.facts.nproc + 1  # auto


def gunicorn_conf(h: HostContext) -> str:
    """gunicorn's config file (the guide's gun.conf), rendered from templates/."""
    s, layout = h.settings, h.layout
    return render(
        environment(s.templates_dir),
        "gunicorn.conf.py.j2",
        app_name=s.app_name,
        wsgi_module=s.wsgi_module,
        current=layout.current,
        bind=h.bind,
        workers=workers(h),
        worker_class=s.worker_class,
        preload_app=s.preload_app,
        threads=s.threads,
        worker_connections=s.worker_connections,
        backlog=s.backlog,
        timeout=s.timeout,
        control_socket=f"{layout.run}/gunicorn.ctl",
        log_dir=layout.logs,
        loglevel=s.loglevel,
        env=[f"{k}={v}" for k, v in app_env(s, h.facts).items()],
    )


@step("gunicorn config")
def gunicorn_config(h: HostContext, release_dir: str = "") -> Steps:
    """gunicorn's config. It replaces the running one only after gunicorn itself accepted
    it and loaded the app with it (from release_dir, else the current release), as the
    app user with the app's environment: a wrong wsgi_module or setting leaves the app
    running on the old one. When the current release is another project (it lacks the
    wsgi module's package: `provision deploy` moving a host to a new project), provision
    leaves the config to the deploy, which checks it against the release it uploads."""
    conf, app = gunicorn_conf(h), h.layout.app
    found = h.facts.file(h.layout.gunicorn_conf)
    if found and found.holds(conf, "root", app, "640"):
        return
    if not release_dir and h.facts.current and not h.facts.current_has_wsgi:
        package = h.settings.wsgi_module.split(":")[0].split(".")[0]
        yield Say(f"gunicorn config: the current release has no {package} package (another project); "
                  "fab deploy writes the config with the release it uploads")  # fmt: skip
        return
    release_dir = release_dir or h.facts.current
    check = ("check_gunicorn_config", release_dir, h.settings.wsgi_module) if release_dir else ()
    if (yield from ensure_file(h, h.layout.gunicorn_conf, conf, "root", app, "640", check=check)):
        yield Notify(Handler.RELOAD_APP)


@step("provisioned")
def provisioned(h: HostContext) -> Steps:
    """The server is provisioned (else: run fab provision first). In a dry run (say
    `provision deploy --dry-run` on a new host) that is a change to come, not a failure:
    the deploy reports it and goes no further."""
    if not h.facts.provisioned:
        yield Blocked(
            "this host is not provisioned: run fab provision on it first",
            "(not provisioned yet: after fab provision, the release would be uploaded and started)",
        )


@step("python fits")
def python_fits(h: HostContext) -> Steps:
    """The host's Python runs the Django the project asks for (Django 6 needs 3.12+, which
    Debian 12 does not have): refused before anything on the host changes, naming the
    distributions that have it."""
    needs = project_files.requirements(h.settings.project, h.settings.requirements)
    problem = project_files.python_too_old(needs, h.facts.python, h.facts.os)
    if problem:
        raise StepFailed(problem)
    return
    yield


@step("current release")
def has_release(h: HostContext) -> Steps:
    """The host has a current release to run commands in (else: deploy first)."""
    if not h.facts.current:
        yield Blocked("no release here yet: run fab deploy first", "(no release yet: fab deploy makes one)")


def manage_command(h: HostContext, args: str) -> Shell:
    """manage.py with args (as the user typed them, split as a shell would) in the
    current release, as the app user with the app's environment."""
    return h.shell([], "manage", *shlex.split(args))


@step("project requirements")
def project_requirements(h: HostContext, release: Release) -> Steps:
    """The project's own requirements (requirements.txt with its -r and -c includes, or
    the requirements setting's file, or pyproject.toml's dependencies), installed into
    the virtualenv when they changed:
    built as wheels once per kind of host (the first host to need them, from the package
    index) and installed from those wheels everywhere, so the other hosts need no index."""
    if not release.requirements or h.facts.requirements_marker == release.requirements_marker:
        return
    build = install = release.requirements
    for name in release.needs.files:  # a vendored archive: built from where it is uploaded, installed as its wheel
        staged_archive = yield Upload(Path(name).name, release.archive_bytes(name))
        build = "".join(f"{staged_archive if line == name else line}\n" for line in build.splitlines())
        install = "".join(f"{pinned_archive(name) if line == name else line}\n" for line in install.splitlines())
    if release.needs.constraints:  # the -c files' lines, in a file of their own that pip reads as constraints
        constraints = yield Upload("constraints.txt", release.needs.constraints_text.encode())
        build, install = f"-c {constraints}\n{build}", f"-c {constraints}\n{install}"
    staged = yield Upload("requirements.txt", build.encode())
    installed = (yield Upload("requirements-install.txt", install.encode())) if install != build else staged
    facts = h.facts
    key = "wheels-" + cache.key(facts.os, facts.arch, facts.python, release.requirements_key)
    archive = yield Claim(key)
    if archive:
        wheels = yield Upload(f"{key}.tar.gz", Path(archive).read_bytes())
        yield Command(h.shell(["python.sh"], "install_wheels", installed, wheels, release.requirements_marker))
    else:
        yield Publish(key, h.shell(["python.sh"], "build_wheels", staged, release.requirements_marker, installed))
    yield Notify(Handler.RESTART_APP)


def pinned_archive(path: str) -> str:
    """A vendored archive's requirement once it is built: its name and version, from its
    file name (NAME-VERSION.tar.gz, NAME-VERSION-TAGS.whl), which the wheel built from it satisfies."""
    stem = Path(path).name
    if stem.endswith(".whl"):
        name, version = stem.split("-")[:2]
    else:
        name, _, version = re.sub(r"\.(tar\.gz|tgz|zip)$", "", stem).rpartition("-")
    return f"{name}=={version}"


RELEASE_MARGIN_MB = 32  # compiled bytecode, collected static files, the staging copy


@step("room for the release")
def room_for_release(h: HostContext, release: Release) -> Steps:
    """Enough free space for a new release (the upload, the unpacked copy, what Django
    adds to it), checked before anything on the host changes: a full disk refused here
    leaves the live release serving, where an unpack cut short could leave a mess."""
    if release.id in h.facts.releases or not h.facts.disk_free:
        return
    need_mb = (len(release.archive) + 2 * release.unpacked_bytes) // 2**20 + RELEASE_MARGIN_MB
    free_mb = h.facts.disk_free // 1024
    if free_mb < need_mb:
        raise StepFailed(
            f"only {free_mb} MB free on {h.facts.disk_mount or '/'}, and this release needs about {need_mb} MB: "
            f"free some space (fewer keep_releases, old logs) and deploy again; nothing was changed"
        )
    return
    yield


@step("release uploaded")
def upload(h: HostContext, release: Release) -> Steps:
    """The project as releases/ID: unpacked, its wsgi module imported (a broken app stops
    here, before the live site is touched), migrated (a database of this host's own: a
    shared PostgreSQL is migrated once per deploy, by `migrate`), static files
    collected, then named."""
    if release.id in h.facts.releases:
        return
    base, delta = h.facts.current_release, None
    if base in h.facts.releases and h.facts.python:  # ship what differs from the current release
        delta = release.delta(base, (yield Probe(h.shell(RELEASE, "read_manifest", base))) or "", h.facts.python)
    if delta:
        on_base: tuple[str, ...] = (base, (yield Upload("release-remove", delta.remove)))
        archive = yield Upload("release-delta.tar.gz", delta.archive)
    else:
        on_base, archive = (), (yield Upload("release.tar.gz", release.archive))
    static_dir = h.settings.static_dir
    # root compiles the code only, never inside the static files the app wrote
    static_regex = re.escape(f"{h.layout.releases}/.{release.id}.partial/{static_dir}")
    wsgi = h.settings.wsgi_module.split(":")[0]
    own_database = "no" if h.settings.postgresql else "yes"
    yield Command(
        h.shell(RELEASE, "unpack_release", release.id, archive, static_dir, wsgi, static_regex, own_database, *on_base)
    )
    h.facts.releases = [release.id, *h.facts.releases]


@step("database migrated")
def migrate(h: HostContext, release: Release) -> Steps:
    """The shared database migrated by the new release, from one host, before any host
    switches to it (migrations that add must not break the release still serving)."""
    yield Command(h.shell(RELEASE, "migrate_release", release.id))


@step("release current")
def switch(h: HostContext, release: Release) -> Steps:
    """`current` points at the release (an atomic symlink swap), and the app loads it.
    A release that is current but never passed its check here (a run cut off between
    switch and check) is reloaded too: its workers may still run the code before it, or
    import parts of it lazily, and its check must test what it serves."""
    target = f"{h.layout.releases}/{release.id}"
    if h.facts.current != target:
        yield Command(h.shell(["gunicorn.sh"], "switch_current", target))
        h.facts.current = target
        yield Notify(Handler.RELOAD_APP)
    elif h.facts.passed != release.id:
        yield Notify(Handler.RELOAD_APP)


@step("old releases pruned")
def prune(h: HostContext) -> Steps:
    """Keep the newest keep_releases releases, and always the current one and the one before it."""
    ids = h.facts.releases
    keep = set(ids[: h.settings.keep_releases]) | {h.facts.current_release, h.facts.previous_release}
    old = [rid for rid in ids if rid not in keep]
    if old:
        yield Command(h.shell(RELEASE, "remove_releases", *old))
