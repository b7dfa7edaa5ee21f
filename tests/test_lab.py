"""The lab itself: real hosts over strict SSH, isolation, snapshots, and a clean down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TEST_SUBNET, ColdRun, Remote, fab
from fabric import Config

from deploy.connection import ConnectError, connect
from deploy.lab import Lab, LabError

pytestmark = pytest.mark.lab


def test_strict_ssh_to_lab_hosts_with_no_extra_flag(lab: Lab):
    (host,) = lab.up(count=1, init="sshd", prefix="key")
    conn = connect(host.target, None, [], 10)  # known_hosts comes from the lab by default
    assert conn.run("hostname", hide=True, in_stream=False).stdout.strip() == "key1"
    conn.close()
    proc = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}",
         host.target, "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_unknown_and_changed_host_keys_are_refused(lab: Lab, tmp_path, monkeypatch):
    (host,) = lab.up(count=1, init="sshd", prefix="key")
    key = Config(overrides={"connect_kwargs": {"key_filename": str(Path.home() / ".ssh" / "id_ed25519")}})
    monkeypatch.setenv("FABSTACK_LAB_DIR", str(tmp_path))  # hide the lab's known_hosts
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConnectError, match="host key unknown; check its fingerprint.*ssh-keyscan"):
        connect(host.target, None, [], 10)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    forged = tmp_path / "known_hosts_forged"
    forged.write_text(f"{host.address} {' '.join((tmp_path / 'other.pub').read_text().split()[:2])}\n")
    with pytest.raises(ConnectError, match="HOST KEY CHANGED"):  # accept-new never takes a changed key
        connect(host.target, None, [str(forged)], 10, accept_new=True)
    with pytest.raises(ConnectError, match="HOST KEY CHANGED") as changed:
        connect(host.target, None, [str(forged)], 10)
    fix = f"ssh-keygen -R {host.address} -f {forged}"  # the file that holds the key, not ~/.ssh/known_hosts
    assert str(changed.value).endswith(fix), changed.value
    subprocess.run(fix.split(), check=True, capture_output=True)
    with pytest.raises(ConnectError, match="host key unknown"):  # the old key is gone from where fabstack read it
        connect(host.target, None, [str(forged)], 10)
    assert not (tmp_path / ".ssh" / "known_hosts").exists()
    conn = connect(host.target, key, [], 10, accept_new=True)  # first contact: trusted and recorded
    assert conn.run("hostname", hide=True, in_stream=False).stdout.strip() == "key1"
    conn.close()
    assert (tmp_path / ".ssh" / "known_hosts").read_text().startswith(f"{host.address} ")
    connect(host.target, key, [], 10).close()  # from now on it is a known host


def test_hosts_do_not_share_files_or_processes(lab: Lab):
    a, b = lab.up(count=2, init="sshd", prefix="iso")
    ra, rb = Remote(a), Remote(b)
    ra.run("echo only-on-a > /root/marker; setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo started")
    assert rb.run("cat /root/marker 2>/dev/null || echo absent").strip() == "absent"
    assert "sleep 300" not in rb.run("ps -eo args")
    assert "sleep 300" in ra.run("ps -eo args")
    assert ra.run("hostname").strip() == "iso1" and rb.run("hostname").strip() == "iso2"
    assert ra.run("cat /etc/ssh/ssh_host_ed25519_key.pub") != rb.run("cat /etc/ssh/ssh_host_ed25519_key.pub")


def test_systemd_hosts_keep_their_units_apart(lab: Lab):
    # CI22: three hosts started the same firewall unit at once and one failed 219/CGROUP:
    # all nspawn hosts shared one cgroup tree, so a unit ending in one removed the other's.
    hosts = lab.up(count=3, init="systemd", prefix="cg")
    inits = {Path(f"/proc/{h.pid}/task/{h.pid}/children").read_text().split()[0] for h in hosts}
    cgroups = {Path(f"/proc/{pid}/cgroup").read_text() for pid in inits}
    assert len(cgroups) == 3, cgroups  # each host's systemd in a cgroup of its own
    starts = "for n in $(seq 1 40); do systemd-run -q --wait -u same$n /bin/true || echo FAILED same$n; done"
    with ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(lambda h: Remote(h).run(starts), hosts))
    assert outputs == ["", "", ""], outputs  # 120 starts of units with the same names at once


def test_apt_and_pip_work_through_the_proxy(lab: Lab, deployed_snapshot: str):
    (host,) = lab.up(count=1, init="sshd", prefix="pkg", snapshot=deployed_snapshot)
    r = Remote(host)
    r.run("DEBIAN_FRONTEND=noninteractive apt-get -q update && apt-get install -y -q hello")
    assert "Hello, world!" in r.run("hello")
    r.run("python3 -m venv /tmp/v && /tmp/v/bin/pip install -q six")
    assert r.run("/tmp/v/bin/python -c 'import six; print(six.__name__)'").strip() == "six"
    assert r.run("ip route").strip().splitlines()[0].startswith(lab.network.net.with_prefixlen.split("/")[0])
    assert "default" not in r.run("ip route")  # no way out but the proxy


def test_port_80_answers_from_the_controller(cold: ColdRun):
    with urllib.request.urlopen(f"http://{cold.hosts[0].address}/", timeout=10) as response:
        assert response.status == 200


def test_snapshot_hosts_start_with_what_was_saved(lab: Lab, deployed_snapshot: str):
    (host,) = lab.up(count=1, init="systemd", prefix="snap", snapshot=deployed_snapshot)
    r = Remote(host)
    assert r.run("timeout 30 systemctl is-system-running --wait || true").strip() in ("running", "degraded")
    assert "/srv/django/venv/bin/gunicorn" in r.run("ls /srv/django/venv/bin/gunicorn")
    assert r.run("hostname").strip() == "snap1"
    assert r.run("ls /run/nginx.pid 2>/dev/null || echo none").strip() != "none"  # nginx enabled, booted with it


def test_up_is_idempotent_and_rebuilds_a_killed_host(lab: Lab):
    (host,) = lab.up(count=1, init="sshd", prefix="idem")
    (again,) = lab.up(count=1, init="sshd", prefix="idem")
    assert again.pid == host.pid
    for pid in lab.network.netns_pids(host.netns) + [host.pid]:
        os.kill(pid, signal.SIGKILL)  # what a killed session leaves: mounts, netns, links
    (rebuilt,) = lab.up(count=1, init="sshd", prefix="idem")
    assert rebuilt.pid != host.pid
    assert Remote(rebuilt).run("hostname").strip() == "idem1"


def test_up_refuses_a_subnet_used_by_something_else(tmp_path):
    subprocess.run(["ip", "link", "add", "fstestdummy", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.79.5.1/24", "dev", "fstestdummy"], check=True)
        with pytest.raises(LabError, match=r"10\.79\.5\.0/24 is already used by fstestdummy"):
            Lab(tmp_path, subnet="10.79.5.0/24").up(count=1)
    finally:
        subprocess.run(["ip", "link", "del", "fstestdummy"])


def _machine_state(home: Path, tag: str) -> dict:
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(home) in ln]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "mounts": len(mounts),
        "netns": len([n for n in netns if n.startswith(f"fs{tag}-")]),
        "links": links.count(f"fs{tag}-") + links.count(f"fsbr{tag}"),
        "procs": procs.count(str(home)),
    }


def test_down_leaves_nothing_behind():
    home = Path("/var/lib/fabstack-lab-test-down")
    separate = Lab(home, subnet="10.80.0.0/24")
    separate.down()  # leftovers of an earlier, killed run
    before = _machine_state(home, separate.tag)
    separate.up(count=1, init="systemd", prefix="dn") + separate.up(count=1, init="sshd", prefix="dns")
    during = _machine_state(home, separate.tag)
    assert during["mounts"] >= 2 and during["netns"] == 2 and during["procs"] >= 1
    result = subprocess.run(
        [sys.executable, "-c", "from deploy.lab import Lab; import sys; print(Lab(sys.argv[1], subnet='10.80.0.0/24').down())", str(home)],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert result.stdout.strip() == "2", result.stderr
    assert _machine_state(home, separate.tag) == before
    leftovers = {"mounts": [], "netns": [], "links": [], "host_dirs": [], "proxy": False, "cgroups": []}
    assert separate.leftovers() == leftovers


def test_lab_tasks_from_fab(lab: Lab):
    up = fab("lab.up", "--count", "1", "--init", "sshd", "--prefix", "cli")
    assert up.code == 0, up
    assert f"cli1 root@{TEST_SUBNET.rsplit('.', 1)[0]}." in up.out
    status = fab("lab.status")
    assert "cli1" in status.out and "running" in status.out
    bad = fab("lab.up", "--init", "docker")
    assert bad.code == 2 and "unknown init 'docker'" in bad.err
