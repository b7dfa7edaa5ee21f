"""Server steps (provision): packages, the app user, directories, virtualenv, secrets."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy import cache, packages
from deploy.host import APT_WAIT, HostContext
from deploy.layout import Layout
from deploy.ops import Changes, Claim, Command, Handler, Notify, Probe, Publish, Say, Steps, Upload, step
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.scripts import plain, quote
from deploy.settings import Settings
from deploy.settings import project as project_files
from deploy.steps.files import ensure_file
from deploy.steps.gunicorn import wanted_manager


@step("apt packages", files=(Layout.APT_PROXY,))
def apt_packages(h: HostContext) -> Steps:
    """nginx, python3, python3-venv (and supervisor when it manages the app; on an app
    host, the system_packages setting's, for the project's builds) in one apt-get call;
    the package lists updated first only when they are stale."""
    wanted = packages.wanted(
        h.roles,
        wanted_manager(h),
        h.tls_mode,
        h.runs_redis,
        h.uses_cron,
        h.firewall_here,
        h.settings.unattended_upgrades,
        h.shares_media,
    ) + (tuple(h.settings.system_packages) if h.is_app else ())
    if h.settings.apt_proxy:  # before apt needs it
        proxy = render(environment(h.settings.templates_dir), "apt-proxy.conf.j2", proxy=h.settings.apt_proxy)
        yield from ensure_file(h, h.layout.APT_PROXY, proxy)
    missing = [p for p in wanted if not h.facts.installed(p)]
    if not missing:
        return
    holders = (yield Probe(h.shell(["apt.sh"], "lock_holders"))) or ""  # only on the way to apt
    holder = holders.split("\n")[0].split()
    if holder:
        yield Say(f"apt is busy ({' '.join(holder[1:])}, pid {holder[0]}): waiting up to {APT_WAIT}s for it")
    stale = h.facts.now - h.facts.apt_stamp > h.settings.apt_cache_max_age
    yield Command(h.shell(["apt.sh"], "apt_install", "yes" if stale else "no", *missing))


@step("security updates", files=(Layout.AUTO_UPGRADES, Layout.UNATTENDED_UPGRADES), upkeep=True)
def security_updates(h: HostContext) -> Steps:
    """unattended-upgrades for the distribution's security updates only (apt's daily
    timers run it), rebooting at unattended_reboot when one needs it; switched off in
    apt's periodic settings when unattended_upgrades is false."""
    s, layout = h.settings, h.layout
    jinja = environment(s.templates_dir)
    yield from ensure_file(
        h, layout.AUTO_UPGRADES, render(jinja, "auto-upgrades.conf.j2", enabled=s.unattended_upgrades)
    )
    if s.unattended_upgrades:
        yield from ensure_file(
            h, layout.UNATTENDED_UPGRADES, render(jinja, "unattended-upgrades.conf.j2", reboot=s.unattended_reboot)
        )


USER_COMMENT = "fabstack app"  # the comment of every app user fabstack makes


@step("app account")
def app_account(h: HostContext) -> Steps:
    """The app's user, /srv/APP and /var/log/APP are fabstack's, or not there yet: an
    account fabstack did not make (postgres, www-data, a person's) would run the app
    with its rights, and a directory of another program's (/var/log/nginx for an app
    named nginx) would be handed to the app. Checked before anything on the host changes."""
    f, layout = h.facts, h.layout
    if f.app_uid and f.user_home != layout.root:
        raise StepFailed(
            f"user {layout.app} exists on this host and is not an app fabstack made (uid {f.app_uid}, home "
            f"{f.user_home or '-'}): choose another app_name"
        )
    if not f.app_uid:
        made = [path for path in (layout.root, layout.logs) if path in f.dirs]
        if made:
            raise StepFailed(
                f"{made[0]} exists on this host but user {layout.app} does not: fabstack did not make it; "
                "choose another app_name (or remove it, if it is a leftover of yours)"
            )
    return
    yield


@step("app user")
def app_user(h: HostContext) -> Steps:
    """A system user for the app: no login shell, never root, marked as fabstack's."""
    if h.facts.app_uid:
        return
    root, app = quote(h.layout.root), quote(h.layout.app)
    comment = quote(f"{USER_COMMENT} {h.layout.app}")
    yield Command(
        plain(
            f"useradd --system --user-group --home-dir {root} --no-create-home --shell /usr/sbin/nologin "
            f"--comment {comment} {app}"
        )
    )


@step("directories")
def directories(h: HostContext) -> Steps:
    """The app's directories with their owners and modes (code is root's, data the app's)."""
    wrong = [
        f"{path}:{owner}:{group}:{mode}"
        for path, owner, group, mode in h.layout.directories()
        if h.facts.dirs.get(path) != f"{owner}:{group} {mode}"
    ]
    if wrong:
        yield Command(h.shell([], "install_dirs", *wrong))


def requirements(settings: Settings) -> list[str]:
    """What the virtualenv holds: Django, gunicorn with its gevent extra, gevent, and
    PostgreSQL's driver when the app uses it; but none the project's own requirements
    name (the project's pins win: its psycopg, in whichever of its forms, is the only
    one, never beside ours)."""
    ours = [
        f"Django{settings.django_version}",
        f"gunicorn[gevent]{settings.gunicorn_version}",
        f"gevent{settings.gevent_version}",
        *(["psycopg[binary]>=3.1"] if settings.postgresql else []),
    ]
    named = project_files.names(project_files.requirements(settings.project, settings.requirements))
    return [r for r in ours if project_files.family(project_files.name_of(r)) not in map(project_files.family, named)]


def venv_marker(h: HostContext) -> str:
    """What the virtualenv should hold, as a hash: the host's Python and the requirements."""
    return hashlib.sha256("\n".join([h.facts.python, *requirements(h.settings)]).encode()).hexdigest()[:16]


def venv_key(h: HostContext, marker: str) -> str:
    """What decides a virtualenv's bits: the OS release, the architecture, its path (its
    scripts name their interpreter by it) and the marker (the Python, the requirements)."""
    return cache.key(h.facts.os, h.facts.arch, h.layout.venv, marker)


@step("virtualenv")
def virtualenv(h: HostContext) -> Steps:
    """A virtualenv (PEP 668: no system-wide pip) with Django, gunicorn and gevent, built
    once per kind of host: the first host of a kind to need it installs it with pip and
    sends it, compressed, to the controller's cache; the others (and the next runs) get
    that archive, unpacked in place of pip: no package index needed, the same bits. Made
    anew only for a new Python, else upgraded in place under the running app."""
    wanted, python, marker = requirements(h.settings), h.facts.python, venv_marker(h)
    if h.facts.venv_marker == marker and h.facts.venv_version == python:
        return
    key = venv_key(h, marker)
    archive = yield Claim(key)
    if archive:
        staged = yield Upload(f"venv-{key}.tar.gz", Path(archive).read_bytes())
        yield Command(h.shell(["python.sh"], "unpack_venv", staged, marker))
    else:
        fresh = "yes" if h.facts.venv_version not in ("", python) else "no"
        yield Command(h.shell(["python.sh"], "make_venv", fresh, marker, *wanted))
        yield Publish(key, h.shell(["python.sh"], "pack_venv"))
    yield Notify(Handler.RESTART_APP)  # a new interpreter or gunicorn needs a new master, not a HUP


FALLBACK = "SECRET_KEY_FALLBACK"  # a secret value: the farm's key before its last rotation


@step("secret key")
def secret_key(h: HostContext) -> Steps:
    """Django's SECRET_KEY, readable by the app user alone: from the secrets setting, or
    generated on the host (so it never leaves it)."""
    if "SECRET_KEY" in h.settings.secret_values:
        had = h.facts.file(h.layout.secret_key)
        if (yield from _secret_file(h, "SECRET_KEY")) and had:
            yield Say(
                "secret key: this host's own key is replaced by the app's one SECRET_KEY (the farm's, or your "
                "secrets:); sessions and signed links made with the old key end"
            )
        if FALLBACK in h.settings.secret_values:  # the farm's key before its last rotation
            yield from _secret_file(h, FALLBACK)
        return
    found, app = h.facts.file(h.layout.secret_key), h.layout.app
    if found and found.has_mode(app, app, "600"):
        return
    yield Command(h.shell([], "new_secret", h.layout.secret_key))


@step("secret key rotated")
def rotate_key(h: HostContext) -> Steps:
    """fab secret.rotate on a host that keeps its own key (a single app host): the key
    becomes the fallback, a new one is made there by the app user, and the app reloads
    (gracefully: what the old key signed stays good through SECRET_KEY_FALLBACKS)."""
    yield Command(h.shell(["secret_key.sh"], "rotate_secret_key", h.layout.secret_key, h.layout.secret_key_fallback))
    yield Notify(Handler.RELOAD_APP)


@step("farm key rotated")
def rotate_farm_key(h: HostContext) -> Steps:
    """fab secret.rotate on the farm's key host: its key becomes the fallback, a new one
    is made (the app hosts get both next)."""
    yield Command(h.shell(["secret_key.sh"], "rotate_farm_key"))


@step("secrets")
def secrets(h: HostContext) -> Steps:
    """The other secrets from the settings, each in its own file (app user, mode 600)."""
    for name in h.settings.secret_values:
        if name not in ("SECRET_KEY", FALLBACK):
            yield from _secret_file(h, name)


def secret_sha256(value: str) -> str:
    """The sha256 of the file that holds a secret's value (the value and a newline): what
    check and status compare a host's SECRET_KEY with."""
    return hashlib.sha256((value + "\n").encode()).hexdigest()


def _secret_file(h: HostContext, name: str) -> Changes:
    """Uploaded over SFTP, never on a command line or in a diff; the app reloads to read
    it. Returns whether it changed."""
    value = h.settings.secret_values[name] + "\n"
    app = h.layout.app
    if (yield from ensure_file(h, h.layout.secret(name), value, app, app, "600", secret=True)):
        yield Notify(Handler.RELOAD_APP)
        return True
    return False
