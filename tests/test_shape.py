"""The code's shape, checked: no import cycle in deploy/, no shell longer
than three lines in a Python string (it belongs in deploy/remote/*.sh), no step that
looks at the dry-run flag, every remote script known to the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

from deploy import scripts

DEPLOY = REPO / "deploy"
MODULES = {
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
    for path in DEPLOY.rglob("*.py")
    if "remote" not in path.parts
}


def imports_of(module: str, path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deploy"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("deploy")}
    return {m for m in found if m in MODULES and m != module}


def test_no_import_cycle_in_deploy():
    graph = {module: imports_of(module, path) for module, path in MODULES.items()}
    # a package imports what its __init__ imports; its modules importing the package is not a cycle
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for dep in graph[module]:
            if dep in trail:
                cycle = trail[trail.index(dep) :] + [dep]
                if not all(
                    a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:], strict=False)
                ):
                    cycles.append(" -> ".join(cycle))
            elif len(trail) < 30:
                visit(dep, [*trail, dep])

    for module in graph:
        visit(module, [module])
    assert not cycles, cycles[:3]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


# Long strings that are not shell, and are read where they are.
NOT_SHELL = {"deploy/docs.py": "the settings page's Markdown", "deploy/lab/network.py": "tinyproxy's config"}


def test_no_python_string_holds_more_than_three_lines_of_shell():
    long = []
    for path in [*MODULES.values(), REPO / "fabfile.py"]:
        if str(path.relative_to(REPO)) in NOT_SHELL:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if id(node) not in docs and text.strip().count("\n") >= 3:
                long.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if isinstance(node, ast.JoinedStr) and sum(
                v.value.count("\n") for v in node.values if isinstance(v, ast.Constant)
            ) >= 3:  # fmt: skip
                long.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not long, long


def test_no_step_looks_at_the_dry_run_flag():
    for path in (DEPLOY / "steps").glob("*.py"):
        assert "dry_run" not in path.read_text(), path


def test_every_remote_script_ships_and_its_needs_exist():
    names = {p.name for p in (DEPLOY / "remote").iterdir() if p.suffix in (".sh", ".py")}
    for name in names:
        assert scripts.text(name)  # read through the package, as an installed wheel would
    for name, needs in scripts.NEEDS.items():
        assert {name, *needs} <= names


def test_an_installed_wheel_has_its_templates_scripts_and_sample(tmp_path):
    """Built and installed outside the checkout, the package renders every template,
    packs the sample and reads its remote scripts from itself."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(tmp_path / "wheel")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("fabstack-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import deploy, deploy.render as r, deploy.scripts as s; "
        "from deploy.settings import SAMPLE_PROJECT; from deploy.release import Release; "
        "assert deploy.__file__.startswith(sys.argv[1]), deploy.__file__; r.check(''); "
        "print(len(Release(SAMPLE_PROJECT, 'staticfiles').id), len(s.text('facts.sh')) > 0)"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["12", "True"], out.stderr


def _settings_names(func: ast.FunctionDef) -> set[str]:
    """Names bound to a Settings in func: `settings`, a parameter annotated Settings,
    and names assigned from `something.settings` (also in tuple assignments)."""
    names = {"settings"}
    for arg in func.args.args:
        if isinstance(arg.annotation, ast.Name | ast.Constant) and "Settings" in ast.unparse(arg.annotation):
            names.add(arg.arg)
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            pairs = []
            for target in node.targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs += zip(target.elts, node.value.elts, strict=True)
                else:
                    pairs.append((target, node.value))
            for target, value in pairs:
                if isinstance(target, ast.Name) and isinstance(value, ast.Attribute) and value.attr == "settings":
                    names.add(target.id)
    return names


def test_every_setting_read_in_deploy_is_one_the_schema_declares():
    from dataclasses import fields

    from deploy.settings import SCHEMA, Settings

    declared = {f.name for f in fields(Settings)} | {n for n in dir(Settings) if not n.startswith("_")}
    assert {key.name for key in SCHEMA} == {f.name for f in fields(Settings)} - {
        "source",
        "inventory",
        "secret_values",
        "site_tls",
        "project_note",
        "background",
        "jobs",
    }
    unknown = []
    for module, path in MODULES.items():
        if module.startswith("deploy.lab"):
            continue
        tree = ast.parse(path.read_text())
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            names = _settings_names(func)
            for node in ast.walk(func):
                if not isinstance(node, ast.Attribute):
                    continue
                base = node.value
                is_settings = (isinstance(base, ast.Name) and base.id in names) or (
                    isinstance(base, ast.Attribute) and base.attr == "settings"
                )
                if is_settings and node.attr not in declared:
                    unknown.append(f"{path.relative_to(REPO)}:{node.lineno}: settings.{node.attr}")
    assert not unknown, unknown


TEMP = re.compile(r"(?<![\w.])(/tmp|/var/tmp|/dev/shm)(/[^\s\"'`)]*)?")


def test_no_fixed_path_under_a_world_writable_directory():
    """Root never writes at a path another user could make first: a file under /tmp is
    named by mktemp (a template with XXXXXX), never by a name anyone can work out."""
    fixed = []
    remote = [p for p in (DEPLOY / "remote").iterdir() if p.is_file()]  # not a __pycache__ of its .py files
    sources = [*MODULES.values(), *remote, *(REPO / "templates").rglob("*.j2")]
    for path in sources:
        if "lab" in path.relative_to(DEPLOY if path.is_relative_to(DEPLOY) else REPO).parts:
            continue  # the lab: test servers on this machine, not a host's
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for found in TEMP.finditer(line):
                if "XXXXXX" not in (found[2] or "") and not line.lstrip().startswith("#"):
                    fixed.append(f"{path.relative_to(REPO)}:{number}: {found[0]}")
    assert not fixed, fixed


def test_no_raw_fact_key_is_read_outside_facts_py():
    """A fact is a typed field (facts.HostFacts, StatusRead, CheckRead); the raw keys a
    read-only task read besides are handed, whole, to one of those (X.parse(f.extra))."""
    import re

    raw = []
    for path in DEPLOY.rglob("*.py"):
        if path.name != "facts.py":
            raw += [
                f"{path.relative_to(REPO)}: {m}" for m in re.findall(r".{20}\.extra\b(?!\)).{0,10}", path.read_text())
            ]
    assert raw == []


def test_templates_call_scripts_and_hold_none():
    """Shell lives in deploy/remote/ (shellchecked); a template that is a script is one
    line that calls one there, and no unit runs a shell of its own (sh -c '...')."""
    held = []
    for path in (REPO / "templates").glob("*.j2"):
        text = path.read_text()
        code = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if text.startswith("#!/bin/sh") and len(code) > 1 or "sh -c" in text:
            held.append(path.name)
    assert held == []


def test_a_call_is_sent_exactly_the_values_its_scripts_read_and_every_one_it_needs():
    """Scripts run with set -u: a variable read and neither sent nor set in the script is
    an error on the host, caught here; and a call carries no value its functions do not read."""
    import re

    from test_steps import host

    given = set(host().values)
    for path in sorted((DEPLOY / "remote").glob("*.sh")):
        if path.read_text().startswith("#!"):
            continue  # a program installed on the host, given its values as arguments
        shell = scripts.call([path.name], "true", values=dict.fromkeys(given, "v"))  # one line each
        sent = set(re.findall(r"^([A-Z][A-Z0-9_]*)=v$", shell.text, re.M))
        read = scripts.reads(shell.text)
        assert shell.text.startswith("set -u\n") and sent == read & given, path.name
        defaulted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-=+]", shell.text))  # ${X:-} is safe unset
        local = set(re.findall(r"(?:^|[\s;(])([A-Z][A-Z0-9_]*)=", shell.text, re.M))
        facts_lists = {"FACT_FILES", "APP_FACT_FILES", "FACT_DIRS", "FACT_LINKS", "FACT_PACKAGES", "PG_PROBE_PY"}
        assert read - given - defaulted - local - facts_lists == set(), path.name
