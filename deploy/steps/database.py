"""PostgreSQL on the db host: its config, who may connect, the app's role and database,
and the password (made on the db host, never on a command line or in a log)."""

from __future__ import annotations

from pathlib import Path

from deploy import scripts
from deploy.host import HostContext
from deploy.ops import Command, Download, Handler, Notify, Probe, Say, Steps, Upload, step
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.steps.files import app_copy, ensure_file

POSTGRES = ["postgres.sh"]
# The distribution's PostgreSQL, for a host where it is not installed yet (a dry run of
# the first provision): Debian 12 has 15, Debian 13 has 17, Ubuntu 22.04 14, 24.04 16.
DISTRIBUTION_PG = {"debian 12": "15", "debian 13": "17", "ubuntu 22.04": "14", "ubuntu 24.04": "16"}


def pg_version(h: HostContext) -> str:
    return h.facts.pg_version or DISTRIBUTION_PG.get(h.facts.os, "15")


def clients(h: HostContext) -> list[str]:
    """The addresses the app connects from: each app host's, or loopback on a single host."""
    return [f"{a}/128" if ":" in a else f"{a}/32" for a in h.settings.inventory.app_clients()]


@step("postgresql port free")
def port_free(h: HostContext) -> Steps:
    """db_port is PostgreSQL's or free on this host: checked before anything is installed."""
    taken = h.facts.db_port_taken_by
    others = sorted({db for db, _, _ in other_apps_rules(h)})
    if others and h.facts.pg_port and h.facts.pg_port != h.settings.db_port:
        raise StepFailed(
            f"PostgreSQL on this host listens on port {h.facts.pg_port} for database {others[0]} of another app; "
            f"set db_port: {h.facts.pg_port}"
        )
    if taken:
        raise StepFailed(
            f"db_port {h.settings.db_port} is in use by {taken} on this host; stop it or set db_port to a free port"
        )
    return
    yield


@step("postgresql config")
def config(h: HostContext) -> Steps:
    """Where PostgreSQL listens: loopback, and the db host's address for the app hosts."""
    listen = "localhost" if h.member is None else f"localhost,{h.member.address}"
    text = render(environment(h.settings.templates_dir), "postgresql.conf.j2", listen=listen, port=h.settings.db_port)
    if (yield from ensure_file(h, h.layout.pg_conf(pg_version(h)), text, "postgres", "postgres", "644")):
        yield Notify(Handler.RESTART_DB)


def other_apps_rules(h: HostContext) -> list[tuple[str, str, str]]:
    """The access rules already on this db host for other apps' databases (DB, USER,
    ADDRESS): several apps may share a db host, and one app's provision keeps the others'."""
    ours = (h.settings.database_name, h.settings.database_user)
    rules = []
    for rule in h.facts.pg_hba_rules.split(","):
        parts = rule.split()
        if len(parts) == 3 and (parts[0], parts[1]) != ours:
            rules.append((parts[0], parts[1], parts[2]))
    return rules


@step("postgresql access")
def access(h: HostContext, removing: bool = False) -> Steps:
    """pg_hba.conf: the app's role to its database from the app hosts, and the rules of
    the other apps on this host as they were; nothing else (removing: the others only)."""
    s = h.settings
    mine = [] if removing else [(s.database_name, s.database_user, client) for client in clients(h)]
    rules = sorted(other_apps_rules(h) + mine)  # one order, whichever app writes it
    local_rules = sorted({(db, user) for db, user, _ in rules})
    text = render(environment(s.templates_dir), "pg_hba.conf.j2", rules=rules, local_rules=local_rules)
    if (yield from ensure_file(h, h.layout.pg_hba(pg_version(h)), text, "postgres", "postgres", "640")):
        yield Notify(Handler.RELOAD_DB)


@step("database dropped")
def dropped(h: HostContext) -> Steps:
    """fab remove --purge on the db host: the app's database and role gone."""
    if h.facts.pg_online:
        yield Command(h.shell(POSTGRES, "drop_database"))


@step("postgresql running")
def running(h: HostContext) -> Steps:
    """The handler of PostgreSQL: started when down, restarted for a new listen address
    or port, reloaded for new access rules; nothing otherwise."""
    action = "restart" if Handler.RESTART_DB in h.notified else "reload" if Handler.RELOAD_DB in h.notified else "none"
    if action != "none" or not h.facts.pg_online:
        yield Command(h.shell(POSTGRES, "postgres_running", action))
    h.settle(Handler.RESTART_DB, Handler.RELOAD_DB)


@step("database")
def database(h: HostContext) -> Steps:
    """The app's login role (its password made here, once) and its database."""
    f = h.facts
    if f.db_role_exists and f.db_exists and not f.db_public_connect and f.file(h.layout.db_password_file):
        return
    yield Command(h.shell(POSTGRES, "ensure_database"))


@step("database password")
def app_password(h: HostContext) -> Steps:
    """The app's copy of the password where the app runs on the db host itself."""
    yield from app_copy(h, h.layout.db_password_file, "DB_PASSWORD", "postgres.sh", "app_db_password")


BACKUP_PROGRAM = "/usr/local/lib/fabstack/db-backup"  # deploy/remote/db-backup.sh, one for the host's apps


@step("daily backups", files=(BACKUP_PROGRAM,))
def backup_timer(h: HostContext) -> Steps:
    """A daily pg_dump on the db host (a systemd timer), keeping the newest db_backup_keep;
    a host without systemd is told to schedule fab db.backup instead."""
    if h.facts.pid1 != "systemd":
        yield Say("daily backups: this host runs no systemd; schedule fab db.backup (cron on your machine)")
        return
    s, layout, unit = h.settings, h.layout, h.layout.backup_unit
    jinja = environment(s.templates_dir)
    service = render(jinja, "db-backup.service.j2", app_name=s.app_name, backups=layout.backups, program=BACKUP_PROGRAM,
                     keep=s.db_backup_keep, port=s.db_port, db_name=s.database_name)  # fmt: skip
    timer = render(jinja, "db-backup.timer.j2", app_name=s.app_name, unit=f"{unit}.service")
    yield from ensure_file(h, BACKUP_PROGRAM, scripts.text("db-backup.sh"), "root", "root", "755")
    changed = yield from ensure_file(h, f"/etc/systemd/system/{unit}.service", service)
    changed = (yield from ensure_file(h, f"/etc/systemd/system/{unit}.timer", timer)) or changed
    if changed or h.facts.backup_timer != "active":
        yield Command(h.shell(POSTGRES, "enable_backup_timer"))


def kind(h: HostContext) -> str:
    return "postgresql" if h.settings.postgresql else "sqlite"


@step("backup")
def backup(h: HostContext, name: str, local: str) -> Steps:
    """The app's data copied on the host (kept there too) and here; the copy here is
    checked against the host's by size and sha256."""
    yield from _copied_here(h, (yield Probe(h.shell(POSTGRES, "backup_database", kind(h), name))), name, local)


@step("media backup")
def media_backup(h: HostContext, name: str, local: str) -> Steps:
    """The app's uploads (media) as a tar.gz, on the host and here, checked as the data
    is; the host keeps the newest db_backup_keep."""
    made = yield Probe(h.shell(POSTGRES, "backup_media", name, h.settings.db_backup_keep))
    yield from _copied_here(h, made, name, local)


def _copied_here(h: HostContext, made: str | None, name: str, local: str) -> Steps:
    """The host's backup `name` (its sha256 and size in made) downloaded to local, equal."""
    made = made or ""
    copied = yield Download(f"{h.layout.backups}/{name}", local)
    if copied and copied.split() != made.split():
        raise StepFailed(f"the copy of {name} differs from the host's ({copied} here, {made.strip()} there); run again")
    sha, _, size = made.strip().partition(" ")
    yield Say(f"backup: {local} ({size} bytes, sha256 {sha}), equal on the host ({h.layout.backups}/{name}) and here")


@step("restore")
def restore(h: HostContext, local: str) -> Steps:
    """The app's data replaced by the backup at local (uploaded first, its size checked)."""
    staged = yield Upload(Path(local).name, Path(local).read_bytes())
    yield Command(h.shell(POSTGRES, "restore_database", kind(h), staged))


@step("media restore")
def media_restore(h: HostContext, local: str) -> Steps:
    """The app's uploads replaced by the media backup at local, by the app user."""
    staged = yield Upload(Path(local).name, Path(local).read_bytes())
    yield Command(h.shell(POSTGRES, "restore_media", staged))
