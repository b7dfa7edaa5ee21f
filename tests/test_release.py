"""What a release holds (no hosts): what git keeps, never what it ignores; outside git,
the same rules from .gitignore files and the exclude setting."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from deploy import settings as s
from deploy.ignore import LinkOutside, check_links, ignored, parse_rules
from deploy.release import MANIFEST, RECORD, Release, release_of


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


def members(release: Release) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(release.archive))) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("in_git", [False, True], ids=["gitignore", "git"])
@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("static/notes.txt", "OUTSIDE"),  # an absolute link to a file of the controller's
        ("leaked.txt", "../outside/secret"),  # a relative one climbing out
        ("app/conf", "../../outside"),  # a link to a directory out of the project
        ("dangling", "/nonexistent/key"),  # pointing out, at nothing (yet)
    ],
)
def test_a_link_out_of_the_project_is_refused_naming_it_and_its_target(tmp_path, in_git, link, target):
    outside = make(tmp_path / "outside", {"secret": "the controller's private key\n"})
    root = make(tmp_path / "p", {"manage.py": "", "app/views.py": ""})
    target = target.replace("OUTSIDE", str(outside / "secret"))
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(target)
    if in_git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    with pytest.raises(LinkOutside) as refused:
        Release(root, "staticfiles").archive  # noqa: B018 - packing is what is refused
    assert str(refused.value).startswith(f"project file {link} is a link to {target}, outside the project")
    with pytest.raises(LinkOutside):
        check_links(root, "staticfiles", [])


def test_a_link_inside_the_project_is_packed_as_a_relative_link_never_read(tmp_path):
    root = make(tmp_path / "p", {"manage.py": "", "app/views.py": "X = 1\n", "assets/logo.txt": "logo"})
    (root / "app" / "same.py").symlink_to("views.py")
    (root / "app" / "absolute.py").symlink_to(root / "app" / "views.py")  # absolute, but inside
    (root / "shared").symlink_to("assets")  # a directory
    (root / "loop").symlink_to("loop")
    check_links(root, "staticfiles", [])
    packed = members(Release(root, "staticfiles"))
    assert packed["app/same.py"].issym() and packed["app/same.py"].linkname == "views.py"
    assert packed["app/absolute.py"].issym() and packed["app/absolute.py"].linkname == "views.py"
    assert packed["shared"].issym() and packed["shared"].linkname == "assets"
    assert packed["loop"].issym() and packed["loop"].linkname == "loop"
    assert packed["assets/logo.txt"].isfile()
    renamed = root / "app" / "same.py"
    renamed.unlink()
    renamed.symlink_to("../assets/logo.txt")
    assert members(Release(root, "staticfiles"))["app/same.py"].linkname == "../assets/logo.txt"
    assert Release(root, "staticfiles").id != Release(root, "staticfiles", exclude=("app/same.py",)).id


def test_the_settings_file_in_the_project_is_never_shipped_nor_makes_the_release_dirty(tmp_path, monkeypatch):
    root = make(
        tmp_path / "p", {"manage.py": "", "mysite/__init__.py": "", "mysite/wsgi.py": "", "mysite/settings.py": ""}
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=root, check=True)
    (root / "fabstack.yaml").write_text(f"project_path: {root}\nwsgi_module: mysite.wsgi:application\n")  # untracked
    monkeypatch.chdir(root)
    release = release_of(s.load("fabstack.yaml"))
    assert "fabstack.yaml" not in names(release) and not release.provenance.dirty
    (root / "new.py").write_text("")  # anything else untracked still counts
    assert release_of(s.load("fabstack.yaml")).provenance.dirty


def unpacked(archive: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="tar")
    return into


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and link under root: its bytes (or link target) and mode."""
    return {
        str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.read_text(), p.lstat().st_mode)
        for p in sorted(root.rglob("*"))
        if not p.is_dir() or p.is_symlink()
    }


def test_a_delta_on_its_base_makes_the_release_byte_for_byte(tmp_path):
    """What the host does with a delta (deploy/remote/release.sh: the base's files, less
    the names to remove, then the delta's archive) gives exactly the full release."""
    old = make(
        tmp_path / "old",
        {"manage.py": "m", "app/views.py": "v1", "app/gone.py": "g", "app/x.css": "c", "old/sub/a.py": "a"},
    )
    base = Release(old, "static")
    shutil.copytree(old, tmp_path / "new", symlinks=True)
    new_project = make(tmp_path / "new", {"app/views.py": "v2", "app/added.py": "a"})
    (new_project / "app" / "gone.py").unlink()
    shutil.rmtree(new_project / "old")  # another project deployed as the same app
    (new_project / "app" / "link").symlink_to("views.py")
    new = Release(new_project, "static")
    delta = new.delta(base.id, json.dumps(base.manifest), "3.11.2")
    assert delta is not None and delta.base == base.id
    removed = delta.remove.decode().split("\0")
    assert {"app/views.py", "app/gone.py", "app/__pycache__/views.cpython-311.pyc", RECORD, MANIFEST} <= set(removed)
    assert "old" in removed and "old/sub" not in removed  # the directory goes whole
    assert "manage.py" not in removed and "app/x.css" not in removed  # unchanged: kept as links
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(delta.archive))) as tar:
        shipped = tar.getnames()
    assert sorted(shipped) == sorted(["app/added.py", "app/link", "app/views.py", RECORD, MANIFEST])
    made = unpacked(base.archive, tmp_path / "made")
    (made / "app" / "__pycache__").mkdir()
    (made / "app" / "__pycache__" / "views.cpython-311.pyc").write_text("stale")
    (made / "old" / "sub" / "__pycache__").mkdir()  # compiled on the host: in no manifest
    for name in removed:  # rm -rf
        if (made / name).is_dir() and not (made / name).is_symlink():
            shutil.rmtree(made / name)
        elif (made / name).is_file() or (made / name).is_symlink():
            (made / name).unlink()
    unpacked(gzip.decompress(delta.archive), made)
    shutil.rmtree(made / "app" / "__pycache__")  # emptied: the host's compileall fills it again
    assert tree(made) == tree(unpacked(new.archive, tmp_path / "full"))


def test_no_delta_without_a_manifest_or_when_a_file_becomes_a_directory(tmp_path):
    old = Release(make(tmp_path / "old", {"manage.py": "m", "app": "a file"}), "static")
    new = Release(make(tmp_path / "new", {"manage.py": "m", "app/views.py": "v"}), "static")
    assert new.delta(old.id, json.dumps(old.manifest), "3.11.2") is None
    assert old.delta(new.id, json.dumps(new.manifest), "3.11.2") is None
    assert new.delta(old.id, "", "3.11.2") is None and new.delta(old.id, "not json", "3.11.2") is None
