"""Which project files a release holds: what git keeps, never what it ignores.

In a git work tree, git itself answers (`git ls-files --cached --others
--exclude-standard`: tracked files, and untracked ones no ignore rule matches).
Outside git, the project's .gitignore files are read with git's rules (anchored and
floating patterns, `*`, `**`, `?`, character classes, a trailing `/` for directories,
`!` to re-include), plus the `exclude` setting in the same syntax.

A link is never followed on this machine: one that leads out of the project (to
~/.ssh/id_ed25519, /etc/shadow) is refused before any host is touched, and one inside
it is packed as a link, its target rewritten relative and free of links, so the host
resolves it in the release exactly as this machine did in the project (and a link to an
ignored file dangles there: its content never leaves).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Never in a release, whatever git says: bytecode, local databases and logs, virtualenvs.
SKIP_DIRS = {"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".sqlite3", ".log", ".dump")  # .dump: fab db.backup's copies


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern
    negate: bool
    dir_only: bool
    base: str  # the directory of the .gitignore, relative to the project ('' for its root)


def _translate(pattern: str) -> str:
    """A gitignore glob as a regex over '/'-separated relative paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out, i = out + "/.*", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out, i = out + re.escape("["), i + 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def parse_rules(lines: list[str], base: str = "") -> list[Rule]:
    rules = []
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        line = line.rstrip() if not line.endswith("\\ ") else line
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        regex = _translate(line) if anchored else "(?:.*/)?" + _translate(line)
        rules.append(Rule(re.compile(regex + "$"), negate, dir_only, base))
    return rules


def ignored(rel: str, is_dir: bool, rules: list[Rule]) -> bool:
    """Whether rel (relative to the project) is ignored: the last matching rule wins."""
    verdict = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.base and not rel.startswith(rule.base + "/"):
            continue
        target = rel[len(rule.base) + 1 :] if rule.base else rel
        if rule.regex.match(target):
            verdict = not rule.negate
    return verdict


def walk(project: Path, exclude: list[str]) -> list[Path]:
    """Files under project that no .gitignore there (nor exclude) ignores; an ignored
    directory is not entered (as in git, a file in it cannot be re-included)."""
    rules = parse_rules(exclude)
    found: list[Path] = []

    def visit(directory: Path, rel: str) -> None:
        nonlocal rules
        gitignore = directory / ".gitignore"
        if gitignore.is_file():
            rules = rules + parse_rules(gitignore.read_text(errors="replace").splitlines(), rel)
        for entry in sorted(directory.iterdir()):
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir() and not entry.is_symlink()
            if entry.name == ".git" or ignored(entry_rel, is_dir, rules):
                continue
            if is_dir:
                visit(entry, entry_rel)
            elif entry.is_symlink() or entry.is_file():
                found.append(entry)

    visit(project, "")
    return found


def git_files(project: Path) -> list[Path] | None:
    """The files git keeps under project (tracked, or untracked and not ignored), or None
    when project is not in a git work tree (or git is missing)."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(project), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = {project / name for name in listed.decode(errors="surrogateescape").split("\0") if name}
    return sorted(p for p in paths if p.is_symlink() or p.is_file())  # a tracked file deleted here is not there


class LinkOutside(Exception):
    """A link in the project whose target is not in it."""

    def __init__(self, rel: str, target: str) -> None:
        super().__init__(
            f"project file {rel} is a link to {target}, outside the project: a release carries the project's own "
            "files only; copy the file into the project or remove the link"
        )


def link_target(project: Path, path: Path) -> str:
    """What link path (in project) is packed pointing at: its target resolved on this
    machine, relative to the link's directory; LinkOutside when that leaves project.
    git and the walk never enter a linked directory, so the link's own directory is a
    real one, as it is in the release."""
    root = Path(os.path.realpath(project))
    real = Path(os.path.realpath(path))
    rel = path.relative_to(project)
    if real != root and root not in real.parents:
        raise LinkOutside(str(rel), os.readlink(path))
    return os.path.relpath(real, root / rel.parent)


def release_files(project: Path, static_dir: str, exclude: list[str]) -> list[Path]:
    """The project's files a release holds: git's (or .gitignore's) choice, minus the
    exclude setting, bytecode, local databases, and the collected static files."""
    listed = git_files(project)
    if listed is None:
        listed = walk(project, exclude)
    rules = parse_rules(exclude)
    found = []
    for path in listed:
        rel = path.relative_to(project)
        if set(rel.parts) & SKIP_DIRS or rel.parts[0] == static_dir or path.name.endswith(SKIP_SUFFIXES):
            continue
        if rules and any(
            ignored("/".join(rel.parts[: i + 1]), i + 1 < len(rel.parts), rules) for i in range(len(rel.parts))
        ):
            continue
        found.append(path)
    return found


def check_links(project: Path, static_dir: str, exclude: list[str]) -> None:
    """LinkOutside for the first link of a release's files that leads out of project."""
    for path in release_files(project, static_dir, exclude):
        if path.is_symlink():
            link_target(project, path)


@dataclass(frozen=True)
class Provenance:
    """Where a release came from: the commit, whether the work tree had changes, when."""

    commit: str = ""
    dirty: bool = False
    time: str = ""
    subject: str = ""

    def line(self) -> str:
        """One tab-separated line, as releases record it."""
        commit = (self.commit[:12] + ("-dirty" if self.dirty else "")) if self.commit else "-"
        return "\t".join([commit, self.time or "-", self.subject.replace("\t", " ") or "-"])


def provenance(project: Path, exclude: tuple[str, ...] = ()) -> Provenance:
    """The commit the project is at, and whether what a release holds differs from it
    (what exclude leaves out, the settings file among it, makes no release dirty)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        time, _, subject = git("log", "-1", "--format=%cI %s").strip().partition(" ")
        left_out = [f":(exclude){pattern.lstrip('/')}" for pattern in exclude if not pattern.startswith("!")]
        dirty = bool(git("status", "--porcelain", "--", ".", *left_out).strip())
    except (OSError, subprocess.CalledProcessError):
        return Provenance()
    return Provenance(commit, dirty, time, subject)
