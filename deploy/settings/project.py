"""What a Django project says about itself, read from its files as its authors wrote
them: the WSGI module and the settings module (startproject's `mysite/settings.py`, a
settings package `proj/settings/{base,dev,production}.py`, cookiecutter-django's
`config/settings/production.py` named by `config/wsgi.py`)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

# DJANGO_SETTINGS_MODULE's default as manage.py, wsgi.py and asgi.py set it
DEFAULT_RE = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z_][\w.]*)['"]""")
DEVELOPMENT = ("dev", "development", "local")  # a module for a developer's machine
PRODUCTION = ("production", "prod")  # its sibling for servers


@dataclass(frozen=True)
class Found:
    wsgi_module: str  # '' when nothing says
    settings_module: str  # '' when nothing says
    note: str = ""  # one line, when fabstack chose among the project's modules


def module_exists(project: Path, module: str) -> bool:
    """module (dotted) is a file or a package of the project."""
    path = project.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def default_of(path: Path) -> str:
    """The DJANGO_SETTINGS_MODULE default a file sets ('' when it sets none)."""
    try:
        found = DEFAULT_RE.search(path.read_text(errors="replace"))
    except OSError:
        return ""
    return found[1] if found else ""


def find(project: Path, wsgi_module: str = "", settings_module: str = "") -> Found:
    """The WSGI module and settings module to serve, each from its setting when given,
    else from the project's files: the WSGI module is PACKAGE.wsgi:application, PACKAGE
    the package of the settings module manage.py names (or the one package with a
    wsgi.py); the settings module is the default the WSGI file sets (what its authors
    serve with), else manage.py's; a development module (dev, local) with a production
    sibling gives the sibling, and says so."""
    manage = default_of(project / "manage.py")
    if not wsgi_module:
        wsgi_module = _wsgi_for(project, settings_module or manage)
    if settings_module:
        return Found(wsgi_module, settings_module)
    wsgi_file = project.joinpath(*wsgi_module.split(":")[0].split(".")).with_suffix(".py") if wsgi_module else None
    default = (default_of(wsgi_file) if wsgi_file else "") or manage
    if not default:
        return Found(wsgi_module, "")
    package, _, name = default.rpartition(".")
    if package and name in DEVELOPMENT:
        for sibling in PRODUCTION:
            if module_exists(project, f"{package}.{sibling}"):
                chosen = f"{package}.{sibling}"
                note = (
                    f"fabstack: settings module {chosen} (the project's default, {default}, is for development); "
                    f"set settings_module to choose another"
                )
                return Found(wsgi_module, chosen, note)
    return Found(wsgi_module, default)


def _wsgi_for(project: Path, settings_module: str) -> str:
    """PACKAGE.wsgi:application for the package that holds settings_module, or else the
    only top-level package with a wsgi.py ('' when neither says)."""
    top = settings_module.split(".")[0] if settings_module else ""
    if top and (project / top / "wsgi.py").is_file():
        return f"{top}.wsgi:application"
    found = sorted(p.parent.name for p in project.glob("*/wsgi.py") if (p.parent / "__init__.py").is_file())
    return f"{found[0]}.wsgi:application" if len(found) == 1 else ""


class RequirementsError(ValueError):
    """A requirements file that names a file it cannot have (outside the project, missing)."""


@dataclass(frozen=True)
class Requirements:
    """What pip installs for the project: its requirements, every `-r` include inlined,
    and the lines of its `-c` constraint files apart (pip reads them as constraints: they
    pin, they install nothing). source says where they came from."""

    lines: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    source: str = ""
    files: tuple[str, ...] = ()  # the lines that are archives in the project (a vendored sdist or wheel)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    @property
    def constraints_text(self) -> str:
        return "".join(line + "\n" for line in self.constraints)


INCLUDE_RE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)\s*$")
# a requirement that is an archive in the project, by its path from the project's root
# (where pip runs): a vendored sdist or wheel, uploaded with the requirements
ARCHIVE_RE = re.compile(r"^(\./)?[\w.+-]+(/[\w.+-]+)*\.(tar\.gz|tgz|zip|whl)$")


def requirements(project: Path, setting: str = "") -> Requirements:
    """The project's requirements: the file the setting names, else requirements.txt, else
    pyproject.toml's [project] dependencies; none when it has none of them."""
    if setting or (project / "requirements.txt").is_file():
        name = setting or "requirements.txt"
        if not (project / name).is_file():
            raise RequirementsError(f"{name} is not a file in {project}")
        lines: list[str] = []
        constraints: list[str] = []
        root = project.resolve()
        _read(root, (root / name).resolve(), lines, constraints, [])
        files = tuple(line for line in lines if ARCHIVE_RE.match(line))
        for line in files:
            target = (root / line).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                raise RequirementsError(f"{line}: no such archive in the project (a path is read from its root)")
        return Requirements(tuple(lines), tuple(constraints), name, files)
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise RequirementsError(f"pyproject.toml: {exc}") from None
        dependencies = data.get("project", {}).get("dependencies", [])
        if dependencies:
            return Requirements(tuple(str(d) for d in dependencies), (), "pyproject.toml")
    return Requirements()


def _read(project: Path, path: Path, lines: list[str], constraints: list[str], seen: list[Path]) -> None:
    """path's requirement lines into lines, its includes followed (inside the project only)."""
    if path in seen:
        return  # an include twice: pip reads it once
    seen.append(path)
    for raw in path.read_text(errors="replace").splitlines():
        line = _bare(raw)
        if not line:
            continue
        include = INCLUDE_RE.match(line)
        if not include:
            lines.append(line)
            continue
        target = (path.parent / include[2]).resolve()
        named = f"{path.relative_to(project)}: {include[1]} {include[2]}"
        if not target.is_relative_to(project):
            raise RequirementsError(f"{named} leads out of the project; keep requirement files in it")
        if not target.is_file():
            raise RequirementsError(f"{named}: no such file in the project")
        if include[1] in ("-c", "--constraint"):
            constraints += filter(None, map(_bare, target.read_text(errors="replace").splitlines()))
        else:
            _read(project, target, lines, constraints, seen)


def _bare(line: str) -> str:
    """A requirements line without its comment ('' for a comment or a blank line)."""
    return "" if line.lstrip().startswith("#") else line.split(" #", 1)[0].strip()


NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# one driver, whichever distribution brings it: a project's psycopg[c] and our
# psycopg[binary] would be two builds of one module, of two versions
FAMILIES = {"psycopg-binary": "psycopg", "psycopg-c": "psycopg", "psycopg2": "psycopg", "psycopg2-binary": "psycopg"}


def name_of(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503): `Django>=5` -> django."""
    found = NAME_RE.match(requirement)
    return re.sub(r"[-_.]+", "-", found[1]).lower() if found else ""


def family(name: str) -> str:
    return FAMILIES.get(name, name)


def names(needs: Requirements) -> list[str]:
    """The distributions the project's requirements name (options and URLs left out)."""
    return [n for n in (name_of(line) for line in needs.lines if not line.startswith("-")) if n]


# the Python each Django release line needs at least, and the distributions' own
DJANGO_PYTHON = {4: (3, 8), 5: (3, 10), 6: (3, 12)}
DISTRIBUTION_PYTHON = {"debian 11": "3.9", "debian 12": "3.11", "debian 13": "3.13", "ubuntu 22.04": "3.10",
                       "ubuntu 24.04": "3.12"}  # fmt: skip
NEWER = "Debian 13 (trixie) or Ubuntu 24.04"
LOWER_RE = re.compile(r"(?:>=|==|~=|===|>)\s*(\d+)")


def django_floor(needs: Requirements) -> int:
    """The lowest Django major version the project's requirements allow (0: they do not say)."""
    floors = [int(m) for line in needs.lines if name_of(line) == "django" for m in LOWER_RE.findall(line)]
    return max(floors, default=0)


def python_too_old(needs: Requirements, python: str, os_release: str) -> str:
    """One line when the host's Python (else its distribution's) is older than the Django
    the requirements ask for needs ('' when it fits, or nothing says)."""
    have = python or DISTRIBUTION_PYTHON.get(os_release, "")
    floor = django_floor(needs)
    wanted = DJANGO_PYTHON.get(floor) or (DJANGO_PYTHON[max(DJANGO_PYTHON)] if floor > max(DJANGO_PYTHON) else None)
    if not have or not wanted:
        return ""
    version = tuple(int(p) for p in have.split(".")[:2] if p.isdigit())
    if version >= wanted:
        return ""
    needed = ".".join(map(str, wanted))
    return (
        f"the project's requirements ask for Django {floor}, which needs Python {needed}+; this host has "
        f"{'.'.join(map(str, version))} ({os_release or 'its distribution'}): use a host with {NEWER}, "
        f"or a Django its Python runs"
    )
