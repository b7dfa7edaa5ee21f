"""Issue 13 on a fresh Debian 13 (trixie) systemd host: a dry run of the whole line
changes nothing, then the real provision + deploy serves, and a rerun changes nothing."""

from __future__ import annotations

import secrets
import urllib.request

import pytest
from conftest import ColdRun, Remote, changed_paths, fab, git, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab

# What may change on a host just by logging in over SSH and reading it.
VOLATILE = ("/var/log/", "/var/lib/systemd/", "/var/cache/", "/root/.cache/")


@pytest.fixture(scope="module")
def trixie(lab: Lab):
    (host,) = lab.up(count=1, init="systemd", suite="trixie", prefix="tx")
    return host


def test_dry_run_of_provision_deploy_changes_nothing_on_a_fresh_host(trixie, cold: ColdRun):
    r = Remote(trixie)
    before = r.tree()
    run = fab("-H", trixie.target, "--dry-run", "provision", "deploy", settings=cold.settings)  # before the tasks
    assert run.code == 0, run
    assert changed_paths(before, r.tree(), ignore=VOLATILE) == [], run
    summaries = [i for i, line in enumerate(run.out.splitlines()) if line.startswith("dry run: no host was changed")]
    assert len(summaries) == 2, run  # each task of the line was dry, and says so first
    assert "apt packages: changed (dry run)" in run.out and "provisioned: changed (dry run)" in run.out
    assert r.run("command -v nginx || true").strip() == "" and r.run("id django 2>&1 || true").startswith("id:")


def test_provision_deploy_and_a_rerun_on_debian_13(trixie, cold: ColdRun):
    first = fab("-H", trixie.target, "provision", "deploy", settings=cold.settings)
    assert first.code == 0, first
    with urllib.request.urlopen(f"http://{trixie.address}/", timeout=10) as response:
        assert f'<b id="host">{trixie.name}</b>' in response.read().decode()
    r = Remote(trixie)
    assert r.run(". /etc/os-release; echo $VERSION_ID").strip() == "13"
    assert r.run("systemctl is-active gunicorn-django.service").strip() == "active"
    again = fab("-H", trixie.target, "provision", "deploy", settings=cold.settings)
    assert again.code == 0 and again.changed() == 0, again


def django6_settings(tmp_path, cold: ColdRun):
    """The stock project made at test time, pinned to Django 6 (Python 3.12+)."""
    project = stock_project(tmp_path / "six", "six-" + secrets.token_hex(8))
    (project / "requirements.txt").write_text("Django>=6.0,<6.1\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Django 6")
    settings = tmp_path / "six.yaml"
    settings.write_text(cold.settings.read_text() + f"project_path: {project}\n")
    return settings


def test_django_6_is_refused_on_debian_12_unchanged_and_deploys_on_debian_13(trixie, cold: ColdRun, tmp_path):
    settings = django6_settings(tmp_path, cold)
    bookworm = cold.hosts[0]
    r = Remote(bookworm)
    before = r.tree()
    refused = fab("-H", bookworm.target, "provision", "deploy", settings=settings)
    said = "the project's requirements ask for Django 6, which needs Python 3.12+; this host has 3.11 (debian 12)"
    assert refused.code == 1 and said in refused.out + refused.err, refused
    assert changed_paths(before, r.tree(), ignore=VOLATILE) == [], refused.out[-2000:]
    run = fab("-H", trixie.target, "provision", "deploy", settings=settings)
    assert run.code == 0, (run.out + run.err)[-3000:]
    t = Remote(trixie)
    version = t.run("/srv/django/venv/bin/python -c 'import django; print(django.get_version())'").strip()
    assert version.startswith("6.0"), version
    with urllib.request.urlopen(f"http://{trixie.address}/notes/?add=six", timeout=10) as response:
        assert response.read().decode() == "notes: six"
    again = fab("-H", trixie.target, "provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again.out[-2000:]
