"""The deploy lock's record, its audit line and the settings of a team's day (hooks, a
secret from a command), without a host: what the lab tests in tests/test_team.py rest on."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPO

from deploy import lock
from deploy import settings as s

SAMPLE = REPO / "templates" / "sample"


def test_a_holder_is_named_with_what_it_runs_and_for_how_long():
    run = lock.Holder.parse(["who=ann@laptop", "task=deploy", "release=abc", "state=held", "since=100", "now=225"])
    assert run.describe() == "ann@laptop's deploy of release abc (for 2m 5s)"
    by_hand = lock.Holder.parse(["who=bo@ci", "task=lock", "message=a = b", "state=manual", "since=0", "now=7200"])
    assert by_hand.describe() == "bo@ci by hand: a = b (for 2h)"
    assert lock.Holder.parse([]).describe() == "someone's run (for a while)"
    assert [lock.duration(n) for n in (0, 59, 60, 3601, 90000)] == ["0s", "59s", "1m", "1h", "1d 1h"]


def test_the_record_is_lines_without_control_characters():
    text = lock.record("deploy", "r1", "line\nbreak\x1b[31m")
    assert "\n".join(text.splitlines()[1:]) == "task=deploy\nrelease=r1\nmessage=line break [31m"
    assert text.startswith("who=") and " " not in text.splitlines()[0]


def host(name: str, status: str, changed: int, data: dict | None = None) -> dict:
    return {"host": name, "status": status, "changed": changed, "data": data or {}}


def test_an_audit_line_says_who_what_where_from_which_release_to_which_and_how_it_ended():
    runs = [{"hosts": [host("a", "changed", 3, {"release": "r2", "previous": "r1"}), host("lb", "ok", 0)]}]
    line = lock.audit_line("deploy", runs)
    assert line.split()[1:] == ["task=deploy", "hosts=a,lb", "release=r1->r2", "result=ok", "changed=3"]
    failed = lock.audit_line("deploy", [{"hosts": [host("a", "failed", 1, {"release": "r3"})]}])
    assert failed.split()[1:] == ["task=deploy", "hosts=a", "release=none->r3", "result=failed", "changed=1",
                                  "failed=a"]  # fmt: skip
    assert lock.audit_line("deploy", [{"hosts": [host("a", "ok", 0)]}]) == ""  # a no-op run leaves no line
    assert lock.audit_line("provision", [{"hosts": [host("a", "failed", 0)]}]) == ""  # nor one refused on a host


def test_the_lock_lives_on_the_first_lb_else_the_first_app_host_else_the_first_host_given():
    farm = s.validate({"hosts": [{"host": "root@10.0.0.2"}, {"host": "root@10.0.0.3", "roles": ["lb"]}]})
    assert lock.lock_host(farm, ["x"]) == "root@10.0.0.3"
    apps = s.validate({"hosts": [{"host": "root@10.0.0.2"}, {"host": "root@10.0.0.4"}]})
    assert lock.lock_host(apps, ["x"]) == "root@10.0.0.2"
    assert lock.lock_host(s.validate({}), ["root@web1", "root@web2"]) == "root@web1"


def test_a_secret_from_a_command_is_its_output_and_a_failure_is_one_line(tmp_path):
    commands: dict[str, str] = {}
    counter = tmp_path / "asked"
    asked = f"echo x >> {counter}; printf ' s3cret \\n'"
    assert s.read_secrets({"A": f"cmd:{asked}", "B": f"cmd:{asked}"}, commands) == {"A": "s3cret", "B": "s3cret"}
    assert counter.read_text() == "x\n" and commands == {asked: "s3cret"}  # asked once per run
    with pytest.raises(s.SettingsError) as failed:
        s.read_secrets({"KEY": "cmd:echo 'no such item' >&2; echo leaked; exit 4"})
    assert (
        str(failed.value)
        == "secrets.KEY: the command \"echo 'no such item' >&2; echo leaked; exit 4\" exited 4: no such item"
    )
    with pytest.raises(s.SettingsError, match="printed nothing"):
        s.read_secrets({"KEY": "cmd:true"})


@pytest.mark.parametrize(
    ("hooks", "fix"),
    [
        ({"pre_deploy": "/etc/passwd"}, "give the path of a script in the project"),
        ({"pre_deploy": "../x.sh"}, "give the path of a script in the project"),
        ({"before_deploy": "x.sh"}, "not a hook; the hooks are pre_deploy"),
        ({"pre_deploy": "missing.sh"}, "is not an executable file in"),
        ({"pre_deploy": "out.sh"}, "out.sh is a link to .*, outside the project"),
        ({"pre_deploy": "requirements.txt"}, "is not an executable file in"),
    ],
)
def test_a_hook_is_an_executable_script_in_the_project(tmp_path, hooks, fix):
    project = Path(shutil.copytree(SAMPLE, tmp_path / "p"))
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    if "out.sh" in hooks.values():
        (project / "out.sh").symlink_to(outside)
    with pytest.raises(s.SettingsError, match=fix):
        s.validate({"project_path": str(project), "hooks": hooks})


def test_a_hook_that_is_one_loads(tmp_path):
    project = Path(shutil.copytree(SAMPLE, tmp_path / "p"))
    script = project / "bin" / "gate.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    loaded = s.validate({"project_path": str(project), "hooks": {"pre_deploy": "bin/gate.sh"}})
    assert loaded.hooks == {"pre_deploy": "bin/gate.sh"} and Path(loaded.project / "bin/gate.sh").is_file()


@pytest.mark.lab  # root's directories, as on a lock host: it runs where the lab suite runs, as root
def test_a_refused_run_names_a_holder_that_writes_its_record_a_moment_after_its_flock(tmp_path):
    """The winner of two runs at once takes the flock, then writes its record; the run
    it refuses in between waits for that record, and names the holder, not nobody (a CI
    run's refusal said "someone's run (for a while)")."""
    import subprocess

    from deploy import scripts

    lock_dir = tmp_path / "fabstack" / "django"
    lock_dir.mkdir(parents=True)
    assert os.geteuid() == 0 and lock_dir.stat().st_uid == 0
    values = {"LOCK_DIR": str(lock_dir), "AUDIT_LOG": str(tmp_path / "audit.log"), "LOCK_ALIVE": 10}
    # the winner: the flock now, its record 0.5 s later (a slow moment of a busy host)
    record = "who=ann@laptop\ntask=deploy\nrelease=abc123\nstate=held\nsince=1\nholder=$$\n"
    winner = subprocess.Popen(
        ["sh", "-c", f'exec 9< "$1"; flock 9; sleep 0.5; printf "{record}" > "$1/lock"; sleep 3', "sh", lock_dir]
    )
    try:
        deadline = time.monotonic() + 5
        while subprocess.run(["flock", "-n", str(lock_dir), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "the winner never took the flock"
            time.sleep(0.01)
        shell = scripts.call(["lock.sh"], "lock_take", values=values)
        refused = subprocess.run(["sh", "-c", shell.text], capture_output=True, text=True)
    finally:
        winner.kill()
        winner.wait()
    assert refused.returncode == 3, refused
    assert refused.stdout.startswith("busy\n") and "who=ann@laptop" in refused.stdout, refused.stdout
