"""Issue 9: what a user sees. Progress and summary on a terminal and off it, --json
against its documented schema, the status table, logs --follow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import jsonschema
import pytest
from conftest import FAB, REPO, ColdRun, fab, in_terminal, unused_address

pytestmark = pytest.mark.lab

SCHEMA = json.loads((REPO / "docs" / "run.schema.json").read_text())
ESC = "\x1b["


def targets(cold: ColdRun) -> str:
    return ",".join(h.target for h in cold.hosts)


def test_cold_run_shows_long_steps_are_alive_and_a_summary_table(cold):
    out = cold.first.out
    assert "apt packages: still running, " in out or "virtualenv: still running, " in out, out
    for host in cold.hosts:
        assert f"[{host.target}] apt packages: changed " in out
    assert out.count("HOST ") == 2 and " OK  CHANGED  FAILED     TIME" in out  # provision's and deploy's tables
    assert ESC not in out  # not a terminal: plain text


def test_json_of_a_dry_run_on_two_hosts_matches_the_schema(cold):
    run = fab("-H", targets(cold), "provision", "--dry-run", "--workers", "2", "--json", settings=cold.settings)
    assert run.code == 0, run
    document = json.loads(run.out)  # stdout is the document and nothing else
    jsonschema.validate(document, SCHEMA)
    assert document["ok"] is True and [r["task"] for r in document["runs"]] == ["provision"]
    hosts = document["runs"][0]["hosts"]
    assert {h["host"] for h in hosts} == {h.target for h in cold.hosts}
    for host in hosts:
        steps = {s["name"]: s for s in host["steps"]}
        assert steps["gunicorn config"]["status"] == "changed" and "+workers = 2" in steps["gunicorn config"]["diff"]
        assert steps["gunicorn running"]["status"] == "changed"  # a new config needs a reload
        assert steps["secret key"]["status"] == "ok" and host["changed"] == 2 and host["failed"] == 0
    assert "gunicorn config: changed (dry run)" in run.err  # progress went to stderr


def test_json_of_a_failed_run_names_the_host_and_the_step(cold, tmp_path):
    project = tmp_path / "no-wsgi"
    project.mkdir()
    (project / "manage.py").write_text("print('no wsgi module here')\n")
    run = fab("-H", cold.hosts[1].target, "deploy", "--project", str(project), "--json", settings=cold.settings)
    assert run.code == 2, run  # bad input: stopped before any host, still one JSON document
    document = json.loads(run.out)
    jsonschema.validate(document, SCHEMA)
    assert document["ok"] is False and "wsgi" in document["error"] and document["runs"] == []
    unreachable = f"root@{unused_address(254)}"
    run = fab("-H", f"{cold.hosts[1].target},{unreachable}", "status", "--json", settings=cold.settings, timeout=60)
    assert run.code == 1, run
    document = json.loads(run.out)
    jsonschema.validate(document, SCHEMA)
    by_host = {h["host"]: h for h in document["runs"][0]["hosts"]}
    assert (
        by_host[unreachable]["status"] == "failed"
        and f"{unused_address(254)}:22 unreachable" in by_host[unreachable]["error"]
    )
    assert by_host[cold.hosts[1].target]["data"]["health"] == "ok"
    assert document["ok"] is False and unreachable in document["error"]


def test_status_table_has_a_row_per_host(cold):
    run = fab("-H", targets(cold), "status", settings=cold.settings)
    assert run.code == 0, run
    header, *rows = [line for line in run.out.splitlines() if line.startswith(("HOST", "root@")) and "=" not in line]
    assert header.split() == [
        "HOST",
        "SITE",
        "REACHABLE",
        "NGINX",
        "CONFIG",
        "APP",
        "MANAGER",
        "PID",
        "WORKERS",
        "CLASS",
        "RELEASE",
        "PASSED",
        "HEALTH",
        "UPSTREAM",
        "DB",
        "CERTIFICATE",
        "BACKGROUND",
        "DISK",
        "MEMORY",
        "UPDATES",
        "VENV",
        "KEY",
        "MEDIA",
        "MAINTENANCE",
        "UPTIME",
    ]
    managers = {"sd1": "systemd", "ss1": "nohup"}
    for host, row in zip(cold.hosts, rows, strict=True):
        cells = row.split()
        assert cells[:7] == [host.target, "django", "yes", "running", "ok", "running", managers[host.name]], row
        assert cells[8:10] == ["3", "gevent"] and cells[10] == cells[11] and cells[12:14] == ["ok", "-"], row


def test_terminal_gets_progress_and_colour_and_no_color_is_respected(cold):
    target = cold.hosts[1].target
    env = {"FABSTACK_SETTINGS": str(cold.settings)}
    code, shown = in_terminal("-H", target, "provision", env=env)
    assert code == 0, shown
    assert f"[{target}]" in shown and "apt packages ..." in shown  # the step running now
    assert f"apt packages: {ESC}32mok{ESC}0m" in shown  # its result, in green
    assert "HOST" in shown and "CHANGED" in shown and f"{target} ok=" in shown
    code, plain = in_terminal("-H", target, "provision", env={**env, "NO_COLOR": "1"})
    assert code == 0, plain
    assert ESC not in plain and "apt packages: ok " in plain and "CHANGED" in plain


def test_logs_follow_prints_new_lines_until_ctrl_c(cold, remote):
    host = cold.hosts[1]
    proc = subprocess.Popen(
        [FAB, "-H", host.target, "logs", "--nginx", "--lines", "1", "--follow"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "FABSTACK_SETTINGS": str(cold.settings)},
        # Ctrl-C reaches fab as from a user's shell: a pytest started in the background by
        # a script (tests/run.sh's first lab) has SIGINT ignored, and fab would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def shown(text: str, seconds: float = 20) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(text in line for line in list(lines)):
                return True
            time.sleep(0.05)
        return False

    assert shown("==> /var/log/nginx/django/access.log <=="), lines  # connected, and tail has started
    marker = f"/follow-{time.time_ns()}"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{host.address}{marker}", timeout=10)
    assert shown(marker, 10), lines
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # every thread's stack (fab's SIGUSR1), for the log
        proc.send_signal(signal.SIGUSR1)
        shown("most recent call first", 5)
        proc.kill()
        proc.wait(timeout=10)
    reader.join(5)
    assert time.monotonic() - interrupted < 7 and proc.returncode != -signal.SIGKILL, "".join(lines[-80:])
    assert proc.returncode == 0, "".join(lines[-20:])  # Ctrl-C is how --follow ends: not a failure
    assert any(line.startswith(f"[{host.target}] ") and marker in line for line in lines), lines
    assert "tail" not in remote(host).run("ps -eo comm=").split()  # closing the connection ended it
