"""Several apps on one host: each records what it holds -- its server names,
where gunicorn listens, whether its site is nginx's default server -- in
/etc/fabstack/APP/claims, and an app whose settings want what another holds is refused
before anything on the host changes, naming both."""

from __future__ import annotations

from deploy import manifest
from deploy.host import HostContext
from deploy.ops import Command, Steps, step
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.steps import firewall
from deploy.steps.files import ensure_file


def claims_text(h: HostContext) -> str:
    s = h.settings
    jinja = environment(s.templates_dir)
    bind = h.bind if h.is_app else ""  # a load balancer alone runs no gunicorn
    return render(
        jinja, "claims.j2", server_name=s.server_name, bind=bind, default_server=s.default_server,
        serves=firewall.served_ports(h), firewall=firewall.open_ports(h),
        owns=manifest.record(manifest.owned(h.layout, s)),
    )  # fmt: skip


@step("other apps on this host")
def no_clash(h: HostContext) -> Steps:
    """This app wants no name, bind or default server another app on the host holds,
    nor a name or default server of a site no record covers."""
    s, app = h.settings, h.settings.app_name
    names = set(s.server_name.split())
    yield from _no_clash_with_sites(h, names)
    opens, serves = firewall.open_ports(h), firewall.served_ports(h)
    mine = manifest.owned(h.layout, s)
    for other, held in sorted(h.facts.claims.items()):
        if other == app:
            continue
        shared = manifest.clash(mine, manifest.parse(held.get("owns", "")))
        if shared:
            raise StepFailed(
                f"app {app!r} would own the {shared.kind} {shared.name}, which app {other!r} owns on this host; "
                f"give app {app!r} another app_name (or db_name/db_user for a database or role)"
            )
        both = sorted(names & set(held.get("server_name", "").split()))
        if both == ["_"]:
            raise StepFailed(
                f"apps {app!r} and {other!r} would both answer any name (server_name _) on this host; "
                f"give {app!r} its own server_name"
            )
        if both:
            raise StepFailed(
                f"server_name {both[0]} is app {other!r}'s on this host too; give app {app!r} names of its own"
            )
        if s.default_server and held.get("default_server") == "yes":
            raise StepFailed(
                f"app {other!r} is this host's default server; set default_server: false for app {app!r} "
                "(one app on a host answers the names no site claims)"
            )
        blocked = _blocked_ports(opens, _ports(held.get("serves", "")))
        if blocked:
            raise StepFailed(
                f"app {app!r}'s firewall would drop app {other!r}'s port {blocked} on this host (a drop in any "
                "nftables table is final); give both apps the same ports, or firewall: false"
            )
        blocked = _blocked_ports(_ports(held.get("firewall", "")), serves)
        if blocked:
            raise StepFailed(
                f"app {other!r}'s firewall would drop app {app!r}'s port {blocked} on this host (a drop in any "
                "nftables table is final); give both apps the same ports, or firewall: false on both"
            )
        if h.is_app and held.get("bind") == h.bind:
            raise StepFailed(
                f"bind {h.bind} is app {other!r}'s on this host; give app {app!r} another port, or leave bind "
                "unset for its own unix socket"
            )
    return
    yield


def _no_clash_with_sites(h: HostContext, names: set[str]) -> Steps:
    """The enabled nginx sites that are no recorded app's (by hand, or an app from
    before the records): their names and default server are theirs."""
    s, app = h.settings, h.settings.app_name
    recorded = {f"{other}.conf" for other in h.facts.claims} | {f"{other}-lb.conf" for other in h.facts.claims}
    ours = {str(port) for port in firewall.served_ports(h)}
    for name, site in sorted(h.facts.sites.items()):
        if name in recorded:
            continue
        path = f"/etc/nginx/sites-enabled/{name}"
        both = sorted((names & set(site.names)) - {"_"})
        if both:
            raise StepFailed(
                f"server_name {both[0]} is {path}'s on this host too; give app {app!r} names of its own, "
                "or take that site off"
            )
        if s.default_server and ours & set(site.default_ports):
            raise StepFailed(
                f"{path} is this host's default server; set default_server: false for app {app!r}, or take it "
                "off that site"
            )
    return
    yield


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split() if p.isdigit()]


def _blocked_ports(table_opens: list[int], served: list[int]) -> int:
    """A port served that a firewall table opening table_opens drops (0: none, or no table)."""
    return next((p for p in served if table_opens and p not in table_opens), 0)


@step("claims recorded")
def recorded(h: HostContext) -> Steps:
    """What this app holds, for the other apps' runs to read."""
    yield from ensure_file(h, h.layout.claims, claims_text(h), "root", "root", "644")


@step("app removed")
def removed(h: HostContext, purge: bool) -> Steps:
    """This app off the host: exactly what its record on the host and today's settings
    say it owns (deploy/manifest.py): its sites, units, programs, cron files, files,
    firewall table and code; its data, logs, backups and user only with purge
    (deploy/remote/claims.sh). Its database and role go in their own step, with purge."""
    recorded = manifest.parse(h.facts.claims.get(h.settings.app_name, {}).get("owns", ""))
    owned = tuple(sorted(set(recorded) | set(manifest.owned(h.layout, h.settings))))
    lists = [" ".join(manifest.of_kind(owned, kind)) for kind in ("unit", "program", "cron", "file", "table")]
    yield Command(h.shell(["nginx.sh", "claims.sh"], "remove_app", "yes" if purge else "no", *lists))
