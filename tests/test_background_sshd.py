"""Issue 18 on a host without systemd (sshd as PID 1, like a minimal container): a
Celery worker kept by nohup with root's records, Redis started by its init script, a
job every minute from cron through fabstack's locking runner; the stock project made at
test time with Celery wired in."""

from __future__ import annotations

import re
import secrets
import time

import pytest
import yaml
from conftest import Remote, fab, get, git, stock_project, with_celery

from deploy.lab import Lab

pytestmark = pytest.mark.lab
TICK = "manage.py shell -c \"print('tick', flush=True)\""


def workers(r: Remote) -> list[tuple[str, str]]:
    """(pid, user) of each Celery main process (its parent is not celery)."""
    rows = [line.split(None, 3) for line in r.run("ps -eo pid=,ppid=,user=,args=").splitlines()]
    celery = {pid: (ppid, user) for pid, ppid, user, args in rows if "bin/celery" in args}
    return [(pid, user) for pid, (ppid, user) in celery.items() if ppid not in celery]


def test_a_worker_and_a_cron_job_on_a_host_without_systemd(lab: Lab, deployed_snapshot, tmp_path):
    (host,) = lab.up(count=1, init="sshd", prefix="bgss", snapshot=deployed_snapshot)
    project = stock_project(tmp_path / "mysite", "dotenv-" + secrets.token_hex(8))
    with_celery(project)
    settings = tmp_path / "fabstack.yaml"
    config = {"project_path": str(project), "redis": True, "processes": {"worker": "celery -A mysite worker -l info"},
              "schedule": {"tick": {"command": TICK, "every": "minute"}}}  # fmt: skip
    settings.write_text(yaml.safe_dump(config))
    run = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert run.code == 0, run
    assert get(f"http://{host.address}/notes/later/?add=by-nohup") == (200, "queued")
    deadline = time.monotonic() + 60
    while "by-nohup" not in get(f"http://{host.address}/notes/")[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(f"http://{host.address}/notes/") == (200, "notes: by-nohup")
    r = Remote(host)
    try:
        (first,) = workers(r)
        assert first[1] == "django"
        assert r.run("cat /srv/django/state/bg-worker.1.pid").strip() == first[0]  # root's record
        again = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert again.code == 0 and again.changed() == 0, again
        views = project / "notes" / "views.py"
        views.write_text(views.read_text() + "\n# release 2\n")
        git(project, "commit", "-qam", "release 2")
        assert fab("-H", host.target, "deploy", settings=settings).code == 0
        (second,) = workers(r)  # one generation, a new one
        assert second[0] != first[0] and second[1] == "django"
        # the job: every minute from cron, as the app user, its output in the app's logs
        deadline = time.monotonic() + 150
        log = ""
        while log.splitlines().count("tick") < 2 and time.monotonic() < deadline:
            log = r.run("cat /var/log/django/job-tick.log 2>/dev/null || true")
            time.sleep(2)
        minutes = [line.split(": ")[1][:16] for line in log.splitlines() if line.endswith(": started")]
        assert log.splitlines().count("tick") >= 2 and len(minutes) >= 2, log  # ran, and printed, twice
        assert len(set(minutes)) == len(minutes), log  # once a minute
        assert r.run("stat -c %U /var/log/django/job-tick.log").strip() == "django"
        status = fab("-H", host.target, "status", settings=settings)  # each process's pids, the job's last run
        assert f"worker 1/1 pid {second[0]}" in status.out, status
        assert re.search(r"tick cron active, last \d\d:\d\d:\d\d", status.out), status
        logs = fab("-H", host.target, "logs", "--process", "tick", "--lines", "3", settings=settings)
        assert logs.code == 0 and logs.out.count("tick") >= 1 and len(logs.out.splitlines()) <= 4, logs
    finally:
        r.conn.close()
