"""What an app owns on a host, declared once: every file, directory, systemd unit,
supervisor program, cron file, nginx site, nftables table, database, role and user that
a step of the app makes, from its layout and its settings.

The record of it is written with the app's claims (/etc/fabstack/APP/claims, `owns=`),
and read three ways: `remove` deletes exactly what the record and today's settings name
(never a pattern over names, which overlap: app `shop`'s load balancer site is
`shop-lb.conf`, the site of an app named `shop-lb`), the clash check refuses a second
app whose names meet another app's record on the host (`a-b` and `a_b` both want the
database `a_b`), and the facts read the checksums of the files in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.layout import Layout
from deploy.settings import Settings, SettingsError
from deploy.settings.loading import share_hosts

# the kinds of thing an app owns
KINDS = ("site", "unit", "program", "cron", "file", "table", "directory", "database", "role", "user")


@dataclass(frozen=True, order=True)
class Owned:
    kind: str  # one of KINDS
    name: str  # a path, a unit's or a table's name, a database's

    def text(self) -> str:
        return f"{self.kind}:{self.name}"


def parse(text: str) -> tuple[Owned, ...]:
    """A record's `owns=` value back into what it names (unknown kinds are dropped)."""
    found = []
    for item in text.split():
        kind, _, name = item.partition(":")
        if kind in KINDS and name:
            found.append(Owned(kind, name))
    return tuple(sorted(set(found)))


def owned(layout: Layout, settings: Settings) -> tuple[Owned, ...]:
    """Everything this app may own on a host, whatever the host's roles: a name the app
    could take there is its own, so no other app may have it."""
    app, s = layout.app, settings
    processes = [p.name for p in s.background]
    programs = [layout.program_file, *map(layout.bg_program_file, processes)]
    units = [
        layout.unit, *(f"{layout.logrotate_unit}.{end}" for end in ("service", "timer")),
        *(f"{layout.backup_unit}.{end}" for end in ("service", "timer")), layout.firewall_unit,
        *(f"{layout.bg_unit(name)}.service" for name in processes),
        *(f"{layout.job_unit(j.name)}.{end}" for j in s.jobs for end in ("service", "timer")), layout.media_unit,
    ]  # fmt: skip
    files = [
        layout.nginx_site, layout.nginx_lb_site, layout.unit_file, *programs, layout.logrotate_state,
        *layout.logrotate_files(), f"/etc/systemd/system/{layout.backup_unit}.service",
        f"/etc/systemd/system/{layout.backup_unit}.timer", layout.firewall_unit_file, layout.redis_conf,
        layout.redis_auth, layout.acme_hook, layout.certbot_dropin, layout.gunicorn_conf, layout.app_env_file,
        layout.job_runner, layout.tls_certificate, layout.tls_key, layout.acme_ca, layout.logrotate_conf,
        layout.claims, layout.db_password_file, layout.farm_key, layout.farm_key_fallback, layout.redis_url_file, layout.firewall_file,
        *map(layout.bg_unit_file, processes), layout.media_unit_file,
        *(path for j in s.jobs for path in layout.job_files(j.name)), layout.maintenance_page,
    ]  # fmt: skip
    items = [
        *(Owned("site", link) for link in (layout.nginx_link, layout.nginx_lb_link)),
        *(Owned("unit", unit) for unit in units),
        *(Owned("program", path) for path in programs),
        *(Owned("cron", path) for path in (layout.cron_file, layout.logrotate_cron)),
        *(Owned("file", path) for path in files),
        Owned("table", layout.firewall_table),
        *(Owned("directory", path) for path in (layout.root, layout.logs, layout.nginx_logs, layout.records, layout.backups, layout.lock_dir)),
        Owned("database", s.database_name),
        Owned("role", s.database_user),
        Owned("user", app),
    ]  # fmt: skip
    return tuple(sorted(set(items)))


def record(items: tuple[Owned, ...]) -> str:
    """The `owns=` value of the claims file: one word per thing owned."""
    return " ".join(item.text() for item in items)


def clash(mine: tuple[Owned, ...], theirs: tuple[Owned, ...]) -> Owned | None:
    """The first thing both own (None: nothing)."""
    both = sorted(set(mine) & set(theirs))
    return both[0] if both else None


def of_kind(items: tuple[Owned, ...], kind: str) -> list[str]:
    return [item.name for item in items if item.kind == kind]


def refuse_clashes(apps: list[Settings]) -> None:
    """Two apps of one settings file that may share a host and would own one thing
    there: SettingsError naming both and the thing, before any host is touched."""
    owns = [owned(Layout.of(s), s) for s in apps]
    for i, a in enumerate(apps):
        for j in range(i + 1, len(apps)):
            b = apps[j]
            both = clash(owns[i], owns[j]) if share_hosts(a, b) else None
            if both:
                raise SettingsError(
                    f"apps {a.app_name!r} and {b.app_name!r} would both own the {both.kind} {both.name} on a host; "
                    f"give one of them another app_name (or db_name/db_user for a database or role)"
                )
