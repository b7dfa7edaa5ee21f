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

from deploy.ignore import Provenance, link_target, provenance, release_files
from deploy.render import environment, render
from deploy.settings import GENERATED_SETTINGS, Settings, project
from deploy.settings.project import Requirements

RECORD = ".fabstack-release"  # in each release: its provenance, one tab-separated line


@dataclass(frozen=True)
class Release:
    project: Path
    static_dir: str
    exclude: tuple[str, ...] = ()
    generated: tuple[tuple[str, str], ...] = field(default=())  # (name, text) files fabstack adds
    requirements_file: str = ""  # the requirements setting (empty: requirements.txt, else pyproject.toml)

    def files(self) -> list[Path]:
        """The project's files a release holds (deploy/ignore.py says which)."""
        return release_files(self.project, self.static_dir, list(self.exclude))

    def _tar(self, with_record: bool) -> bytes:
        """The tar: files with their bytes and executable bit, links as links (never
        followed: LinkOutside for one leading out of the project), mtimes 0."""
        entries: list[tuple[str, bytes, int, str]] = []  # name, data, mode, link target
        for path in self.files():
            name = str(path.relative_to(self.project))
            if path.is_symlink():
                entries.append((name, b"", 0o777, link_target(self.project, path)))
            else:
                entries.append((name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o100 else 0o644, ""))
        entries += [(name, text.encode(), 0o644, "") for name, text in self.generated]
        if with_record:
            entries.append((RECORD, (self.provenance.line() + "\n").encode(), 0o644, ""))
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data, mode, target in sorted(entries):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                if target:
                    info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    @cached_property
    def provenance(self) -> Provenance:
        return provenance(self.project, self.exclude)

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
    def needs(self) -> Requirements:
        """The project's requirements, its includes inlined, its constraints apart."""
        return project.requirements(self.project, self.requirements_file)

    @property
    def requirements(self) -> str:
        return self.needs.text

    @property
    def requirements_key(self) -> str:
        """What the built requirements depend on: every line of every file included."""
        constraints = self.needs.constraints_text
        archives = "".join(
            f"{name} {hashlib.sha256(self.archive_bytes(name)).hexdigest()}\n" for name in self.needs.files
        )
        return self.requirements + ("-c\n" + constraints if constraints else "") + archives

    def archive_bytes(self, name: str) -> bytes:
        """A requirement that is an archive in the project (a vendored sdist or wheel)."""
        return (self.project / name).read_bytes()

    @property
    def requirements_marker(self) -> str:
        return hashlib.sha256(self.requirements_key.encode()).hexdigest()[:16]


def release_of(settings: Settings) -> Release:
    """The release a deploy with these settings uploads: the project, and (unless
    production_settings is off) the settings module fabstack generates for it."""
    generated: tuple[tuple[str, str], ...] = ()
    if settings.production_settings:
        text = render(
            environment(settings.templates_dir),
            "fabstack_settings.py.j2",
            project_settings=settings.project_settings,
            static_dir=settings.static_dir,
        )
        generated = ((f"{GENERATED_SETTINGS}.py", text),)
    exclude = (*settings.exclude, *filter(None, [settings.settings_file]))  # the settings file: never shipped
    return Release(settings.project, settings.static_dir, exclude, generated, settings.requirements)
