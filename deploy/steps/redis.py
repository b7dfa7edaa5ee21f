"""Redis (redis: true) on the db host or the single host: the distribution's server,
listening on loopback and the host's private address, with a password made there (on a
farm behind fabstack's firewall, deploy/steps/firewall.py)."""

from __future__ import annotations

from deploy.host import REDIS_PORT, HostContext
from deploy.ops import Command, Steps, step
from deploy.render import environment, render
from deploy.steps.files import app_copy, ensure_file

REDIS = ["redis.sh"]


@step("redis")
def config(h: HostContext) -> Steps:
    """fabstack's Redis settings (where it listens), its password and URL (made once),
    included by redis.conf; Redis restarted when they changed, started when down."""
    s, layout = h.settings, h.layout
    address = h.member.address if h.member else ""
    content = render(
        environment(s.templates_dir), "redis.conf.j2", app_name=s.app_name, address=address, port=REDIS_PORT
    )
    changed = yield from ensure_file(h, layout.redis_conf, content, "root", "redis", "640")
    f = h.facts
    if not (f.redis_included and f.redis_acl and f.file(layout.redis_auth) and f.file(layout.redis_url_file)):
        yield Command(h.shell(REDIS, "redis_setup"))
        changed = True
    if changed or h.facts.redis != "online":
        yield Command(h.shell(REDIS, "redis_running", "restart" if changed else "start"))
        h.facts.redis = "online"


@step("redis url")
def app_url(h: HostContext) -> Steps:
    """The app's copy of the URL where the app runs on the Redis host itself."""
    yield from app_copy(h, h.layout.redis_url_file, "REDIS_URL", "redis.sh", "app_redis_url")


@step("redis user removed")
def removed(h: HostContext) -> Steps:
    """fab remove on the Redis host: the app's settings out of redis.conf; the other
    apps' Redis runs on (restarted without them)."""
    if h.facts.redis_included:
        yield Command(h.shell(REDIS, "redis_remove"))
