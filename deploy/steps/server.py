"""Server steps (provision): packages, the app user, directories, virtualenv, secret."""

from __future__ import annotations

import hashlib
import shlex

from deploy.facts import PACKAGES
from deploy.layout import Layout
from deploy.runner import HostRun, say
from deploy.steps.files import ensure_file
from deploy.steps.process import wanted_manager

LOCK_WAIT = 300  # seconds apt may wait for another apt (unattended-upgrades) to finish
APT = f"DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout={LOCK_WAIT}"
# apt-get update does not honour DPkg::Lock::Timeout: retry it while the lists are locked.
APT_UPDATE = (
    f'for i in $(seq {LOCK_WAIT}); do out=$({APT} update 2>&1) && break; case "$out" in *"Could not get lock"*) '
    f'[ "$i" -lt {LOCK_WAIT} ] && sleep 1 && continue;; esac; echo "$out" >&2; exit 100; done'
)
# Finish what an interrupted dpkg (a dropped connection mid-install) left half-done, as
# apt itself asks: pending work is listed in /var/lib/dpkg/updates.
DPKG_RESUME = '{ [ -z "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] || dpkg --configure -a; }'
# Who holds apt's or dpkg's lock now: "PID NAME" lines, from /proc/locks (no psmisc needed).
LOCK_HOLDERS = (
    "inodes=$(stat -c ':%i$' /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock 2>/dev/null "
    "| paste -sd '|'); [ -n \"$inodes\" ] && awk -v re=\"$inodes\" '$6 ~ re {print $5}' /proc/locks | sort -u "
    '| while read -r pid; do echo "$pid $(cat /proc/$pid/comm 2>/dev/null)"; done; true'
)


def apt_packages(h: HostRun) -> bool:
    """nginx, python3, python3-venv (and supervisor when it manages the app) in one apt-get
    call; update the package lists only when they are stale."""
    if "app" in h.settings.inventory.roles_of(h.host):
        wanted = PACKAGES + (("supervisor",) if wanted_manager(h) == "supervisor" else ())
    else:
        wanted = ("nginx", "python3")  # a load balancer needs no virtualenv
    missing = [p for p in wanted if h.facts.get(f"pkg.{p}") != "installed"]
    if not missing:
        return False
    holders = h.run(LOCK_HOLDERS).split("\n")[0].split()  # only on the way to apt: no cost when converged
    if holders:
        say(h.host, f"apt is busy ({' '.join(holders[1:])}, pid {holders[0]}): waiting up to {LOCK_WAIT}s for it")
    stamp = int(h.facts.get("apt_stamp") or 0)
    stale = int(h.facts["now"]) - stamp > h.settings.apt_cache_max_age
    update = f"{APT_UPDATE} && mkdir -p /var/lib/apt/periodic && touch {Layout.APT_STAMP} && " if stale else ""
    h.change(f"{update}{DPKG_RESUME} && {APT} install -y --no-install-recommends {' '.join(missing)}")
    return True


def app_user(h: HostRun) -> bool:
    """A system user for the app: no login shell, never root."""
    if h.facts.get("user"):
        return False
    layout = Layout.of(h.settings)
    h.change(
        f"useradd --system --user-group --home-dir {layout.root} --no-create-home "
        f"--shell /usr/sbin/nologin {shlex.quote(layout.app)}"
    )
    return True


def directories(h: HostRun) -> bool:
    """The app's directories with their owners and modes (code is root's, data the app's)."""
    commands = [
        f"install -d -o {owner} -g {group} -m {mode} {path}"
        for path, owner, group, mode in Layout.of(h.settings).directories()
        if h.facts.get(f"dir.{path}") != f"{owner}:{group} {mode}"
    ]
    if commands:
        h.change(" && ".join(commands))
    return bool(commands)


def requirements(settings) -> list[str]:
    return [
        f"Django{settings.django_version}",
        f"gunicorn[gevent]{settings.gunicorn_version}",
        f"gevent{settings.gevent_version}",
    ]


def virtualenv(h: HostRun) -> bool:
    """A virtualenv (PEP 668: no system-wide pip) with Django, gunicorn and gevent."""
    layout = Layout.of(h.settings)
    wanted = requirements(h.settings)
    python = h.facts.get("python", "")
    marker = hashlib.sha256("\n".join([python, *wanted]).encode()).hexdigest()[:16]
    if h.facts.get("venv_marker") == marker and h.facts.get("venv_version") == python:
        return False
    # Recreate only for a new Python; otherwise upgrade in place under the running app.
    fresh = f"rm -rf {layout.venv} && " if h.facts.get("venv_version") not in ("", python) else ""
    h.change(
        f"{fresh}python3 -m venv --without-pip {layout.venv} && {layout.pip_install()} --no-compile "
        f"{' '.join(map(shlex.quote, wanted))} && {layout.venv}/bin/python -m compileall -q -j 0 {layout.venv}/lib "
        f">/dev/null && echo {marker} > {layout.venv_marker}"
    )
    h.notify("restart_app")  # a new interpreter or gunicorn needs a new master, not a HUP
    return True


def secret_key(h: HostRun) -> bool:
    """Django's SECRET_KEY, readable by the app user alone: from the secrets setting, or
    generated on the host (so it never leaves it)."""
    layout = Layout.of(h.settings)
    if "SECRET_KEY" in h.settings.secret_values:
        return _secret_file(h, "SECRET_KEY")
    meta = h.facts.get(f"file.{layout.secret_key}", "").partition(" ")[2]
    owner = f"{layout.app}:{layout.app} 600"
    if meta == owner:
        return False
    path = layout.secret_key
    chown = f"chown -h {layout.app}:{layout.app} {path}; " if meta and not meta.startswith(f"{layout.app}:") else ""
    h.change(chown + layout.app_file_call("new_secret", path))  # as the app: its data dir may hold a planted link
    return True


def secrets(h: HostRun) -> bool:
    """The other secrets from the settings, each in its own file (app user, mode 600)."""
    changed = [_secret_file(h, name) for name in h.settings.secret_values if name != "SECRET_KEY"]
    return any(changed)


def _secret_file(h: HostRun, name: str) -> bool:
    """Uploaded over SFTP, never on a command line or in a diff; the app reloads to read it."""
    layout = Layout.of(h.settings)
    value = h.settings.secret_values[name] + "\n"
    if ensure_file(h, layout.secret(name), value, layout.app, layout.app, "600", secret=True):
        h.notify("reload_app")
        return True
    return False
