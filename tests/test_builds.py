"""Issue 20 on real lab hosts: the virtualenv built once per kind of host and sent to the
others from the controller's cache, so an app host with no way to the internet
provisions and deploys."""

from __future__ import annotations

import pytest
from conftest import BUILD_CACHE, ColdRun, Remote, fab, get, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab
# every .py file of the virtualenv's packages, hashed: the same bits or not
VENV_BITS = "cd /srv/django/venv && find lib -type f -name '*.py' | sort | xargs sha256sum | sha256sum"


def test_the_cold_run_built_the_virtualenv_once_for_both_hosts(cold: ColdRun, remote):
    assert cold.first.code == 0, cold.first
    assert len(cold.builds) == 1, cold.builds  # two hosts of one kind: one build (CI20: other tests' apps add theirs)
    bits = {remote(host).run(VENV_BITS) for host in cold.hosts}
    assert len(bits) == 1, bits


def test_a_host_with_no_way_out_provisions_and_deploys_from_the_controller_s_build(
    lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path
):
    (host,) = lab.up(count=1, init="sshd", prefix="off", snapshot=deployed_snapshot)
    r = Remote(host)
    try:  # no virtualenv, and no proxy: the lab's hosts have no route, the proxy was their only way out
        r.run(
            "rm -rf /srv/django/venv /etc/apt/apt.conf.d/99fabstack-lab-proxy && sed -i '/proxy/Id' /etc/environment"
            " && apt-get remove -y -q logrotate > /dev/null"  # a package to install: through apt_proxy only
        )
    finally:
        r.conn.close()
    r = Remote(host)  # a new login: without the proxy variables
    try:
        assert "unreachable" in r.run("ip route get 151.101.0.223 2>&1 || true")  # no route to the internet
        assert "proxy" not in r.run("env").lower()
        assert r.run("curl -sS --max-time 5 https://pypi.org/simple/ > /dev/null 2>&1 && echo out || echo none") == (
            "none\n"
        )
        settings = tmp_path / "offline.yaml"
        settings.write_text(cold.settings.read_text() + f"apt_proxy: {lab.network.proxy_url}\n")
        run = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert run.code == 0 and "virtualenv: changed" in run.out, run
        assert "ii  logrotate" in r.run("dpkg -l logrotate")  # apt went through the apt_proxy setting
        assert get(f"http://{host.address}/")[0] == 200
        assert r.run(VENV_BITS) == Remote(cold.hosts[0]).run(VENV_BITS)  # the same bits as the build host's
        status = fab("-H", host.target, "status", settings=settings)
        assert status.code == 0, status
    finally:
        r.conn.close()


def test_a_project_s_requirements_reach_a_host_with_no_way_out_as_wheels_built_once(
    lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path
):
    online, offline = lab.up(count=2, init="sshd", prefix="whl", snapshot=deployed_snapshot)
    r = Remote(offline)
    try:
        r.run("rm -f /etc/apt/apt.conf.d/99fabstack-lab-proxy && sed -i '/proxy/Id' /etc/environment")
    finally:
        r.conn.close()
    project = sample_variant(tmp_path, "needs-six", append={"requirements.txt": "six==1.16.0\n"})
    settings = tmp_path / "six.yaml"
    settings.write_text(cold.settings.read_text() + f"project_path: {project}\n")
    # the host that builds needs the index (a host that cannot fails, the others build
    # for themselves): the online host first, then the offline one from its wheels
    built = fab("-H", online.target, "provision", "deploy", settings=settings)
    assert built.code == 0, built
    assert len(list((BUILD_CACHE / "builds").glob("wheels-*.tar.gz"))) == 1
    run = fab("-H", offline.target, "provision", "deploy", settings=settings)
    assert run.code == 0, run
    for host in (online, offline):
        r = Remote(host)
        try:
            assert r.run("/srv/django/venv/bin/python -c 'import six; print(six.__version__)'") == "1.16.0\n"
        finally:
            r.conn.close()


def test_root_builds_where_no_other_user_can_have_made_the_file_first(
    lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path
):
    """A local user who plants a file at a build archive's name (the key is no secret:
    the OS, the architecture, the Python, the requirements) gets nothing: root packs in a
    new directory only it can write, and the controller keeps only the bits it packed."""
    (host,) = lab.up(count=1, init="sshd", prefix="tmp", snapshot=deployed_snapshot)
    project = sample_variant(tmp_path, "six-again", append={"requirements.txt": "six==1.16.0 ; python_version>='3'\n"})
    settings = tmp_path / "six.yaml"
    settings.write_text(cold.settings.read_text() + f"project_path: {project}\n")
    r = Remote(host)
    try:
        first_cache = tmp_path / "first"
        built = fab(
            "-H", host.target, "provision", "deploy", settings=settings, env={"FABSTACK_CACHE": str(first_cache)}
        )
        assert built.code == 0, built
        (archive,) = (first_cache / "builds").glob("wheels-*.tar.gz")
        planted = [f"/tmp/fabstack-{archive.name}", f"/tmp/fabstack-{archive.name.removeprefix('wheels-')}"]
        r.run(
            "useradd -m mallory && "
            + " && ".join(f"su mallory -c 'echo planted > {p} && chmod 666 {p}'" for p in planted)
        )
        r.run("rm /srv/django/venv/.fabstack-project-requirements")  # the wheels are built again, from the index
        again_cache = tmp_path / "again"
        again = fab("-H", host.target, "deploy", settings=settings, env={"FABSTACK_CACHE": str(again_cache)})
        assert again.code == 0, again
        for path in planted:  # never opened by root: mallory's, as she left them
            assert r.run(f"stat -c '%U %a' {path} && cat {path}") == "mallory 666\nplanted\n"
        assert (
            r.run("stat -c '%U:%G %a' /var/lib/fabstack /var/lib/fabstack/builds") == "root:root 755\nroot:root 700\n"
        )
        assert r.run("ls -A /var/lib/fabstack/builds") == ""  # each build's directory removed once copied
        assert r.run("find /tmp -mindepth 1 -user root -newer /srv/django/releases") == ""  # and the staging directory
        rebuilt = again_cache / "builds" / archive.name
        assert rebuilt.is_file() and oct(rebuilt.stat().st_mode & 0o777) == "0o600"
        assert r.run("/srv/django/venv/bin/python -c 'import six; print(six.__version__)'") == "1.16.0\n"
    finally:
        r.conn.close()
