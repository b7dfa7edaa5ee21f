"""Managed files: compare checksums from the facts, upload only what differs."""

from __future__ import annotations

import hashlib

from deploy.facts import FileFact
from deploy.host import HostContext
from deploy.ops import Changes, Command, Diff, Handler, Notify, Steps, Upload


def ensure_file(
    h: HostContext, path: str, content: str, owner: str = "root", group: str = "root", mode: str = "644",
    secret: bool = False, check: tuple[str, ...] = (),
) -> Changes:  # fmt: skip
    """content at path, atomically, when its checksum, owner or mode differ; returns
    whether it yielded a change. With check (a function of deploy/remote/release.sh and
    its arguments), the new file replaces the old only when the check passes for it.
    A file in the app's own directories is written by the app user, never by root."""
    found = h.facts.file(path)
    if found and found.holds(content, owner, group, mode):
        return False
    note = f"--- {path}\n+++ {path}\n(content not shown; mode {owner}:{group} {mode})"
    yield Diff(path, None if secret else content, exists=found is not None, note=note)
    staged = yield Upload(path.strip("/").replace("/", "_"), content.encode())
    if owner == h.layout.app:
        yield Command(h.shell([], "put_app_file", staged, path, mode))
    else:
        yield Command(
            h.shell(["release.sh"] if check else [], "install_file", staged, path, owner, group, mode, *check)
        )
    h.facts.files[path] = FileFact(hashlib.sha256(content.encode()).hexdigest(), owner, group, mode)
    return True


def app_copy(h: HostContext, root_copy: str, secret: str, script: str, function: str) -> Steps:
    """The app's copy of a file root keeps (the database password, Redis's URL) where the
    app runs on the host that made it: written by the app user, the app reloaded."""
    original, copy = h.facts.file(root_copy), h.facts.file(h.layout.secret(secret))
    app = h.layout.app
    if original and copy and original.sha256 == copy.sha256 and copy.has_mode(app, app, "600"):
        return
    yield Command(h.shell([script], function, h.layout.secret(secret)))
    yield Notify(Handler.RELOAD_APP)
