"""Issue 15: a project as `django-admin startproject` makes it, plus an app with a model,
in a git repo with git-ignored secrets, deployed without one edit for fabstack (lab
hosts). Nothing of the project is committed to this repo: it is made at test time."""

from __future__ import annotations

import http.cookiejar
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ColdRun, Remote, fab, get, git, in_terminal, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab
ADMIN_PASSWORD = "correct-horse-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def site(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path_factory):
    """A host (from the deployed snapshot: provisioned, serving the sample) and the
    stock project with its settings file."""
    (host,) = lab.up(count=1, init="sshd", prefix="yp", snapshot=deployed_snapshot)
    up = fab("-H", host.target, "provision", settings=cold.settings)  # back up after the snapshot: the sample runs
    assert up.code == 0, up
    root = tmp_path_factory.mktemp("yours")
    env_secret = "dotenv-" + secrets.token_hex(12)
    project = stock_project(root / "mysite", env_secret)
    settings = root / "fabstack.yaml"
    base = yaml.safe_load(cold.settings.read_text()) or {}
    env = {"DJANGO_SUPERUSER_USERNAME": "admin", "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
           "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}  # fmt: skip
    settings.write_text(yaml.safe_dump({**base, "project_path": str(project), "env": env}))
    return host, project, settings, env_secret


def test_a_stock_project_deploys_unmodified(site):
    host, project, settings, env_secret = site
    run = fab("-H", host.target, "deploy", settings=settings)  # the sample's host moves to this project
    assert run.code == 0, run
    assert fab("-H", host.target, "provision", "deploy", settings=settings).changed() == 0
    assert git(project, "status", "--porcelain") == ""  # nothing of the project was edited
    base = f"http://{host.address}"
    assert get(f"{base}/notes/") == (200, "notes: ")
    code, login = get(f"{base}/admin/login/")
    assert code == 200 and "csrfmiddlewaretoken" in login
    css = re.search(r'href="(/static/admin/css/[^"]+\.css)"', login)[1]
    assert get(base + css)[0] == 200  # collected into the release, served by nginx
    code, missing = get(f"{base}/no-such-page/")
    assert code == 404 and "Page not found" not in missing and "DEBUG" not in missing  # DEBUG is off
    r = Remote(host)
    try:
        current = r.run("readlink /srv/django/current").strip()
        assert r.run(f"ls -A {current}").split() == sorted(
            [
                ".fabstack-files",
                ".fabstack-release",
                ".fabstack-static-key",
                ".gitignore",
                "__pycache__",
                "fabstack_settings.py",
                "manage.py",
                "mysite",
                "notes",
                "staticfiles",
            ]  # fmt: skip
        )
        # the ignored .env and local_settings.py never reach the host, in any file
        found = r.run(f"grep -rl {env_secret} /srv /tmp /etc /var/log /root || true").split()
        assert found == [], found
    finally:
        r.conn.close()
    listing = fab("-H", host.target, "releases", settings=settings)
    commit = git(project, "rev-parse", "HEAD")[:12]
    assert f"  {commit}  " in listing.out and "A stock project with a notes app  (current)" in listing.out, listing


def test_a_project_deploys_first_on_a_host_provisioned_for_another(lab: Lab, cold: ColdRun, site):
    """Provisioned with one project's settings (the sample's wsgi module), never deployed,
    then deployed with another's: gunicorn's config changes before any release was
    served, and its check must not trip over the `current` that does not exist yet."""
    _, project, settings, _ = site
    (host,) = lab.up(count=1, init="sshd", prefix="ypf")
    assert fab("-H", host.target, "provision", settings=cold.settings).code == 0
    run = fab("-H", host.target, "deploy", settings=settings)
    assert run.code == 0, run
    assert get(f"http://{host.address}/notes/") == (200, "notes: ")
    assert ".gunicorn-check.py" not in Remote(host).run("ls -A /srv/django/config").split()  # the copy checked


def test_a_row_survives_deploys_and_a_rollback(site):
    host, project, settings, _ = site
    base = f"http://{host.address}"
    assert get(f"{base}/notes/?add=kept")[0] == 200
    for n in range(3):
        views = project / "notes" / "views.py"
        views.write_text(views.read_text() + f"# change {n}\n")
        git(project, "commit", "-q", "-am", f"change {n}")
        run = fab("-H", host.target, "deploy", settings=settings)
        assert run.code == 0 and "release uploaded: changed" in run.out, run
        assert get(f"{base}/notes/") == (200, "notes: kept")
    back = fab("-H", host.target, "rollback", settings=settings)
    assert back.code == 0, back
    assert get(f"{base}/notes/") == (200, "notes: kept")


def test_sqlite_backup_and_restore(site, tmp_path):
    """SQLite gets the same tasks: the online backup, streamed by the app user, checked on
    both ends; a restore brings the rows of that moment back."""
    host, _, settings, _ = site
    base = f"http://{host.address}"
    run = fab("-H", host.target, "db.backup", "--to", str(tmp_path), settings=settings)
    assert run.code == 0, run
    (copy,) = tmp_path.glob("django-*.sqlite3")
    assert copy.read_bytes().startswith(b"SQLite format 3") and "equal on the host" in run.out
    before = get(f"{base}/notes/")
    assert get(f"{base}/notes/?add=after-the-backup")[1] == before[1] + ",after-the-backup"
    restored = fab("-H", host.target, "db.restore", str(copy), "--yes", settings=settings)
    assert restored.code == 0, restored
    assert get(f"{base}/notes/") == before  # the row written after the backup is gone


def test_manage_runs_createsuperuser_and_the_admin_login_works(site):
    host, _, settings, _ = site
    made = fab("-H", host.target, "manage", "--", "createsuperuser", "--noinput", settings=settings)
    assert made.code == 0, made
    again = fab("-H", host.target, "manage", "--", "createsuperuser", "--noinput", settings=settings)
    assert again.code == 1 and "already taken" in again.out + again.err, again  # its exit code is fab's
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://{host.address}"
    code, form = get(f"{base}/admin/login/", opener)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": "admin", "password": ADMIN_PASSWORD, "next": "/admin/"}
    ).encode()
    with opener.open(urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=data), timeout=10) as response:
        page = response.read().decode()
        assert response.status == 200 and response.url.endswith("/admin/"), response.url
    assert "Site administration" in page and "Log out" in page


def test_manage_is_interactive_from_a_terminal(site):
    """changepassword asks twice, with getpass: it needs a terminal, which fab manage
    gives it when fab runs on one."""
    host, _, settings, _ = site
    new = "battery-staple-" + secrets.token_hex(4)
    code, shown = in_terminal(
        "-H", host.target, "manage", "--", "changepassword", "admin",
        env={"FABSTACK_SETTINGS": str(settings)}, answers={"Password: ": new, "Password (again): ": new},
    )  # fmt: skip
    assert code == 0 and "Password changed successfully for user 'admin'" in shown, shown


def test_an_installed_wheel_deploys_from_the_project_directory(site, tmp_path):
    """pip install of a wheel built from the checkout, in a fresh virtualenv outside
    it; `fabstack` run from a directory holding only fabstack.yaml and the project."""
    host, project, settings, _ = site
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([BIN / "pip", "wheel", "-q", "--no-deps", str(repo), "-w", str(tmp_path / "wheel")], check=True)
    (wheel,) = (tmp_path / "wheel").glob("fabstack-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["cp", "-a", str(project), str(work / "mysite")], check=True)
    views = work / "mysite" / "notes" / "views.py"
    views.write_text(views.read_text().replace('"notes: "', '"installed notes: "'))
    git(work / "mysite", "commit", "-q", "-am", "Deployed by the installed fabstack")
    config = yaml.safe_load(Path(settings).read_text())
    (work / "fabstack.yaml").write_text(yaml.safe_dump({**config, "project_path": "mysite"}))
    assert sorted(p.name for p in work.iterdir()) == ["fabstack.yaml", "mysite"]
    env = {k: v for k, v in os.environ.items() if k != "FABSTACK_SETTINGS"}
    run = subprocess.run(
        [venv / "bin" / "fabstack", "-H", host.target, "provision", "deploy"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{host.target} ok=" in run.stdout and "release uploaded: changed" in run.stdout
    assert get(f"http://{host.address}/notes/") == (200, "installed notes: kept")
