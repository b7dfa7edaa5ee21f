"""What a release holds (no hosts): what git keeps, never what it ignores; outside git,
the same rules from .gitignore files and the exclude setting."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from deploy.ignore import ignored, parse_rules
from deploy.release import RECORD, Release


def names(release: Release) -> list[str]:
    return [str(p.relative_to(release.project)) for p in release.files()]


def make(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


PROJECT = {
    "manage.py": "",
    "app/views.py": "",
    "app/__pycache__/views.cpython-311.pyc": "",
    "db.sqlite3": "",
    ".env": "SECRET=1",
    "local_settings.py": "X = 1",
    "build/out.js": "",
    "docs/keep.md": "",
    "docs/drafts/a.md": "",
    "staticfiles/collected.css": "",
    ".gitignore": ".env\nlocal_settings.py\n/build/\ndocs/*\n!docs/keep.md\n",
    "app/.gitignore": "*.tmp\n",
    "app/scratch.tmp": "",
}
KEPT = [".gitignore", "app/.gitignore", "app/views.py", "docs/keep.md", "manage.py"]


def test_outside_git_the_gitignore_rules_decide(tmp_path):
    release = Release(make(tmp_path / "p", PROJECT), "staticfiles")
    assert names(release) == KEPT


def test_in_git_git_decides_tracked_and_untracked_but_never_ignored(tmp_path):
    root = make(tmp_path / "p", PROJECT)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "manage.py", ".gitignore"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=root, check=True)
    (root / "new.py").write_text("")  # untracked, not ignored: kept
    release = Release(root, "staticfiles")
    assert names(release) == sorted([*KEPT, "new.py"])
    assert release.provenance.commit and release.provenance.dirty and release.provenance.subject == "first"


def test_the_exclude_setting_and_the_id(tmp_path):
    root = make(tmp_path / "p", PROJECT)
    release = Release(root, "staticfiles", exclude=("docs/", "*.md"))
    assert names(release) == [".gitignore", "app/.gitignore", "app/views.py", "manage.py"]
    generated = Release(root, "staticfiles", generated=(("fabstack_settings.py", "X = 1\n"),))
    assert generated.id != Release(root, "staticfiles").id  # a generated file is part of the release
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(generated.archive))) as tar:
        members = tar.getnames()
    assert "fabstack_settings.py" in members and RECORD in members and ".env" not in members


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.log", "a/b/x.log", False, True),
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),
        ("build/", "src/build", True, True),
        ("build/", "build", False, False),  # a file named build: not a directory pattern's
        ("docs/**/*.md", "docs/a/b/c.md", False, True),
        ("**/cache", "x/y/cache", True, True),
        ("a?c", "abc", False, True),
        ("[ab].txt", "b.txt", False, True),
        ("[!ab].txt", "b.txt", False, False),
    ],
)
def test_gitignore_patterns(pattern, path, is_dir, expected):
    assert ignored(path, is_dir, parse_rules([pattern])) is expected


def test_the_last_matching_rule_wins():
    rules = parse_rules(["*.md", "!README.md"])
    assert ignored("x.md", False, rules) and not ignored("README.md", False, rules)
