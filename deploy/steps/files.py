"""Managed files: compare checksums from the facts, upload only what differs."""

from __future__ import annotations

import difflib
import hashlib
import shlex
from collections.abc import Callable

from deploy.layout import Layout
from deploy.runner import HostRun


def file_state(h: HostRun, path: str) -> tuple[str, str]:
    """(sha256, 'owner:group mode') of path as the facts saw it; ('', '') if missing."""
    sha, _, meta = h.facts.get(f"file.{path}", "").partition(" ")
    return sha, meta


def file_matches(
    h: HostRun, path: str, content: str, owner: str = "root", group: str = "root", mode: str = "644"
) -> bool:
    """The facts say path already holds content with this owner and mode."""
    sha, meta = file_state(h, path)
    return sha == hashlib.sha256(content.encode()).hexdigest() and meta == f"{owner}:{group} {mode}"


def ensure_file(
    h: HostRun, path: str, content: str, owner: str = "root", group: str = "root", mode: str = "644",
    secret: bool = False, check: Callable[[str], str] | None = None,
) -> bool:  # fmt: skip
    """Write content to path atomically when its checksum, owner or mode differ. With
    check (shell for the new file's path), the new file replaces the old only when
    check passes; else it is removed and the step fails with what check printed."""
    if file_matches(h, path, content, owner, group, mode):
        return False
    if h.wants_diffs:  # never a secret's content: its diff says only that it changed
        diff = "" if secret else unified_diff(h, path, content, bool(file_state(h, path)[0]))
        h.show_diff(diff or f"--- {path}\n+++ {path}\n(content not shown; mode {owner}:{group} {mode})\n")
    if h.dry_run:
        return True
    staged = h.stage(path.strip("/").replace("/", "_"), content.encode())
    q = shlex.quote
    layout = Layout.of(h.settings)
    if owner == layout.app:  # in the app's own directory: written by the app, never by root
        h.change(f"{_owned_by_app(h, path)}{layout.app_file_call('put_file', path, mode)} < {q(staged)}")
    else:
        new = f"{q(path)}.fabstack-new"
        checked = f"{{ {check(new)}; }} >&2 || {{ rm -f {new}; exit 1; }}; " if check else ""
        h.change(f"install -o {owner} -g {group} -m {mode} {staged} {new} && {checked}mv -f {new} {q(path)}")
    return True


def _owned_by_app(h: HostRun, path: str) -> str:
    """`chown -h` (never follows a link) of an existing file in the app's directory that
    someone else owns, so the app can replace it; '' when nothing to do."""
    app = Layout.of(h.settings).app
    owner = file_state(h, path)[1].split(":")[0]
    return f"chown -h {app}:{app} {shlex.quote(path)} && " if owner and owner != app else ""


def unified_diff(h: HostRun, path: str, new: str, exists: bool) -> str:
    """The diff a dry run shows: the host's file (read only now) against the new text."""
    old = h.read(path) if exists else ""
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (host)", f"{path} (new)")
    return "".join(lines)
