"""Issue 21 on lab hosts: code running as the app user (a compromised Django app, a
malicious dependency) plants symlinks at every path root touches in the app's writable
directories, then every task runs. Nothing outside the app's own tree changes, nothing
root-only is printed, and fabstack names the path it refused."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ColdRun, Remote, fab, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab

MANAGERS = ("nohup", "systemd", "supervisor")
# Every file but the app's own tree (/srv/django), logs and package state, which tasks
# change by design: size, mtime, mode, owner; and every file in /etc by content.
SNAPSHOT = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /srv/django "
    "-o -path /var/log -o -path /var/lib -o -path /var/cache \\) -prune -o -type f -printf '%p %s %T@ %m %u:%g\\n' | sort; "
    "find /etc -xdev -type f -exec sha256sum {} + | sort -k2"
)
AS_APP = "setpriv --reuid=django --regid=django --init-groups --reset-env env -C /srv/django/shared sh -c"
# What the compromised app does: each link points at a file root must never write, chown or show.
PLANT = """
cd /srv/django/shared/data && rm -f secret_key && ln -s /etc/passwd secret_key
ln -sf /etc/passwd secret_key.new; ln -sf /etc/passwd secret_key.fabstack-new
cd /var/log/django && for f in gunicorn.out supervisor.out access.log error.log; do rm -f $f; done
ln -s /etc/profile.d/zz-owned.sh gunicorn.out && ln -s /etc/shadow supervisor.out
ln -s /etc/shadow access.log && ln -s /etc/shadow error.log
echo 1 > /srv/django/run/gunicorn.pid
cd /srv/django/shared/media && ln -sf /etc/shadow stolen && echo private > .env
"""


@pytest.fixture(scope="module")
def hosts(lab: Lab, deployed_snapshot: str):
    """One deployed host per process manager (supervisor's on a systemd boot)."""
    return dict(
        zip(
            MANAGERS,
            lab.up(count=1, init="sshd", prefix="cpn", snapshot=deployed_snapshot)
            + lab.up(count=2, init="systemd", prefix="cps", snapshot=deployed_snapshot),
            strict=True,
        )
    )


def settings_for(tmp_path, cold: ColdRun, manager: str):
    path = tmp_path / f"{manager}.yaml"
    path.write_text(cold.settings.read_text() + f"process_manager: {manager}\n")
    return path


def attack(host, settings, project: str) -> tuple[list, str, str]:
    """Converge, plant, then run every task; (runs, snapshot before, snapshot after)."""
    ready = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert ready.code == 0, ready
    r = Remote(host)
    before = r.run(SNAPSHOT)
    r.run(f"{AS_APP} {_quote(PLANT)}")
    runs = [
        fab("-H", host.target, *task, settings=settings)
        for task in (
            ("provision",),
            ("deploy", "--project", project),
            ("restart",),
            ("reload",),
            ("logs", "--lines", "50"),
            ("status",),
            ("check",),
            ("rollback",),
        )
    ]
    return runs, before, r.run(SNAPSHOT)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_the_app_user_cannot_make_root_write_or_show_anything(hosts, cold, tmp_path):
    project = sample_variant(tmp_path, "v2", title="Version two")
    shadow = Remote(hosts["nohup"]).run("cat /etc/shadow").splitlines()
    with ThreadPoolExecutor(len(MANAGERS)) as pool:
        outcomes = dict(
            zip(
                MANAGERS,
                pool.map(lambda m: attack(hosts[m], settings_for(tmp_path, cold, m), project), MANAGERS),
                strict=True,
            )
        )
    for manager, (runs, before, after) in outcomes.items():
        assert before == after, f"{manager}: files outside the app's tree changed"
        shown = "\n".join(run.out + run.err for run in runs)
        leaked = [line for line in shadow if line in shown]
        assert not leaked, f"{manager}: root-only content shown: {leaked}"
        provision = runs[0]
        assert provision.code == 1, provision
        assert "refused /srv/django/shared/data/secret_key: it is a symlink (to /etc/passwd)" in provision.out
        r = Remote(hosts[manager])
        assert r.run("stat -c '%U:%G %a' /etc/passwd /etc/shadow").split("\n")[:2] == [
            "root:root 644",
            "root:shadow 640",
        ]
        assert r.run("ls /etc/profile.d/zz-owned.sh 2>&1 || true").startswith("ls: cannot access")
    # nginx serves neither a link the app planted among the uploads nor a dotfile there
    address = hosts["nohup"].address
    for path in ("/media/stolen", "/media/.env"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}{path}", timeout=10)
        assert refused.value.code in (403, 404), path


def test_a_listener_the_app_opens_is_found_whatever_its_pidfile_says(hosts, cold, tmp_path):
    host = hosts["systemd"]
    settings = settings_for(tmp_path, cold, "systemd")
    r = Remote(host)
    # after the attack above: remove what the app planted, as the refusal said, and run again
    r.run("find /srv/django/shared/data /var/log/django -type l -delete")
    recovered = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert recovered.code == 0, recovered
    clean = fab("-H", host.target, "check", settings=settings)
    assert clean.code == 0, clean
    rogue = "setsid python3 -m http.server --bind 0.0.0.0 8765 > /dev/null 2>&1 < /dev/null &"
    r.run(f"{AS_APP} {_quote(rogue + ' echo 1 > /srv/django/run/gunicorn.pid')}")
    try:
        r.run("for i in $(seq 50); do ss -Hltn | grep -q ':8765 ' && break; sleep 0.1; done")
        found = fab("-H", host.target, "check", settings=settings)
        assert found.code == 1, found
        assert "step 'gunicorn only through nginx' failed: the app user listens on 0.0.0.0:8765" in found.out
    finally:
        r.run("pkill -u django -f 'http.server' || true")
