"""fabstack's firewall: one nftables table of the app's own on a host. With `firewall:
true`, nothing comes in but what the host's roles serve, to those they serve it to;
without it, only what has no access rules of its own is guarded: Redis on a farm's db
host, glusterd and the bricks of a farm's shared media. New rules are tried before they are kept: loaded with a guard that puts the old
ones back after ROLLBACK_SECONDS unless fab, logging in again through the new ones,
stands it down. Rules that shut SSH out undo themselves; the run says so."""

from __future__ import annotations

from deploy.host import REDIS_PORT, HostContext
from deploy.ops import UNREACHABLE, Command, Diff, Probe, Reach, Steps, Upload, step
from deploy.render import environment, render
from deploy.results import StepFailed
from deploy.steps.files import ensure_file

FIREWALL = ["firewall.sh"]
ROLLBACK_SECONDS = 60
GLUSTERD_PORT = 24007
BRICK_PORTS = (49152, 60999)  # glusterd.vol's base-port and max-port


def _service(name: str, ports: list[int], clients: list[str], ranges: tuple[tuple[int, int], ...] = ()) -> dict:
    """One rule of the table: ports (and ranges of ports) open to clients (every address when empty)."""
    words = [*map(str, ports), *(f"{low}-{high}" for low, high in ranges)]
    shown = words[0] if len(words) == 1 else "{ " + ", ".join(words) + " }"
    return {
        "name": name,
        "ports": shown,
        "port_list": ports,
        "clients": clients,
        "clients4": [c for c in clients if ":" not in c],
        "clients6": [c for c in clients if ":" in c],
    }


def ssh_port(h: HostContext) -> int:
    """The port fab logs in on (the host string's, else 22)."""
    tail = h.host.rsplit("]", 1)[-1] if "]" in h.host else h.host.split("@")[-1]
    return int(tail.rsplit(":", 1)[1]) if ":" in tail else 22


def services(h: HostContext) -> list[dict]:
    """What this host lets in, and from where: by role with `firewall: true`, else Redis alone."""
    s = h.settings
    apps = s.inventory.addresses("app")
    guarded = [_service("redis", [REDIS_PORT], apps)] if h.redis_on_farm else []
    if h.shares_media:  # glusterd, and the bricks on the ports it hands out
        guarded.append(_service("glusterfs", [GLUSTERD_PORT], apps, (BRICK_PORTS,)))
    if not s.firewall:
        return guarded
    wanted = [_service("ssh", [ssh_port(h)], [str(n) for n in s.ssh_from])]
    if public_ports(h):
        wanted.append(_service("web", public_ports(h), []))
    if h.is_app and h.behind_lbs:
        wanted.append(_service("app site", [s.app_port], s.inventory.addresses("lb")))
    if "db" in h.roles and h.member is not None and s.postgresql:
        wanted.append(_service("postgresql", [s.db_port], apps))
    return wanted + guarded


def public_ports(h: HostContext) -> list[int]:
    """The site's ports open to everyone, on the hosts that face the public (an lb, or an
    app host with no lbs in front); [] on the others."""
    s = h.settings
    if "lb" in h.roles or (h.is_app and not h.behind_lbs):
        return [s.listen_port] + ([s.site_tls.port] if h.ends_tls and s.site_tls else [])
    return []


def served_ports(h: HostContext) -> list[int]:
    """The ports this app's site takes traffic on here: the public ones, or app_port
    behind load balancers (what another app's firewall table must let in)."""
    behind = [h.settings.app_port] if h.is_app and h.behind_lbs else []
    return sorted(set(public_ports(h) + behind))


def open_ports(h: HostContext) -> list[int]:
    """The ports this app's table lets in at all, with `firewall: true` (every other port
    it drops, for every app on the host); [] without it."""
    if not h.settings.firewall:
        return []
    return sorted({port for rule in services(h) for port in rule["port_list"]})


@step("firewall")
def rules(h: HostContext) -> Steps:
    """The table as the settings want it; new rules tried, then kept (see the module)."""
    s, layout = h.settings, h.layout
    jinja = environment(s.templates_dir)
    content = render(jinja, "firewall.nft.j2", app_name=s.app_name, unit=layout.firewall_unit,
                     table=layout.firewall_table, by_role=s.firewall, services=services(h))  # fmt: skip
    if h.facts.pid1 == "systemd":
        unit = render(jinja, "firewall.service.j2", app_name=s.app_name, file=layout.firewall_file,
                      table=layout.firewall_table, before=["redis-server.service"] if h.runs_redis else [])  # fmt: skip
        yield from ensure_file(h, layout.firewall_unit_file, unit)
    found = h.facts.file(layout.firewall_file)
    if found and found.holds(content, "root", "root", "600") and h.facts.firewall == "loaded":
        return
    yield Diff(layout.firewall_file, content, exists=found is not None)
    staged = yield Upload("firewall.nft", content.encode())
    yield Command(h.shell(FIREWALL, "firewall_try", staged, ROLLBACK_SECONDS))
    answer = (yield Reach(h.shell([], "echo", "in"))) or ""
    if answer.startswith(UNREACHABLE):
        ago = (yield Probe(h.shell(FIREWALL, "firewall_rolled_back", ROLLBACK_SECONDS + 15))) or ""
        raise StepFailed(
            f"the new firewall rules shut fab out ({answer.removeprefix(UNREACHABLE)}); the rules before them "
            f"came back by themselves {ago.strip() or '?'} s ago: open SSH to your address in ssh_from and run again"
        )
    yield Command(h.shell(FIREWALL, "firewall_keep", staged))
    h.facts.firewall = "loaded"
