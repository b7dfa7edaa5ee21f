"""Issue 4: gunicorn kept alive by nohup, systemd or supervisor, with one set of tasks."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from conftest import ColdRun, Load, Remote, fab, get, sample_variant, wait_until

from deploy.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def hosts(lab: Lab, deployed_snapshot: str):
    """A systemd host and an sshd-only host, started from the deployed snapshot."""
    return lab.up(count=1, init="systemd", prefix="pmsd", snapshot=deployed_snapshot) + lab.up(
        count=1, init="sshd", prefix="pmss", snapshot=deployed_snapshot
    )


def converge(host, manager: str, tmp_path, cold: ColdRun):
    settings = tmp_path / f"{manager}.yaml"
    settings.write_text(cold.settings.read_text() + f"process_manager: {manager}\n")
    run = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert run.code == 0, run
    return run, settings


def masters(r: Remote) -> list[int]:
    return r.masters()


def answers(host, within: float = 10.0) -> bool:
    """The site serves this host's page (after a crash, once the new workers are up)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"http://{host.address}/", timeout=10) as response:
                return f'<b id="host">{host.name}</b>' in response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def status_row(host, settings) -> dict:
    """fab status's row for host, read from its --json document."""
    run = fab("-H", host.target, "status", "--json", settings=settings)
    assert run.code == 0, run
    (only,) = json.loads(run.out)["runs"][0]["hosts"]
    return only["data"]


def crash_and_wait(r: Remote, limit: float = 5.0) -> float:
    """kill -9 the master; return seconds until its manager has started a new one."""
    (old,) = masters(r)
    r.run(f"kill -9 {old}")
    started = time.monotonic()
    while time.monotonic() - started < limit + 5:
        new = masters(r)
        if new and new != [old]:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"no new gunicorn master within {limit + 5}s of kill -9")


def test_auto_picks_nohup_on_sshd_and_survives_the_session(hosts, cold, tmp_path):
    host = hosts[1]
    run, settings = converge(host, "auto", tmp_path, cold)
    assert status_row(host, settings)["manager"] == "nohup"
    r = Remote(host)
    assert len(masters(r)) == 1 and answers(host)


def test_auto_picks_systemd_and_it_restarts_a_crashed_master(hosts, cold, tmp_path):
    host = hosts[0]
    run, settings = converge(host, "auto", tmp_path, cold)
    assert status_row(host, settings)["manager"] == "systemd"
    r = Remote(host)
    assert r.run("systemctl is-enabled gunicorn-django.service").strip() == "enabled"
    assert r.run("systemctl show -p User --value gunicorn-django.service").strip() == "django"
    seconds = crash_and_wait(r)
    assert seconds < 5, seconds
    assert answers(host)
    logs = fab("-H", host.target, "logs", "--gunicorn", "--lines", "50", settings=settings)
    assert logs.code == 0, logs
    assert f"[{host.target}] ==> /var/log/django/error.log <==" in logs.out
    assert "Booting worker" in logs.out and "journalctl -u gunicorn-django.service" in logs.out


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_supervisor_restarts_a_crashed_master(hosts, cold, tmp_path, index):
    host = hosts[index]
    run, settings = converge(host, "supervisor", tmp_path, cold)
    assert status_row(host, settings)["manager"] == "supervisor"
    r = Remote(host)
    assert "RUNNING" in r.run("supervisorctl status gunicorn-django")
    assert r.run(f"ps -o user= -p {r.master()}").strip() == "django"
    seconds = crash_and_wait(r)
    assert seconds < 5, seconds
    assert answers(host)
    # stop confirms the master is gone, start brings it back through supervisor
    assert fab("-H", host.target, "stop", settings=settings).code == 0
    assert masters(r) == [] and "STOPPED" in r.run("supervisorctl status gunicorn-django || true")
    down = fab("-H", host.target, "status", settings=settings)  # a stopped app is a failing status
    assert down.code == 1 and f"{host.target}: step 'status' failed: app stopped" in down.out, down
    assert fab("-H", host.target, "start", settings=settings).code == 0
    assert len(masters(r)) == 1 and answers(host)


def test_switching_managers_keeps_exactly_one_master(hosts, cold, tmp_path):
    host = hosts[0]
    r = Remote(host)
    for manager in ("nohup", "systemd", "supervisor", "nohup"):
        run, settings = converge(host, manager, tmp_path, cold)
        assert len(masters(r)) == 1, (manager, run)
        assert answers(host)
        assert status_row(host, settings)["manager"] == manager
        unit = r.run("ls /etc/systemd/system/gunicorn-django.service 2>/dev/null || true").strip()
        program = r.run("ls /etc/supervisor/conf.d/gunicorn-django.conf 2>/dev/null || true").strip()
        assert bool(unit) == (manager == "systemd") and bool(program) == (manager == "supervisor")
        again = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert again.code == 0 and again.changed() == 0, again


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_reload_keeps_master_and_replaces_workers_under_every_manager(hosts, cold, tmp_path, index):
    host = hosts[index]
    r = Remote(host)
    for manager in ("nohup", "supervisor") if index else ("systemd",):
        _, settings = converge(host, manager, tmp_path, cold)
        (master,) = masters(r)
        workers = set(r.run(f"pgrep -P {master}").split())
        assert fab("-H", host.target, "reload", settings=settings).code == 0
        assert masters(r) == [master]
        assert not workers & set(r.run(f"pgrep -P {master}").split())
        assert fab("-H", host.target, "restart", settings=settings).code == 0
        assert masters(r) != [master] and len(masters(r)) == 1


def test_new_gunicorn_version_is_a_full_restart(hosts, cold, tmp_path):
    host = hosts[1]
    r = Remote(host)
    _, settings = converge(host, "nohup", tmp_path, cold)
    (master,) = masters(r)
    settings.write_text(settings.read_text() + "gunicorn_version: '>=25.1,<27'\n")
    run = fab("-H", host.target, "provision", settings=settings)
    assert run.code == 0, run
    assert "virtualenv: changed" in run.out and "gunicorn running: changed" in run.out
    assert r.run("/srv/django/venv/bin/gunicorn --version").split()[-1].startswith(("25.", "26."))
    assert masters(r) != [master] and len(masters(r)) == 1
    assert answers(host)


def test_background_processes_under_supervisor(hosts, cold, tmp_path):
    """Issue 18's processes as supervisor programs (numprocs): as the app user, their pids
    in status, a graceful restart to new pids, stop and start, removed with the setting."""
    host = hosts[1]
    r = Remote(host)
    sleeper = "manage.py shell -c 'import time; time.sleep(10**6)'"
    settings = tmp_path / "sleeper.yaml"
    base = cold.settings.read_text() + "process_manager: supervisor\n"
    settings.write_text(base + f'processes:\n  sleeper: {{command: "{sleeper}", count: 2, stop_timeout: 5}}\n')
    run = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert run.code == 0, run

    def sleepers() -> list[str]:
        rows = r.run("supervisorctl status 'fabstack-django.sleeper:*' || true").splitlines()
        return sorted(row.split()[3].rstrip(",") for row in rows if " RUNNING " in row)

    first = sleepers()
    assert len(first) == 2 and {r.run(f"ps -o user= -p {p}").strip() for p in first} == {"django"}, first
    shown = re.search(r"sleeper 2/2 pid (\d+) (\d+)", fab("-H", host.target, "status", settings=settings).out)
    assert shown and sorted(shown.groups()) == first, (shown, first)
    assert fab("-H", host.target, "restart", "--process", "sleeper", settings=settings).code == 0
    second = sleepers()
    assert len(second) == 2 and not set(second) & set(first), (first, second)
    assert fab("-H", host.target, "stop", "--process", "sleeper", settings=settings).code == 0
    assert sleepers() == []
    assert fab("-H", host.target, "start", "--process", "sleeper", settings=settings).code == 0
    assert len(sleepers()) == 2
    settings.write_text(base)  # the process removed from the settings: stopped, its program gone
    gone = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert gone.code == 0 and sleepers() == [], gone
    assert r.run("ls /etc/supervisor/conf.d/").split() == ["gunicorn-django.conf"]
    again = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again


def named_master(r: Remote, manager: str) -> str:
    """The master the process manager names: systemd's MainPID, or root's record."""
    if manager == "systemd":
        return r.run("systemctl show -p MainPID --value gunicorn-django.service").strip()
    return r.run("cat /srv/django/state/master.pid").strip()


def settled(r: Remote, manager: str) -> int:
    """The one master left once the one before has finished its last requests, and the
    process manager names it."""

    def one() -> int:
        found = masters(r)
        return found[0] if len(found) == 1 and named_master(r, manager) == str(found[0]) else 0

    return wait_until(one, 20, "one master, named by the process manager")


def test_preload_app_deploys_through_a_new_master_and_loses_no_request(hosts, cold, tmp_path):
    """preload_app, on a systemd host and an sshd-only one (nohup) at once: a deploy
    starts a new master beside the old one (USR2) and stops the old one once the new one
    answers. Under load nothing fails, the new release answers when the deploy returns,
    the manager names the new master, a release that answers 500 leaves a master
    serving the release before, and turning preload_app off takes a new master that
    reads each release."""
    managers = ["systemd", "nohup"]
    remotes = [Remote(host) for host in hosts]
    settings = tmp_path / "preload.yaml"
    targets = ",".join(host.target for host in hosts)

    def deploy(name: str, append: dict[str, str] | None = None, preload: bool = True):
        project = sample_variant(tmp_path, name, f"Release {name}", append)
        settings.write_text(
            cold.settings.read_text() + f"preload_app: {str(preload).lower()}\nproject_path: {project}\n"
        )
        return fab("-H", targets, "provision", "deploy", settings=settings)

    def all_settled() -> list[int]:
        return [settled(r, manager) for r, manager in zip(remotes, managers, strict=True)]

    run = deploy("V1")
    assert run.code == 0, run
    first = all_settled()
    for r in remotes:
        assert r.run("grep -cx 'preload_app = True' /srv/django/config/gunicorn.conf.py").strip() == "1"
    loads = [Load(host.address, clients=4) for host in hosts]
    for load in loads:
        load.__enter__()
    try:
        wait_until(lambda: min(load.sent for load in loads) > 50, 30, "the load's first requests")
        run = deploy("V2")
        assert run.code == 0, run
        assert all("Release V2" in get(f"http://{host.address}/")[1] for host in hosts)
        sent = [load.sent for load in loads]
        wait_until(lambda: all(load.sent > n + 50 for load, n in zip(loads, sent, strict=True)), 30, "more requests")
    finally:
        for load in loads:
            load.__exit__()
    for load in loads:
        assert load.failed == 0 and load.bodies["V1"] and load.bodies["V2"], (load.failed, load.bodies)
    second = all_settled()
    assert all(a != b for a, b in zip(first, second, strict=True))
    for r, master in zip(remotes, second, strict=True):
        assert len(r.run(f"pgrep -P {master}").split()) == 3  # the cold settings' workers

    broken = "\n\ndef index(request):  # replaces the working view\n    raise RuntimeError('V3 is broken')\n"
    run = deploy("V3", append={"sample/views.py": broken})
    assert run.code == 1 and "HTTP 500" in run.out + run.err, run
    all_settled()
    assert all("Release V2" in get(f"http://{host.address}/")[1] for host in hosts)

    run = deploy("V4", preload=False)
    assert run.code == 0, run
    assert all(a != b for a, b in zip(all_settled(), second, strict=True))
    assert all("Release V4" in get(f"http://{host.address}/")[1] for host in hosts)
    for r in remotes:
        assert r.run("grep -c 'preload_app' /srv/django/config/gunicorn.conf.py || true").strip() == "0"
    again = fab("-H", targets, "provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
