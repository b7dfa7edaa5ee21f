"""`fab check`: is a host safe as it runs now? One batched read per host
(deploy/remote/check.sh), then one step per check, each ok or failed with what is
wrong; every check runs even when an earlier one fails, and the run exits 1 when any did.

Django's `check --deploy` warnings are listed, not failed: a site served over plain
HTTP (the guide's setup) always has the HTTPS ones. Its errors fail the check.
"""

from __future__ import annotations

import contextlib
import time

from deploy import manifest, scripts
from deploy.facts import CertificateFact, CheckRead, HostFacts
from deploy.host import HostContext
from deploy.plans import refuse
from deploy.reports import done
from deploy.results import StepFailed
from deploy.runner import HostRun
from deploy.settings import Settings
from deploy.settings.tls import WARN_DAYS, uncovered
from deploy.steps.server import secret_sha256


def read_command(h: HostContext) -> scripts.Shell:
    """One read of everything the checks need: nginx's on every host, the app's on app hosts."""
    lines = ["read_resources", "read_ssh_checks", "read_records"]
    lines += ["read_nginx_checks"] if h.is_app or "lb" in h.roles else []
    if "db" in h.roles:
        lines.append("read_db_checks")
    dbs = h.settings.inventory.with_role("db")
    if dbs and not h.is_app and "db" not in h.roles:  # a load balancer: PostgreSQL must turn it away
        s = h.settings
        lines.append(scripts.line("read_db_reach", dbs[0].address, s.db_port, s.database_user, s.database_name))
    if h.is_app:
        lines.append(scripts.line("read_app_checks", *sorted(h.layout.secret_files(h.settings.secrets))))
        lines.append(scripts.line("read_key_sha", h.layout.secret_key))
    if h.shares_media:
        lines += ["read_media_facts", "read_media_writable"]
    if h.ends_tls:
        lines.append("read_tls")
    return scripts.calls(
        ["check.sh", "postgres.sh", "tls.sh", "media.sh"],
        lines,
        {**h.values, "PG_PROBE_PY": scripts.text("pg_probe.py")},
    )


def sqlite_on_a_farm(settings: Settings) -> str:
    """The one line that says a farm without a db host keeps a database per app host
    ('' when it does not): not refused, since a farm of apps that write nothing runs so."""
    if not settings.farm or settings.postgresql:
        return ""
    return (
        f"fabstack: SQLite on {len(settings.inventory.with_role('app'))} app hosts: each keeps its own database, and a write on one is not on "
        "the others; give one host roles: [db] for one PostgreSQL database"
    )


def findings(h: HostContext, found: CheckRead) -> dict[str, str]:
    """Each check's problem ('' when fine), from what the host read: for a load balancer
    only what it runs (nginx), for an app host everything."""
    f, app = found, h.layout.app
    nginx_checks = {
        "nginx -t": "" if f.nginx_test == "ok" else f.nginx_test if f.nginx_test is not None else "nginx -t failed",
        "nginx hides its version": "" if f.server_tokens else "nginx runs without server_tokens off",
    }
    result = {"host key trusted": ""}  # connected: the key matched known_hosts (or accept-new recorded it)
    result |= ssh_findings(found)
    result["everything fabstack made is an app's"] = unexplained(found)
    if "db" in h.roles:
        result |= db_findings(h, found)
    if found.db_reach is not None:
        reach = found.db_reach
        result["database closed to this host"] = "" if reach in ("rejected", "refused") else f"PostgreSQL {reach}"
    if not h.is_app and "lb" in h.roles:
        return result | nginx_checks
    if not h.is_app:
        return result
    owners, listening = f.owners, f.listen
    # on its unix socket gunicorn listens on no TCP address; on a bind of your own, loopback only
    socket = h.bind.startswith("unix:")
    reachable = [a for a in listening if socket or not a.startswith(("127.", "[::1]", "localhost"))]
    exposed = [f"{path} ({meta or 'missing'})" for path, meta in sorted(f.secret.items())
               if meta != f"{app}:{app} 600" and (meta or path == h.layout.secret_key)]  # fmt: skip
    django = f.django_status
    return result | {
        "app user not root": (
            f"app user {app} has uid 0"
            if f.app_uid == "0"
            else f"gunicorn runs as {', '.join(o for o in owners if o != app)}"
            if set(owners) - {app}
            else "gunicorn is not running"
            if not owners
            else ""
        ),  # fmt: skip
        "gunicorn only through nginx": f"the app user listens on {', '.join(reachable)}" if reachable else "",
        "secret files private": f"not app-only (600): {', '.join(exposed)}" if exposed else "",
        "data directory private": ""
        if f.data_dir == f"{app}:{app} 700"
        else (f"{h.layout.data} is {f.data_dir or 'missing'}; want {app}:{app} 700"),  # fmt: skip
        **nginx_checks,
        "django check --deploy": (
            "" if django in ("", "0") else f"manage.py check --deploy failed: {f.django_error or django}"
        ),
    }


def farm_key_findings(h: HostContext, found: CheckRead) -> dict[str, str]:
    """On an app host of a farm: its SECRET_KEY is the farm's one (the check task read the
    farm's into the settings' secret values), so a session holds on every host."""
    key = h.settings.secret_values.get("SECRET_KEY")
    if not (h.is_app and h.settings.farm):
        return {}
    if key is None:
        problem = "the farm keeps no SECRET_KEY yet: run fab provision"
    elif found.key_sha != secret_sha256(key):
        problem = f"{h.layout.secret_key} is not the farm's one key: run fab provision"
    else:
        problem = ""
    return {"one SECRET_KEY for the farm": problem}


def media_findings(h: HostContext, read: HostFacts, found: CheckRead) -> dict[str, str]:
    """On an app host of a farm with shared media: the volume mounted at the media
    directory, its marker seen (else nginx answers 503 here), the app able to write."""
    if not h.shares_media:
        return {}
    media = h.layout.media
    if read.media_mount != "fuse.glusterfs":
        problem = f"not mounted at {media} (the load balancers take this host out): run fab provision"
    elif not read.media_marker:
        problem = f"the volume at {media} has no {h.layout.media_marker}: run fab provision"
    elif not found.media_writable:
        problem = f"the app cannot write {media}: run fab provision"
    else:
        problem = ""
    return {"shared media": problem}


def unexplained(found: CheckRead) -> str:
    """What is named as fabstack's on the host (a unit, a program, an enabled site, a cron
    file, a pg_hba rule, a Redis user) and no app's record owns: planted by hand, by an
    app, or left by an old run. '' when every one is an app's."""
    records = [manifest.parse(text) for text in found.owns.values()]
    owned = {item for record in records for item in record}
    files = {o.name for o in owned if o.kind in ("file", "cron", "site")}
    apps = {o.name for o in owned if o.kind == "user"}
    # each app's role to its own database: a rule pairing one app's database with another's role is no app's
    pg = {f"{d}:{u}" for r in records for d in manifest.of_kind(r, "database") for u in manifest.of_kind(r, "role")}
    stray = [
        *(f"/etc/systemd/system/{n}" for n in found.found_units),
        *(f"/etc/supervisor/conf.d/{n}" for n in found.found_programs),
        *(f"/etc/nginx/sites-enabled/{n}" for n in found.found_sites),
        *(f"/etc/cron.d/{n}" for n in found.found_cron),
    ]
    unknown = [path for path in stray if path not in files and not path.endswith(".d")]
    unknown += [f"pg_hba rule {rule}" for rule in found.found_pg_rules
                if rule not in pg and not rule.endswith(":postgres")]  # fmt: skip
    unknown += [f"Redis user {user}" for user in found.found_redis_users
                if user not in apps and user != "default"]  # fmt: skip
    if not unknown:
        return ""
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    return f"no app's record on this host owns {', '.join(unknown[:3])}{more}"


def resource_findings(h: HostContext, read: HostFacts) -> dict[str, str]:
    """Free disk where the app lives and available memory, above the settings' floors."""
    s = h.settings
    if not read.disk_free:
        return {}
    disk_mb, memory_mb = read.disk_free // 1024, read.mem_available // 1024
    return {
        f"disk {s.min_free_disk_mb}+ MB free": (
            f"only {disk_mb} MB free on {read.disk_mount or '/'} (min_free_disk_mb {s.min_free_disk_mb}): remove "
            "what fills it (old releases, logs, backups) or grow the disk"
            if disk_mb < s.min_free_disk_mb
            else ""
        ),
        f"memory {s.min_free_memory_mb}+ MB available": (
            f"only {memory_mb} MB of memory available (min_free_memory_mb {s.min_free_memory_mb}): fewer workers "
            "or more memory"
            if memory_mb < s.min_free_memory_mb
            else ""
        ),
    }


KEY_ONLY_ROOT = ("no", "prohibit-password", "without-password", "forced-commands-only")


def ssh_findings(found: CheckRead) -> dict[str, str]:
    """sshd takes keys only, and root logs in by key or not at all (a password that can
    be guessed is the way in that stays open for months)."""
    if found.ssh_passwords is None:
        return {}
    passwords, root = found.ssh_passwords, found.ssh_root
    return {
        "ssh password login off": (
            ""
            if passwords == "no"
            else "sshd accepts passwords: set PasswordAuthentication no in /etc/ssh/sshd_config.d/ (after checking "
            "your key logs in) and reload ssh"
        ),
        "ssh root login by key only": (
            ""
            if root in KEY_ONLY_ROOT
            else f"sshd lets root log in with a password (PermitRootLogin {root or 'yes'}): set PermitRootLogin "
            "prohibit-password (or no) and reload ssh"
        ),
    }


def tls_findings(h: HostContext, cert: CertificateFact | None, now: float) -> dict[str, str]:
    """The certificate nginx serves here: present, its key's, naming every domain, and
    more than WARN_DAYS from its end (certbot renews at 30; 14 means renewal failed)."""
    tls = h.settings.site_tls
    if tls is None:
        return {}
    path = h.tls_paths[0]
    if cert is None or not cert.expires:
        return {"certificate": f"no readable certificate at {path}"}
    missing = uncovered(cert.names, tls.domains)
    left = cert.days_left(int(now))
    return {
        "certificate matches its key": "" if cert.key_matches else f"{path} does not match its key {h.tls_paths[1]}",
        "certificate covers server_name": f"{path} does not cover {', '.join(missing)}" if missing else "",
        f"certificate valid {WARN_DAYS}+ days": (
            ""
            if left >= WARN_DAYS
            else f"{path} expires in {left:.1f} days; fab tls.renew (ACME) or a new tls.certificate"
        ),
    }


def db_findings(h: HostContext, found: CheckRead) -> dict[str, str]:
    """PostgreSQL listens on loopback and this host's own address only, and its
    pg_hba.conf lets in nothing but the app's role from the app hosts."""
    listening = found.pg_listen
    allowed = {"127.0.0.1", "[::1]", *h.settings.inventory.addresses("db")}
    wide = [a for a in listening if a.rsplit(":", 1)[0] not in allowed]
    clients = set(found.pg_clients)
    apps = set(h.settings.inventory.app_clients())
    strangers = sorted(c.split("/")[0] for c in clients if c.split("/")[0] not in apps)
    return {
        "postgresql running": "" if listening else "postgresql does not listen",
        "postgresql listens privately": f"postgresql listens on {', '.join(wide)}" if wide else "",
        "postgresql lets in the app hosts only": f"pg_hba.conf lets in {', '.join(strangers)}" if strangers else "",
    }


def check(h: HostRun) -> None:
    read = HostFacts.parse(h.run(read_command(h)))
    found = CheckRead.parse(read.extra)
    warnings = found.django_warnings.strip()
    problems = findings(h, found) | resource_findings(h, read) | farm_key_findings(h, found)
    problems |= media_findings(h, read, found)
    if h.ends_tls:
        problems |= tls_findings(h, read.certificate, time.time())
    # SQLite on a farm: a warning, not a failure (a farm of apps that write nothing runs so)
    sqlite = sqlite_on_a_farm(h.settings).removeprefix("fabstack: ") if h.is_app else ""
    h.result.data = {name: problem or "ok" for name, problem in problems.items()} | {
        "django warnings": warnings or "none",
        "database warning": sqlite or "none",
    }
    for name, problem in problems.items():
        with contextlib.suppress(StepFailed):  # recorded; the other checks still run
            h.step(refuse if problem else done, *([problem] if problem else []), name=name)
    if warnings:
        h.console.say(h.host, f"django check --deploy warnings: {warnings} (details: fab manage -- check --deploy)")
    if sqlite:
        h.console.say(h.host, f"warning: {sqlite}")
