"""A farm's shared media (shared_media, more than one app host): the app's GlusterFS
volume, a copy on every app host, FUSE-mounted at its media directory on each. Made in
three parts, because each needs the one before it on every app host: glusterd running
on each (provision's app phase); the pool and the volume, from the first app host; the
mount on each. A host where the volume is not mounted answers 503 (its nginx site
checks the volume's marker), so the load balancers take it out rather than serve an
empty media directory. docs/decisions.md says why GlusterFS and how it is set."""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Command, Handler, Notify, Steps, step
from deploy.render import environment, render
from deploy.steps.files import ensure_file

MEDIA = ["media.sh"]
STARTED = "1"  # the volume's status in glusterd's record: started


@step("glusterd")
def glusterd(h: HostContext) -> Steps:
    """glusterd running here (enabled at boot), with the brick's directory (in root's own)."""
    f = h.facts
    if f.glusterd == "online" and f.media_brick:
        return
    yield Command(h.shell(MEDIA, "media_glusterd"))
    f.glusterd, f.media_brick = "online", "root:root 755"


def volume_complete(h: HostContext) -> bool:
    """The volume is started, with a brick on every app host, and only they may connect."""
    f, peers = h.facts, h.settings.inventory.addresses("app")
    return f.media_volume == STARTED and set(f.media_bricks) == set(peers) and f.media_allow == ",".join(peers)


@step("media volume")
def volume(h: HostContext) -> Steps:
    """(The first app host.) Every app host in GlusterFS's pool; the app's volume made,
    a brick added for a new app host, its options set, started."""
    if volume_complete(h):
        return
    yield Command(h.shell(MEDIA, "media_volume"))
    peers = h.settings.inventory.addresses("app")
    h.facts.media_volume, h.facts.media_bricks, h.facts.media_allow = STARTED, peers, ",".join(peers)


def mount_unit(h: HostContext) -> str:
    layout = h.layout
    return render(
        environment(h.settings.templates_dir), "media.mount.j2", app_name=h.settings.app_name, volume=layout.volume,
        where=layout.media, servers=h.settings.inventory.addresses("app"), before=layout.unit,
    )  # fmt: skip


@step("media mounted")
def mounted(h: HostContext) -> Steps:
    """The volume at the media directory (a mount unit where systemd runs, so it comes
    back at boot), the volume's root the app's, its marker there; nginx told, since its
    site checks the marker. Nothing before the volume has a brick on every app host (a
    farm's first provision, a new app host: mounted in a phase of their own)."""
    f, layout = h.facts, h.layout
    if not volume_complete(h):  # the volume's own phase first: made, or a brick added for this host
        return
    unit_changed = False
    if f.pid1 == "systemd":
        unit_changed = yield from ensure_file(h, layout.media_unit_file, mount_unit(h))
    if f.media_mount == "fuse.glusterfs" and f.media_marker and not unit_changed:
        return
    yield Command(h.shell(MEDIA, "media_mount"))
    f.media_mount, f.media_marker = "fuse.glusterfs", True
    yield Notify(Handler.RELOAD_NGINX)


@step("media unmounted")
def unmounted(h: HostContext, purge: bool) -> Steps:
    """fab remove: the volume off the media directory before anything of the app's goes
    (a purge deletes the directory, which must not be the volume's); with purge, the
    first app host deletes the volume."""
    f = h.facts
    if f.media_mount or f.file(h.layout.media_unit_file) or (purge and f.media_brick):
        yield Command(h.shell(MEDIA, "media_unmount", "yes" if purge else "no"))
    if purge and h.first_app_host and h.facts.media_volume:
        yield Command(h.shell(MEDIA, "media_volume_deleted"))


def guard(h: HostContext) -> str:
    """The marker the app's nginx site checks ('' when this host's media is its own)."""
    return h.layout.media_marker if h.shares_media and h.facts.media_volume else ""
