"""Issue 7: secrets from the controller's environment or a file: stored on the host for
the app user alone, never printed (not with -v, which shows every command, so never on
a command line either), never in a dry-run diff or the --json document."""

from __future__ import annotations

import json
import os

import pytest
from conftest import Remote, changed_paths, fab

from deploy.lab import Lab

pytestmark = pytest.mark.lab

SECRET_KEY = "sk-test-9f2b7c1e0d4a8e6b3c5f7a9d1e3b5c7f9a1d3e5f7b9c1d3e"
DB_PASSWORD = "db-pass-Zq81-never-shown"


@pytest.fixture(scope="module")
def host(lab: Lab, deployed_snapshot: str):
    (host,) = lab.up(count=1, init="sshd", prefix="sec", snapshot=deployed_snapshot)
    return host


def test_secrets_reach_the_app_user_only_and_are_never_shown(host, cold, tmp_path):
    password_file = tmp_path / "db-password"
    password_file.write_text(DB_PASSWORD + "\n")
    password_file.chmod(0o600)
    settings = tmp_path / "fabstack.yaml"
    settings.write_text(
        cold.settings.read_text()
        + f"secrets:\n  SECRET_KEY: env:FABSTACK_TEST_SECRET_KEY\n  DATABASE_PASSWORD: file:{password_file}\n"
    )
    env = {"FABSTACK_TEST_SECRET_KEY": SECRET_KEY}
    dry = fab("-H", host.target, "provision", "--dry-run", "--verbose", "--json", settings=settings, env=env)
    assert dry.code == 0, dry
    assert "(content not shown; mode django:django 600)" in dry.err
    real = fab("-H", host.target, "provision", "--verbose", "deploy", "--verbose", "--json", settings=settings, env=env)
    assert real.code == 0, real
    steps = {s["name"]: s["status"] for run in json.loads(real.out)["runs"] for s in run["hosts"][0]["steps"]}
    assert steps["secret key"] == steps["secrets"] == "changed"
    for run in (dry, real):
        assert SECRET_KEY not in run.out + run.err and DB_PASSWORD not in run.out + run.err
    r = Remote(host)
    listing = r.run(
        "stat -c '%n %U:%G %a' /srv/django/shared/data/secret_key /srv/django/shared/data/database_password"
    )
    assert listing.split("\n")[:2] == [
        "/srv/django/shared/data/secret_key django:django 600",
        "/srv/django/shared/data/database_password django:django 600",
    ]
    assert r.run("cat /srv/django/shared/data/secret_key").strip() == SECRET_KEY
    assert r.run("cat /srv/django/shared/data/database_password").strip() == DB_PASSWORD
    assert "DJANGO_DATABASE_PASSWORD_FILE=/srv/django/shared/data/database_password" in r.run(
        "cat /srv/django/config/gunicorn.conf.py"
    )
    assert "fabstack." not in r.run("ls -a /tmp")  # the staged upload is gone
    assert "It works" in r.run("curl --noproxy '*' -s http://127.0.0.1/")  # the app runs with the new key
    again = fab("-H", host.target, "provision", "deploy", settings=settings, env=env)
    assert again.code == 0 and again.changed() == 0, again


def test_missing_or_exposed_secret_stops_before_any_host(host, cold, tmp_path):
    exposed = tmp_path / "exposed"
    exposed.write_text(DB_PASSWORD)
    exposed.chmod(0o644)
    cases = {
        "SECRET_KEY: env:FABSTACK_TEST_UNSET": "secrets.SECRET_KEY: environment variable FABSTACK_TEST_UNSET is not set",
        f"DATABASE_PASSWORD: file:{exposed}": f"{exposed} is readable by others (mode 644); chmod 600",
        f"DATABASE_PASSWORD: file:{tmp_path}/none": "does not exist; create it (chmod 600) or use env:VAR",
        "db_password: env:X": "secret name 'db_password': use UPPER_CASE letters, digits and _",
        "DATABASE_PASSWORD: vault:x": "secrets.DATABASE_PASSWORD: use env:VARIABLE, file:PATH or cmd:COMMAND",
    }
    os.environ.pop("FABSTACK_TEST_UNSET", None)
    r = Remote(host)
    before = r.tree()
    for line, expect in cases.items():
        settings = tmp_path / "bad.yaml"
        settings.write_text(f"secrets:\n  {line}\n")
        run = fab("-H", host.target, "provision", settings=settings)
        assert run.code == 2 and expect in run.err and len(run.err.strip().splitlines()) == 1, run
        assert DB_PASSWORD not in run.err
    assert changed_paths(before, r.tree()) == []  # nothing on the host changed


def test_check_reports_what_is_unsafe_and_provision_repairs_it(host, cold, tmp_path):
    run = fab("-H", host.target, "check", settings=cold.settings)
    assert run.code == 0 and run.summary() == {host.target: (13, 0, 0)}, run
    assert "django check --deploy warnings: W" in run.out  # plain HTTP: Django's HTTPS advice is listed
    assert "(details: fab manage -- check --deploy)" in run.out  # and how to read it
    r = Remote(host)
    r.run(  # what a hand edit could do: gunicorn on every address too, the key readable by all
        'sed -i \'s|^bind = .*|bind = ["unix:/srv/django/run/gunicorn.sock", "0.0.0.0:8000"]|\' '
        "/srv/django/config/gunicorn.conf.py "
        "&& chmod 644 /srv/django/shared/data/secret_key"
    )
    assert fab("-H", host.target, "restart", settings=cold.settings).code == 0  # with the edited config
    bad = fab("-H", host.target, "check", "--json", settings=cold.settings)
    assert bad.code == 1, bad
    data = json.loads(bad.out)["runs"][0]["hosts"][0]["data"]
    assert data["gunicorn only through nginx"] == "the app user listens on 0.0.0.0:8000"
    assert data["secret files private"].startswith("not app-only (600): /srv/django/shared/data/secret_key")
    assert data["app user not root"] == data["nginx -t"] == data["everything fabstack made is an app's"] == "ok"
    fixed = fab("-H", host.target, "provision", settings=cold.settings)
    assert fixed.code == 0 and fixed.changed() >= 2, fixed
    again = fab("-H", host.target, "check", settings=cold.settings)
    assert again.code == 0, again
    assert ":8000" not in r.run("ss -Hltn")  # back on its unix socket


def test_a_single_host_rotates_its_own_key_and_keeps_the_old_one_as_fallback(host, cold):
    r = Remote(host)
    digest = "runuser -u django -- sha256sum /srv/django/shared/data/{0} 2>/dev/null | cut -d' ' -f1"
    assert fab("-H", host.target, "provision", "deploy", settings=cold.settings).code == 0
    old = r.run(digest.format("secret_key")).strip()
    rotated = fab("-H", host.target, "secret.rotate", settings=cold.settings)
    assert rotated.code == 0, rotated
    new, fallback = r.run(digest.format("secret_key")).strip(), r.run(digest.format("secret_key_fallback")).strip()
    assert new and new != old and fallback == old, (old, new, fallback)
    assert r.run("stat -c '%U:%G %a' /srv/django/shared/data/secret_key_fallback").strip() == "django:django 600"
    assert "It works" in r.run("curl --noproxy '*' -s http://127.0.0.1/")  # the app reloaded with both keys
    again = fab("-H", host.target, "provision", settings=cold.settings)
    assert again.code == 0 and again.changed() == 0, again
