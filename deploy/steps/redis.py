"""Redis (redis: true) on the db host or the single host: the distribution's server,
listening on loopback and the host's private address, with a password made there, and
on a farm behind a firewall table that lets in the app hosts alone."""

from __future__ import annotations

from deploy.host import REDIS_PORT, HostContext
from deploy.ops import Command, Steps
from deploy.render import environment, render
from deploy.steps.files import app_copy, ensure_file

REDIS = ["redis.sh"]


def firewall(h: HostContext) -> Steps:
    """An nftables table of the app's own on a farm's db host: Redis's port open to
    loopback and the app hosts, dropped for every other host (Redis has no per-address
    rules of its own). Loaded before Redis listens on the private address; at boot by a
    unit ordered before redis-server."""
    s, layout = h.settings, h.layout
    clients = [m.address for m in s.inventory.with_role("app")]
    redis = {
        "name": "redis",
        "port": REDIS_PORT,
        "clients": clients,
        "clients4": [a for a in clients if ":" not in a],
        "clients6": [a for a in clients if ":" in a],
    }
    jinja = environment(s.templates_dir)
    rules = render(jinja, "firewall.nft.j2", app_name=s.app_name, unit=layout.firewall_unit,
                   table=layout.firewall_table, services=[redis])  # fmt: skip
    changed = yield from ensure_file(h, layout.firewall_file, rules, "root", "root", "600")
    if h.facts.pid1 == "systemd":
        unit = render(jinja, "firewall.service.j2", app_name=s.app_name, file=layout.firewall_file,
                      table=layout.firewall_table, before=["redis-server.service"])  # fmt: skip
        changed = (yield from ensure_file(h, layout.firewall_unit_file, unit)) or changed
    if changed or h.facts.firewall != "loaded":
        yield Command(h.shell(REDIS, "firewall_load"))
        h.facts.firewall = "loaded"


def config(h: HostContext) -> Steps:
    """fabstack's Redis settings (where it listens), its password and URL (made once),
    included by redis.conf; Redis restarted when they changed, started when down."""
    s, layout = h.settings, h.layout
    address = h.member.address if h.member else ""
    content = render(
        environment(s.templates_dir), "redis.conf.j2", app_name=s.app_name, address=address, port=REDIS_PORT
    )
    changed = yield from ensure_file(h, layout.redis_conf, content, "root", "redis", "640")
    if not (h.facts.redis_included and h.facts.file(layout.redis_auth) and h.facts.file(layout.redis_url_file)):
        yield Command(h.shell(REDIS, "redis_setup"))
        changed = True
    if changed or h.facts.redis != "online":
        yield Command(h.shell(REDIS, "redis_running", "restart" if changed else "start"))
        h.facts.redis = "online"


def app_url(h: HostContext) -> Steps:
    """The app's copy of the URL where the app runs on the Redis host itself."""
    yield from app_copy(h, h.layout.redis_url_file, "REDIS_URL", "redis.sh", "app_redis_url")
