"""A release: the project packed as one deterministic archive, named by its content.

The same code always gives the same archive and id, so a deploy of unchanged code
finds its release already on the host and changes nothing. The archive holds what git
keeps of the project (deploy/ignore.py), never an ignored file (.env, local settings),
plus the files fabstack generates for it (its production settings module) and a
record of the commit it came from (not part of the id).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from deploy.ignore import Provenance, git_files, parse_rules, provenance, walk
from deploy.ignore import ignored as is_ignored
from deploy.render import environment, render
from deploy.settings import GENERATED_SETTINGS, Settings

# Never in a release, whatever git says: bytecode, local databases and logs, virtualenvs.
SKIP_DIRS = {"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".sqlite3", ".log", ".dump")  # .dump: fab db.backup's copies
RECORD = ".fabstack-release"  # in each release: its provenance, one tab-separated line


@dataclass(frozen=True)
class Release:
    project: Path
    static_dir: str
    exclude: tuple[str, ...] = ()
    generated: tuple[tuple[str, str], ...] = field(default=())  # (name, text) files fabstack adds

    def files(self) -> list[Path]:
        """The project's files a release holds: git's (or .gitignore's) choice, minus the
        exclude setting, bytecode, local databases, and the collected static files."""
        listed = git_files(self.project)
        if listed is None:
            listed = walk(self.project, list(self.exclude))
        rules = parse_rules(list(self.exclude))
        found = []
        for path in listed:
            rel = path.relative_to(self.project)
            if set(rel.parts) & SKIP_DIRS or rel.parts[0] == self.static_dir or path.name.endswith(SKIP_SUFFIXES):
                continue
            if rules and any(
                is_ignored("/".join(rel.parts[: i + 1]), i + 1 < len(rel.parts), rules) for i in range(len(rel.parts))
            ):
                continue
            found.append(path)
        return found

    def _tar(self, with_record: bool) -> bytes:
        raw = io.BytesIO()
        entries = [(str(p.relative_to(self.project)), p.read_bytes(), p.stat().st_mode & 0o100) for p in self.files()]
        entries += [(name, text.encode(), 0) for name, text in self.generated]
        if with_record:
            entries.append((RECORD, (self.provenance.line() + "\n").encode(), 0))
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data, executable in sorted(entries):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o755 if executable else 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    @cached_property
    def provenance(self) -> Provenance:
        return provenance(self.project)

    @cached_property
    def archive(self) -> bytes:
        """What is uploaded: the files, the generated ones, and the provenance record."""
        return gzip.compress(self._tar(with_record=True), mtime=0)

    @cached_property
    def _content(self) -> bytes:
        return self._tar(with_record=False)

    @cached_property
    def id(self) -> str:
        """Named by content only: the same code from another commit is the same release."""
        return hashlib.sha256(self._content).hexdigest()[:12]

    @property
    def unpacked_bytes(self) -> int:
        """About what the release takes on a host once unpacked (its tar's size)."""
        return len(self._content)

    @cached_property
    def requirements(self) -> str:
        path = self.project / "requirements.txt"
        text = path.read_text() if path.is_file() else ""
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return "\n".join(lines) + "\n" if lines else ""

    @property
    def requirements_marker(self) -> str:
        return hashlib.sha256(self.requirements.encode()).hexdigest()[:16]


def release_of(settings: Settings) -> Release:
    """The release a deploy with these settings uploads: the project, and (unless
    production_settings is off) the settings module fabstack generates for it."""
    generated = ()
    if settings.production_settings:
        text = render(
            environment(settings.templates_dir),
            "fabstack_settings.py.j2",
            project_settings=settings.project_settings,
            static_dir=settings.static_dir,
        )
        generated = ((f"{GENERATED_SETTINGS}.py", text),)
    return Release(settings.project, settings.static_dir, tuple(settings.exclude), generated)
