"""Issue 19 on real lab hosts: logs rotated under load, a full disk seen by check and
refused by deploy, security updates only, sshd checked, and the role firewall on a farm
(what it lets in, and rules that shut fab out rolling back by themselves)."""

from __future__ import annotations

import re
import socket
import time

import pytest
import yaml
from conftest import ColdRun, Load, Remote, fab, get, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab


def settings_with(tmp_path, cold: ColdRun, name: str, **changes) -> str:
    base = yaml.safe_load(cold.settings.read_text()) or {}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **changes}))
    return str(path)


def closed(address: str, port: int) -> bool:
    """No TCP connection to address:port within 3 s (dropped or refused)."""
    try:
        with socket.create_connection((address, port), timeout=3):
            return False
    except OSError:
        return True


def test_logs_rotate_under_load_without_a_failed_request(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path):
    (host,) = lab.up(count=1, init="systemd", prefix="rot", snapshot=deployed_snapshot)
    settings = settings_with(tmp_path, cold, "rotate", log_keep=3, log_max_size="1M")
    first = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert first.code == 0, first
    r = Remote(host)
    try:
        assert r.run("systemctl is-active fabstack-django-logrotate.timer").strip() == "active"
        conf = "/etc/fabstack/django/logrotate.conf"
        state = "/var/lib/logrotate/fabstack-django.status"
        with Load(host.address, clients=5, max_requests=3000) as load:
            deadline = time.monotonic() + 20
            while load.sent < 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            r.run(f"logrotate --force --state {state} {conf}")  # what the hourly timer runs, forced
            rotated_at = load.sent
            while load.sent < rotated_at + 100 and time.monotonic() < deadline + 20:
                time.sleep(0.1)
        assert load.sent >= rotated_at + 100 and load.failed == 0, (load.sent, load.failed)
        assert r.run("ls /var/log/django").split().count("access.log.1.gz") == 1
        assert "access.log.1.gz" in r.run("ls /var/log/nginx/django").split()
        assert (
            r.run("gzip -t /var/log/django/access.log.1.gz /var/log/nginx/django/access.log.1.gz && echo ok") == "ok\n"
        )
        # the new files take the lines that came after: gunicorn and nginx reopened them
        assert int(r.run("grep -c 'GET / ' /var/log/django/access.log").strip()) > 0
        assert int(r.run("grep -c 'GET / ' /var/log/nginx/django/access.log").strip()) > 0
        assert r.run("stat -c '%U:%G %a' /var/log/django/access.log").strip() == "django:adm 640"
    finally:
        r.conn.close()
    again = fab("-H", host.target, "provision", settings=settings)
    assert again.code == 0 and again.changed() == 0, again


def test_a_full_disk_fails_check_and_deploy_refuses_while_the_site_serves(
    lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path
):
    (host,) = lab.up(count=1, init="sshd", prefix="full", snapshot=deployed_snapshot)
    r = Remote(host)
    try:  # the app on a filesystem of its own, 200 MB (a tmpfs, so filling it fills no real disk)
        r.run("cp -a /srv /srv.orig && mount -t tmpfs -o size=200m tmpfs /srv && cp -a /srv.orig/. /srv/")
        settings = settings_with(tmp_path, cold, "full", min_free_disk_mb=100)
        converged = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert converged.code == 0, converged
        healthy = fab("-H", host.target, "check", "status", settings=settings)
        assert healthy.code == 0 and "disk 100+ MB free: ok" in healthy.out, healthy
        free_kb = int(r.run("df -Pk /srv | awk 'NR == 2 { print $4 }'"))
        r.run(f"fallocate -l {(free_kb - 20 * 1024) * 1024} /srv/filler")  # 20 MB left
        full = fab("-H", host.target, "check", settings=settings)
        assert full.code == 1 and re.search(r"only (1[0-9]|20) MB free on /srv \(min_free_disk_mb 100\)", full.out), (
            full
        )
        release = r.run("readlink /srv/django/current")
        changed = settings_with(tmp_path, cold, "full2", min_free_disk_mb=100,
                                project_path=sample_variant(tmp_path, "bigger", title="Release bigger"))  # fmt: skip
        refused = fab("-H", host.target, "deploy", settings=changed)
        assert refused.code == 1 and re.search(r"only (1[0-9]|20) MB free on /srv, and this release needs", refused.out)
        assert "nothing was changed" in refused.out
        assert r.run("readlink /srv/django/current") == release
        assert r.run("ls /srv/django/releases | grep -c partial || true").strip() == "0"
        assert get(f"http://{host.address}/")[0] == 200  # the site serves on
        # sshd taking passwords again (a drop-in read before the image's): check names it
        r.run("echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/10-test.conf")
        loose = fab("-H", host.target, "check", settings=settings)
        assert "ssh password login off: failed: sshd accepts passwords" in loose.out, loose
        r.run("rm -f /srv/filler /etc/ssh/sshd_config.d/10-test.conf")
        assert fab("-H", host.target, "check", settings=settings).code == 0
    finally:
        r.conn.close()


def test_security_updates_only_no_reboot_and_status_shows_pending(lab: Lab, cold: ColdRun, deployed_snapshot: str):
    (host,) = lab.up(count=1, init="systemd", prefix="upd", snapshot=deployed_snapshot)
    run = fab("-H", host.target, "provision", "status", settings=cold.settings)
    assert run.code == 0, run
    r = Remote(host)
    try:
        patterns = r.run("apt-config dump Unattended-Upgrade::Origins-Pattern")
        assert patterns.count("Origins-Pattern::") == 2 and patterns.count("-security") == 2, patterns
        assert "Allowed-Origins::" not in r.run("apt-config dump Unattended-Upgrade::Allowed-Origins")
        assert r.run("apt-config dump Unattended-Upgrade::Automatic-Reboot").strip().endswith('"false";')
        assert 'APT::Periodic::Unattended-Upgrade "1";' in r.run("apt-config dump APT::Periodic::Unattended-Upgrade")
        dry = r.run("unattended-upgrade --dry-run --debug 2>&1 | grep -i 'allowed origins' || true")
        assert "security" in dry.lower() and "label=debian," not in dry.lower(), dry
    finally:
        r.conn.close()
    row = [line for line in run.out.splitlines() if line.startswith(host.target) and " running " in line]
    assert row and ("free  none" in row[0] or " pending (" in row[0]), run.out


@pytest.fixture(scope="module")
def farm(lab: Lab, deployed_snapshot: str):
    return lab.up(count=3, init="systemd", prefix="fw", snapshot=deployed_snapshot)


def farm_settings(tmp_path, farm, cold: ColdRun, name: str, **changes) -> str:
    lb, *apps = farm
    inventory = [{"host": lb.target, "roles": ["lb"]}, *({"host": a.target} for a in apps)]
    return settings_with(tmp_path, cold, name, hosts=inventory, firewall=True, connect_timeout=5, **changes)


def test_the_role_firewall_lets_in_what_each_role_serves(farm, cold: ColdRun, tmp_path):
    lb, app1, app2 = farm
    settings = farm_settings(tmp_path, farm, cold, "firewall")
    run = fab("provision", "deploy", settings=settings)
    if run.code != 0:
        pytest.fail(f"the firewall farm's provision failed:\n{run}", pytrace=False)  # whole, not cut
    assert get(f"http://{lb.address}/")[0] == 200  # the public port of the lb: open
    assert closed(app1.address, 8080) and closed(app2.address, 8080)  # the app port, from here: dropped
    assert closed(app1.address, 80)
    edge = Remote(lb)
    try:  # from the lb, the app port is open
        assert edge.run(f"curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' http://{app1.address}:8080/") == "200"
    finally:
        edge.conn.close()
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again


def test_rules_that_shut_fab_out_roll_back_by_themselves(farm, cold: ColdRun, tmp_path):
    lb, app1, _ = farm
    good = farm_settings(tmp_path, farm, cold, "good")
    assert fab("provision", settings=good).code == 0
    r = Remote(app1)
    try:
        before = r.run("nft list table inet fabstack_django")
    finally:
        r.conn.close()
    wrong = farm_settings(tmp_path, farm, cold, "wrong", ssh_from=["192.0.2.99"])  # not this machine
    started = time.monotonic()
    run = fab("-H", app1.target, "provision", settings=wrong, timeout=240)
    took = time.monotonic() - started
    assert run.code == 1 and "the new firewall rules shut fab out" in run.out, run
    assert "came back by themselves" in run.out and took < 120, (took, run.out)
    r = Remote(app1)  # a new SSH connection: the rules before are back
    try:
        assert r.run("nft list table inet fabstack_django") == before
        assert "192.0.2.99" not in r.run("cat /etc/fabstack/django/firewall.nft")  # and are the ones kept
    finally:
        r.conn.close()
    assert fab("provision", settings=good).changed() == 0
