"""Issue 23: the README tour and the recipes of docs/recipes.md, taken from the files
themselves and run as written against lab hosts, in the documented order: only the
addresses (and a release id, a project path) are substituted, and a command that runs
until Ctrl-C is given one after its first lines. A command fails the test when its exit
code is not the one its comment shows (`# exit N: ...`), 0 when it shows none."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, Remote, in_terminal
from test_sudo import PASSWORD, SUDOERS

from deploy.lab import Lab

pytestmark = pytest.mark.lab

EXIT = re.compile(r"#\s*exit (\d+):\s*(.*)$")
SHELL_CHARS = set("|&;<>(){}$`")


def section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end != -1 else None]


def commands(text: str) -> list[tuple[str, int, str]]:
    """The lines of text's sh blocks, each with the exit code its comment shows and the
    reason it gives (`# exit 1: REASON`, which the command must print)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command, _, comment = line.partition(" #")
            if command.strip():
                shown = EXIT.search("#" + comment)
                lines.append((command.strip(), *((int(shown.group(1)), shown.group(2).strip()) if shown else (0, ""))))
    return lines


def settings_block(text: str) -> str:
    (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return block


def environment(settings: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FABSTACK_SETTINGS" and not k.lower().endswith("_proxy")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    if settings:
        env["FABSTACK_SETTINGS"] = str(settings)
    return env


def run_line(line: str, env: dict[str, str]) -> tuple[int, str]:
    """Run one documented line from the repo, as a user's shell would."""
    argv = ["sh", "-c", line] if SHELL_CHARS & set(line) else shlex.split(line)
    if "--follow" not in argv:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout + proc.stderr
    # runs until Ctrl-C: given one once it has shown its first lines (or after 20 s)
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(lines) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(5)
    return proc.returncode, "".join(lines)


def run_all(lines: list[tuple[str, int, str]], subs: dict[str, str], env: dict[str, str]) -> list[str]:
    """Run each line with subs applied; a line per command whose exit code is not the
    documented one, or whose output lacks the documented reason."""
    failures = []
    for line, wanted, reason in lines:
        for old, new in subs.items():
            line = line.replace(old, new)
        code, out = run_line(line, env)
        if code != wanted or reason not in out:
            failures.append(f"{line}: exit {code}, the docs show {wanted} {reason!r}\n{out[-1500:]}")
    return failures


def test_the_readme_tour_runs_as_written(lab: Lab):
    tour = commands(section(REPO / "README.md", "## A 60-second tour"))
    assert len(tour) >= 12 and tour[0][0] == ". .venv/bin/activate"
    assert tour[1][0].startswith("fab lab.up --count 2") and tour[-1][0] == "fab lab.down"
    first, second = lab.up(count=2, init="systemd", prefix="tour")  # what `fab lab.up --count 2` makes
    subs = {"10.77.0.11": first.address, "10.77.0.12": second.address}
    failures = run_all(tour[2:-1], subs, environment())
    assert not failures, "\n\n".join(failures)
    assert any(wanted == 1 for _, wanted, _ in tour), "the tour shows a failing command and its exit code"


def test_the_recipes_run_as_written(lab: Lab, deployed_snapshot: str, tmp_path):
    recipes = REPO / "docs" / "recipes.md"
    project = tmp_path / "code" / "shop"  # ~/code/shop: a stock project, as django-admin makes it
    project.mkdir(parents=True)
    subprocess.run([BIN / "django-admin", "startproject", "shop", str(project)], check=True)
    paths = {"~/code/shop": str(project)}
    failures = []

    # one server
    one = section(recipes, "## One server, the guide's setup")
    (host,) = lab.up(count=1, init="systemd", prefix="rone", snapshot=deployed_snapshot)
    settings = tmp_path / "one.yaml"
    settings.write_text(_substituted(settings_block(one), paths))
    failures += run_all(commands(one), {"203.0.113.5": host.address}, environment(settings))

    # a non-root user with sudo: passwordless on one host, a password on another
    sudo = commands(section(recipes, "## A non-root user with sudo"))
    assert [line for line, *_ in sudo][1].startswith("fab --prompt-for-sudo-password")
    hosts = lab.up(count=2, init="sshd", prefix="rsudo", snapshot=deployed_snapshot)
    for host, rule in zip(hosts, SUDOERS.values(), strict=True):
        Remote(host).run(
            "id deployer >/dev/null 2>&1 || { useradd -m -s /bin/bash deployer "
            "&& install -d -o deployer -g deployer -m 700 /home/deployer/.ssh "
            "&& install -o deployer -g deployer -m 600 /root/.ssh/authorized_keys /home/deployer/.ssh/ "
            f"&& echo 'deployer:{PASSWORD}' | chpasswd && echo '{rule}' > /etc/sudoers.d/deployer "
            "&& chmod 440 /etc/sudoers.d/deployer; }"
        )
    failures += run_all(sudo[:1], {"203.0.113.5": hosts[0].address}, environment())
    line = sudo[1][0].replace("203.0.113.5", hosts[1].address)
    code, shown = in_terminal(*shlex.split(line)[1:], env=environment(), answers={"'sudo.password'": PASSWORD})
    if code != sudo[1][1]:
        failures.append(f"{line}: exit {code}\n{shown[-1500:]}")

    # a load balancer and app servers, then a rolling deploy, a rollback, and CI's lines
    farm_doc = section(recipes, "## Load balancer and app servers")
    farm = lab.up(count=4, init="systemd", prefix="rlb", snapshot=deployed_snapshot)
    listed = ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"]
    addresses = dict(zip(listed, (h.address for h in farm), strict=True))
    settings = tmp_path / "farm.yaml"
    settings.write_text(_substituted(settings_block(farm_doc), {**paths, **addresses}))
    env = environment(settings)
    failures += run_all(commands(farm_doc), {}, env)
    app = Remote(farm[1])
    before = app.run("basename $(readlink /srv/django/current)").strip()
    (project / "shop" / "urls.py").write_text((project / "shop" / "urls.py").read_text() + "# a code change\n")
    rolling = commands(section(recipes, "## Rolling deploy and rollback"))
    assert [line for line, *_ in rolling][:2] == ["fab deploy", "fab rollback"]
    failures += run_all(rolling[:1], {}, env)
    changed = app.run("basename $(readlink /srv/django/current)").strip()
    failures += run_all(rolling[1:2], {}, env)
    assert app.run("basename $(readlink /srv/django/current)").strip() == before, "fab rollback went back one"
    failures += run_all(rolling[2:], {"464eeb5db95a": changed}, env)
    assert app.run("basename $(readlink /srv/django/current)").strip() == changed, "fab rollback --to ID went there"
    try:
        failures += run_all(commands(section(recipes, "## In CI")), {}, env)
    finally:
        (REPO / "run.json").unlink(missing_ok=True)
    assert not failures, "\n\n".join(failures)


def _substituted(text: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        text = text.replace(old, new)
    return text
