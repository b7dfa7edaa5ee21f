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
import json
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from deploy.ignore import Provenance, link_target, provenance, release_files
from deploy.render import environment, render
from deploy.settings import GENERATED_SETTINGS, Settings, project
from deploy.settings.project import Requirements

RECORD = ".fabstack-release"  # in each release: its provenance, one tab-separated line
MANIFEST = ".fabstack-files"  # in each release: each file's sha256, mode and link target (JSON)

Entry = tuple[str, bytes, int, str]  # name, data, mode, link target


@dataclass(frozen=True)
class Delta:
    """What makes a release on a host from one it has (its base): an archive of the
    entries that differ, and the names to remove from the base's links first (NUL-separated)."""

    base: str
    archive: bytes
    remove: bytes


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

    @cached_property
    def _entries(self) -> list[Entry]:
        """The files with their bytes and executable bit, links as links (never followed:
        LinkOutside for one leading out of the project), and the generated files; sorted."""
        entries: list[Entry] = []
        for path in self.files():
            name = str(path.relative_to(self.project))
            if path.is_symlink():
                entries.append((name, b"", 0o777, link_target(self.project, path)))
            else:
                entries.append((name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o100 else 0o644, ""))
        entries += [(name, text.encode(), 0o644, "") for name, text in self.generated]
        return sorted(entries)

    def _records(self) -> list[Entry]:
        """What each upload adds to the content: the provenance record and the manifest."""
        return [
            (RECORD, (self.provenance.line() + "\n").encode(), 0o644, ""),
            (MANIFEST, json.dumps(self.manifest, sort_keys=True).encode(), 0o644, ""),
        ]

    @staticmethod
    def _tar(entries: list[Entry]) -> bytes:
        """A tar of entries, mtimes 0: the same entries always give the same bytes."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data, mode, target in entries:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                if target:
                    info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    @cached_property
    def manifest(self) -> dict[str, str]:
        """Each entry's name and `SHA256 MODE LINK`: what a later release compares."""
        return {
            name: f"{hashlib.sha256(data).hexdigest()} {mode:o} {target}" for name, data, mode, target in self._entries
        }

    def delta(self, base: str, base_manifest: str, python: str) -> Delta | None:
        """The delta from a release the host has (base, with its manifest as read
        there); None when a full archive is needed: no manifest, or a name that is a
        file in one release and a directory in the other. python (the host's, 3.11.2)
        names the bytecode files of a changed or removed module, so none is reused; a
        directory no name of the new release is in goes whole, with the bytecode the
        host compiled there."""
        try:
            old = json.loads(base_manifest)
        except ValueError:
            return None
        if not isinstance(old, dict) or not old:
            return None
        new = self.manifest
        if _dirs(new) & old.keys() or _dirs(old) & new.keys():
            return None
        changed = [name for name in new if old.get(name) != new[name]]
        gone = [name for name in old if name not in new]
        kept_dirs = _dirs(new) | {""}  # "": the release's own top
        gone_dirs = sorted(d for d in _dirs(old) - kept_dirs if d.rpartition("/")[0] in kept_dirs)
        tag = "cpython-" + "".join(python.split(".")[:2])
        bytecode = [
            f"{name.rpartition('/')[0]}/__pycache__/{Path(name).stem}.{tag}{opt}.pyc".lstrip("/")
            for name in changed + gone
            if name.endswith(".py")
            for opt in ("", ".opt-1", ".opt-2")
        ]
        remove = [*changed, *gone, *gone_dirs, *bytecode, RECORD, MANIFEST]
        wanted = set(changed)
        archive = self._tar([e for e in self._entries if e[0] in wanted] + self._records())
        return Delta(base, gzip.compress(archive, mtime=0), "\0".join(remove).encode())

    @cached_property
    def provenance(self) -> Provenance:
        return provenance(self.project, self.exclude)

    @cached_property
    def archive(self) -> bytes:
        """What is uploaded: the files, the generated ones, and the provenance record."""
        return gzip.compress(self._tar(self._entries + self._records()), mtime=0)

    @cached_property
    def _content(self) -> bytes:
        return self._tar(self._entries)

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


def _dirs(manifest: dict[str, str]) -> set[str]:
    """Every directory above a name of manifest."""
    return {name.rsplit("/", i)[0] for name in manifest for i in range(1, name.count("/") + 1)}


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
