"""Issue 7: a non-root SSH user with sudo, as real servers have: passwordless, and with a
password typed at fab's prompt. Every command runs as root through `sudo sh -c`, so no
step depends on `cd` or a redirect under sudo."""

from __future__ import annotations

import urllib.request

import pytest
from conftest import Remote, changed_paths, fab, in_terminal

from deploy.lab import Lab

pytestmark = pytest.mark.lab

PASSWORD = "Tr0ub4dor-sudo"
SUDOERS = {"nopass": "deployer ALL=(ALL) NOPASSWD:ALL", "password": "deployer ALL=(ALL) ALL"}


@pytest.fixture(scope="module")
def sudo_hosts(lab: Lab):
    """Two fresh hosts with a `deployer` user that logs in with the lab's key: one with
    passwordless sudo, one whose sudo asks for a password."""
    hosts = lab.up(count=2, init="sshd", prefix="sudo")
    for host, rule in zip(hosts, SUDOERS.values(), strict=True):
        r = Remote(host)
        r.run(
            "useradd -m -s /bin/bash deployer && install -d -o deployer -g deployer -m 700 /home/deployer/.ssh "
            "&& install -o deployer -g deployer -m 600 /root/.ssh/authorized_keys /home/deployer/.ssh/ "
            f"&& echo 'deployer:{PASSWORD}' | chpasswd && echo '{rule}' > /etc/sudoers.d/deployer "
            "&& chmod 440 /etc/sudoers.d/deployer"
        )
        r.conn.close()
    return hosts


def serves(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
        return "It works" in response.read().decode()


def check_host(host) -> None:
    r = Remote(host)
    assert r.run(f"ps -o user= -p {r.master()}").strip() == "django"
    assert r.run("stat -c '%U %a' /srv/django/venv /srv/django/shared/data/secret_key").split() == [
        "root", "755", "django", "600"
    ]  # fmt: skip
    r.conn.close()
    assert serves(host.address)


def test_passwordless_sudo_user_provisions_and_deploys(sudo_hosts, tmp_path):
    host = sudo_hosts[0]
    target = f"deployer@{host.address}"
    cache = tmp_path / "cache"  # empty: this host builds the virtualenv, and the deployer copies it out
    first = fab("-H", target, "provision", "deploy", env={"FABSTACK_CACHE": str(cache)})
    assert first.code == 0, first
    assert [p.stat().st_mode & 0o777 for p in (cache / "builds").glob("*.tar.gz")] == [0o600], first
    check_host(host)
    again = fab("-H", target, "provision", "deploy")
    assert again.code == 0 and again.changed() == 0, again


def test_sudo_password_typed_at_the_prompt(sudo_hosts):
    host = sudo_hosts[1]
    target = f"deployer@{host.address}"
    before = Remote(host).tree()
    no_password = fab("-H", target, "provision")
    assert no_password.code == 1 and "sudo rejected the password for deployer" in no_password.out, no_password
    code, shown = in_terminal(
        "--prompt-for-sudo-password", "-H", target, "provision", answers={"'sudo.password'": "not-it"}
    )
    assert code == 1 and "sudo rejected the password for deployer; give the right one with" in shown, shown
    assert changed_paths(before, Remote(host).tree()) == []  # a refused sudo changed nothing
    code, shown = in_terminal(
        "--prompt-for-sudo-password", "-H", target, "provision", "deploy", answers={"'sudo.password'": PASSWORD}
    )
    assert code == 0, shown
    assert PASSWORD not in shown  # typed without echo, and never printed
    check_host(host)
