"""The systemd journal's size on every host: capped, so a chatty app or a crash loop
never fills the disk the releases, uploads and database need (journald's own default
is a tenth of the file system, up to 4 GB)."""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Command, Steps, step
from deploy.render import environment, render
from deploy.steps.files import ensure_file

DROPIN = "/etc/systemd/journald.conf.d/50-fabstack.conf"


@step("journal size", files=(DROPIN,), upkeep=True)
def size_cap(h: HostContext) -> Steps:
    """journald keeps at most journal_max_use on disk (SystemMaxUse), restarted to read
    a new cap; a host without systemd has no journal: nothing to do there."""
    if h.facts.pid1 != "systemd":
        return
    cap = h.settings.journal_max_use.upper()  # journald's units are K, M, G
    content = render(environment(h.settings.templates_dir), "journald.conf.j2", max_use=cap)
    if (yield from ensure_file(h, DROPIN, content)):
        yield Command(h.shell(["journald.sh"], "restart_journald"))
