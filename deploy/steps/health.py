"""Health checks: the app answers through this host's own nginx. They change nothing
but root's record of the release that passed."""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Check, Command, Steps, step


@step("answers its health check")
def answers(h: HostContext) -> Steps:
    """The app answers its health check through this host's nginx (changes nothing)."""
    yield Check(h.shell(["gunicorn.sh"], "health_check", f"127.0.0.1:{h.site_port}"))


@step("health check")
def passes(h: HostContext, release_id: str) -> Steps:
    """The site answers: checked after every change, and on every run until the current
    release has passed once (a run cut off before its check, or a first release that
    failed with nothing to return to, is checked again, never taken on trust). The host
    records the release that passed, in a root-owned file."""
    if h.facts.passed == release_id:
        yield from answers(h)
        return
    yield Command(h.shell(["gunicorn.sh"], "health_passed", f"127.0.0.1:{h.site_port}", release_id))
    h.facts.passed = release_id


# after a rollback: the release it went back to must pass too
passes_before = step("health check of the release before")(passes.action)
