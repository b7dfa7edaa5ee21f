"""Managed files: compare checksums from the facts, upload only what differs."""

from __future__ import annotations

import difflib
import hashlib
import shlex

from deploy.runner import HostRun


def file_state(h: HostRun, path: str) -> tuple[str, str]:
    """(sha256, 'owner:group mode') of path as the facts saw it; ('', '') if missing."""
    sha, _, meta = h.facts.get(f"file.{path}", "").partition(" ")
    return sha, meta


def ensure_file(
    h: HostRun, path: str, content: str, owner: str = "root", group: str = "root", mode: str = "644",
    secret: bool = False,
) -> bool:  # fmt: skip
    """Write content to path atomically when its checksum, owner or mode differ."""
    data = content.encode()
    sha, meta = file_state(h, path)
    if sha == hashlib.sha256(data).hexdigest() and meta == f"{owner}:{group} {mode}":
        return False
    diff = "" if secret else unified_diff(h, path, content, bool(sha))
    if h.dry_run:
        h.change("", diff=diff or f"--- {path}\n+++ {path}\n(mode {owner}:{group} {mode})\n")
        return True
    staged = h.stage(path.strip("/").replace("/", "_"), data)
    q = shlex.quote
    h.change(
        f"install -o {owner} -g {group} -m {mode} {staged} {q(path)}.fabstack-new && mv -f {q(path)}.fabstack-new {q(path)}"
    )
    return True


def unified_diff(h: HostRun, path: str, new: str, exists: bool) -> str:
    if not h.dry_run:
        return ""
    old = h.read(path) if exists else ""
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (host)", f"{path} (new)")
    return "".join(lines)
