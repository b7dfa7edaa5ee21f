"""Issue 3 acceptance on real lab hosts: the guide's whole path, both init kinds."""

from __future__ import annotations

import urllib.request

import pytest
from conftest import ColdRun, changed_paths, fab

from deploy.lab import Lab

pytestmark = pytest.mark.lab


def get(url: str) -> tuple[int, str, dict]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode(), dict(response.headers)


def test_cold_run_provisions_and_deploys_both_host_kinds(cold: ColdRun):
    assert cold.first.code == 0, cold.first
    for host in cold.hosts:
        ok, changed, failed = cold.first.totals()[host.target]
        assert failed == 0 and changed >= 10, cold.first


def test_the_journal_is_capped_where_systemd_runs_and_left_alone_elsewhere(cold: ColdRun, remote):
    systemd, sshd = (remote(h) for h in cold.hosts)
    dropin = "/etc/systemd/journald.conf.d/50-fabstack.conf"
    assert "SystemMaxUse=500M" in systemd.run(f"cat {dropin}")
    # journald itself says the cap it keeps to, since the restart that read the drop-in
    said = systemd.run("journalctl -b -u systemd-journald -o cat --no-pager | grep 'Journal (' | tail -n 1")
    assert "max 500.0M" in said, said
    assert sshd.run(f"[ -e {dropin} ] && echo there || echo absent").strip() == "absent"


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_site_answers_through_nginx(cold: ColdRun, remote, index):
    host = cold.hosts[index]
    status, body, headers = get(f"http://{host.address}/")
    assert status == 200
    assert f'<b id="host">{host.name}</b>' in body
    assert '<b id="worker">gevent</b>' in body
    assert headers["Server"].startswith("nginx")


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_static_files_come_from_nginx_not_gunicorn(cold: ColdRun, remote, index):
    host = cold.hosts[index]
    status, body, _ = get(f"http://{host.address}/static/site.css?probe={index}")
    assert status == 200 and "font-family" in body
    access_log = remote(host).run("cat /var/log/django/access.log")
    assert "GET / " in access_log or "GET / HTTP" in access_log  # gunicorn logs what it serves
    assert f"probe={index}" not in access_log


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_gunicorn_runs_as_app_user_with_configured_gevent_workers(cold: ColdRun, remote, index):
    r = remote(cold.hosts[index])
    master = r.master()
    owner = r.run(f"ps -o user= -p {master}").strip()
    workers = r.run(f"ps -o user= --ppid {master}").split()
    assert owner == "django"
    assert workers == ["django"] * 3  # workers: 3 in the run's settings file
    assert 'worker_class = "gevent"' in r.run("cat /srv/django/config/gunicorn.conf.py")


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_only_nginx_and_sshd_listen_beyond_loopback(cold: ColdRun, remote, index):
    listeners = remote(cold.hosts[index]).run("ss -Hltnp").splitlines()
    exposed = [ln for ln in listeners if not any(a in ln.split()[3] for a in ("127.0.0.1:", "[::1]:"))]
    names = {ln.split('(("')[1].split('"')[0] for ln in exposed}
    assert names <= {"nginx", "sshd"}, listeners
    # gunicorn listens on no TCP port at all, not even loopback's, which every local user
    # (another app's) could reach past nginx with forged X-Forwarded-* headers
    assert not any("gunicorn" in ln for ln in listeners), listeners


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_only_nginx_reaches_gunicorn(cold: ColdRun, remote, index):
    r = remote(cold.hosts[index])
    socket = "/srv/django/run/gunicorn.sock"
    assert r.run("stat -c '%U:%G %a' /srv/django/run").strip() == "django:www-data 750"

    def answer(user: str, group: str) -> str:
        """curl's HTTP code and exit status asking gunicorn's socket as USER."""
        return r.run(
            f"setpriv --reuid {user} --regid {group} --init-groups curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' "
            f"-H 'Host: localhost' --unix-socket {socket} http://localhost/; echo \" $?\""
        ).strip()

    assert answer("www-data", "www-data") == "200 0"  # nginx's user: Django answers
    assert answer("nobody", "nogroup") == "000 7"  # any other local user: no connection


def test_second_run_changes_nothing(cold: ColdRun):
    assert cold.second.code == 0, cold.second
    totals = cold.second.totals()
    for host in cold.hosts:
        assert totals[host.target][1:] == (0, 0), cold.second
    assert cold.second.seconds < cold.first.seconds


def test_default_site_backed_up_and_disabled(cold: ColdRun, remote):
    r = remote(cold.hosts[0])
    assert r.run("test -f /etc/nginx/sites-available/default.bak && echo yes").strip() == "yes"
    assert r.run("ls /etc/nginx/sites-enabled").split() == ["django.conf"]


def test_nginx_logs_are_private_from_their_first_line(cold: ColdRun, remote):
    for host in cold.hosts:  # never 644 before the first rotation: other apps' users read nothing
        modes = remote(host).run("stat -c '%n %G %a' /var/log/nginx/django/*.log").splitlines()
        assert modes and all(line.endswith(" adm 640") for line in modes), modes


def test_secret_key_readable_by_app_user_only(cold: ColdRun, remote):
    out = remote(cold.hosts[1]).run("stat -c '%U %a' /srv/django/shared/data/secret_key /srv/django/shared/data")
    assert out.split("\n")[:2] == ["django 600", "django 700"]


def test_dry_run_on_fresh_host_changes_nothing(lab: Lab, remote):
    (host,) = lab.up(count=1, init="sshd", prefix="dry")
    r = remote(host)
    before = r.tree()
    run = fab("-H", host.target, "provision", "--dry-run")
    assert run.code == 0, run
    assert "apt packages: changed (dry run)" in run.out
    assert "+++ /srv/django/config/gunicorn.conf.py (new)" in run.out  # a diff for every file
    assert "+    listen 80 default_server;" in run.out
    assert changed_paths(before, r.tree()) == []
    early = fab("-H", host.target, "deploy")
    assert early.code == 1 and "this host is not provisioned: run fab provision on it first" in early.out, early
    assert changed_paths(before, r.tree()) == []


def test_dry_run_shows_diff_of_a_changed_setting_and_changes_nothing(cold: ColdRun, remote, tmp_path):
    host = cold.hosts[1]
    settings = tmp_path / "fabstack.yaml"
    settings.write_text("workers: 4\n")
    before = remote(host).run("sha256sum /srv/django/config/gunicorn.conf.py")
    run = fab("-H", host.target, "provision", "--dry-run", settings=settings)
    assert run.code == 0, run
    assert "-workers = 3" in run.out and "+workers = 4" in run.out
    assert "gunicorn config: changed (dry run)" in run.out and "gunicorn running: changed (dry run)" in run.out
    assert run.summary()[host.target][1] == 2, run  # the file and the reload it would cause
    assert remote(host).run("sha256sum /srv/django/config/gunicorn.conf.py") == before
    secret = remote(host).run("cat /srv/django/shared/data/secret_key").strip()
    assert len(secret) > 40 and secret not in run.out + run.err
    # the app stopped, a dry deploy: the health check cannot run, and says so rather than "ok"
    assert fab("-H", host.target, "stop", settings=cold.settings).code == 0
    try:
        dry = fab("-H", host.target, "deploy", "--dry-run", settings=cold.settings)
        assert dry.code == 0 and "gunicorn running: changed (dry run)" in dry.out, dry
        assert "health check: skipped (dry run)" in dry.out and "health check: ok" not in dry.out, dry
    finally:
        assert fab("-H", host.target, "start", settings=cold.settings).code == 0


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_noop_rerun_is_one_remote_command_over_one_connection(cold: ColdRun, index):
    """Counts are stable where times are not: a change that adds round trips fails here.
    provision reads the host's facts in one command; deploy reuses them (nothing changed)."""
    host = cold.hosts[index]
    run = fab("-H", host.target, "provision", "--verbose", "deploy", "--verbose", settings=cold.settings)
    assert run.code == 0 and run.changed() == 0, run
    counts = [line.split("] ", 1)[1] for line in run.out.splitlines() if "remote commands:" in line]
    assert counts == [
        "remote commands: 1, ssh connections opened so far: 1",
        "remote commands: 0, ssh connections opened so far: 1",
    ], run


def test_logs_and_status_of_an_app_the_host_does_not_have_say_so(cold: ColdRun, tmp_path):
    settings = tmp_path / "ghost.yaml"
    settings.write_text("app_name: ghost\n")  # a misspelt app, or another app's host
    target = cold.hosts[0].target
    for task in ("logs", "status"):
        run = fab("-H", target, task, settings=settings)
        said = "app ghost is not on this host: run fab provision, or name another with --app"
        assert run.code == 1 and said in run.out + run.err, (task, run)
