"""A release: the project packed as one deterministic archive, named by its content.

The same code always gives the same archive and id, so a deploy of unchanged code
finds its release already on the host and changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

SKIP_DIRS = {"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", "media", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".sqlite3", ".log")


@dataclass(frozen=True)
class Release:
    project: Path
    static_dir: str

    def files(self) -> list[Path]:
        found = []
        for path in sorted(self.project.rglob("*")):
            rel = path.relative_to(self.project)
            if set(rel.parts) & SKIP_DIRS or rel.parts[0] == self.static_dir:
                continue
            if path.is_file() and not path.name.endswith(SKIP_SUFFIXES):
                found.append(path)
        return found

    @cached_property
    def archive(self) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in self.files():
                info = tarfile.TarInfo(str(path.relative_to(self.project)))
                data = path.read_bytes()
                info.size, info.mode, info.mtime = len(data), 0o755 if path.stat().st_mode & 0o100 else 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue(), mtime=0)

    @cached_property
    def id(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()[:12]

    @cached_property
    def requirements(self) -> str:
        path = self.project / "requirements.txt"
        text = path.read_text() if path.is_file() else ""
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return "\n".join(lines) + "\n" if lines else ""

    @property
    def requirements_marker(self) -> str:
        return hashlib.sha256(self.requirements.encode()).hexdigest()[:16]
