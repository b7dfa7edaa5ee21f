"""The controller's cache of builds hosts share: a virtualenv's contents,
built once on one host of a kind and sent, compressed, to the others. Keyed by what
decides the bits (the OS release, the architecture, the Python and the requirements),
so a host of another kind never gets them; kept for the next runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def builds_dir() -> Path:
    """$FABSTACK_CACHE, else $XDG_CACHE_HOME/fabstack, else ~/.cache/fabstack; then builds/."""
    root = os.environ.get("FABSTACK_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "fabstack")
    return Path(root).expanduser() / "builds"


def archive(key: str) -> Path:
    return builds_dir() / f"{key}.tar.gz"


def key(*inputs: str) -> str:
    """A build's key: a hash of what decides its bits (each input one field)."""
    return hashlib.sha256("|".join(inputs).encode()).hexdigest()[:20]
