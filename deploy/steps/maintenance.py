"""Maintenance mode on the hosts that face the clients (the lbs, or the single host):
while the page is there, their nginx answers 503 with it (and Retry-After), except for
the health check, the ACME challenge and the maintenance_allow addresses. The page is
the switch: nginx looks for it at each request, so the site's config stays as it is, a
deploy during maintenance keeps it on, and `off` is one file removed."""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Command, Diff, Steps, Upload, step
from deploy.render import environment, render

MAINTENANCE = ["maintenance.sh"]


@step("maintenance page")
def page(h: HostContext, on: bool, message: str = "") -> Steps:
    """The page in place with message (on), or gone (off)."""
    path = h.layout.maintenance_page
    found = h.facts.file(path)
    if not on:
        if found:
            yield Diff(path, "", exists=True, note="(removed: the site serves again)")
            yield Command(h.shell(MAINTENANCE, "maintenance_off"))
            h.facts.files.pop(path, None)
        return
    content = render(environment(h.settings.templates_dir), "maintenance.html.j2", message=message)
    if found and found.holds(content, "root", "root", "644"):
        return
    yield Diff(path, content, exists=found is not None)
    staged = yield Upload("maintenance.html", content.encode())
    yield Command(h.shell(MAINTENANCE, "maintenance_on", staged))
