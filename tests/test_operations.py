"""Issue 19 without a host: log rotation, disk and memory, security updates and the
role firewall as operations from facts (the lab tests are tests/test_health.py)."""

from __future__ import annotations

import http.server
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import REPO
from test_steps import calls, drive, file_facts, host, with_facts, written

from deploy import reports, scripts
from deploy import settings as s
from deploy.checks import resource_findings, ssh_findings
from deploy.facts import CheckRead, HostFacts
from deploy.ops import UNREACHABLE, Claim, Upload
from deploy.release import Release, release_of
from deploy.results import StepFailed
from deploy.runner import Session
from deploy.settings.project import Requirements
from deploy.steps import firewall, release, rotation, server


def test_logs_are_rotated_hourly_by_a_timer_or_by_cron_and_gunicorn_reopens_its_files():
    systemd = host(with_facts(pid1="systemd"))
    ops = drive(rotation.logs_rotated(systemd))
    assert calls(ops) == [
        *written("/etc/fabstack/django/logrotate.conf"),
        *written("/etc/systemd/system/fabstack-django-logrotate.service"),
        *written("/etc/systemd/system/fabstack-django-logrotate.timer"),
        "command: timers_enabled fabstack-django-logrotate.timer",
    ]
    conf = ops[0].content
    assert "/var/log/django/*.log {\n    su django adm\n    daily\n    maxsize 100M\n    rotate 14" in conf
    assert "pid=$(systemctl show -p MainPID --value gunicorn-django.service)" in conf
    assert "/var/log/django/*.out {" in conf and "copytruncate" in conf
    assert "/var/log/nginx/django/*.log {" in conf and 'kill -USR1 "$(cat /run/nginx.pid)"' in conf
    files = [(op.path, op.content) for op in ops if type(op).__name__ == "Diff"]
    converged = with_facts(pid1="systemd", logrotate_timer="active")
    for path, content in files:
        converged |= file_facts(path, content)
    assert drive(rotation.logs_rotated(host(converged))) == []
    nohup = host(with_facts(pid1="sshd", systemd=""), log_keep=3, log_max_size="5M")
    ops = drive(rotation.logs_rotated(nohup))
    assert calls(ops)[-4:] == [*written("/etc/cron.d/fabstack-django-logrotate"), "command: cron_started"]
    assert "pid=$(cat /srv/django/state/master.pid" in ops[0].content and "maxsize 5M\n    rotate 3" in ops[0].content
    assert "supervisorctl pid gunicorn-django" in rotation.reopen(host(process_manager="supervisor"))
    lb = host(target="root@10.0.0.10", hosts=[{"host": "root@10.0.0.10", "roles": ["lb"]}, "root@10.0.0.11"])
    assert "/var/log/django/" not in drive(rotation.logs_rotated(lb))[0].content  # nginx's logs only


def test_a_release_that_would_not_fit_is_refused_before_anything_changes():
    new = Release(REPO / "templates" / "sample", "staticfiles")
    need_mb = (len(new.archive) + 2 * new.unpacked_bytes) // 2**20 + release.RELEASE_MARGIN_MB
    roomy = host(with_facts(disk_free=str((need_mb + 1) * 1024), disk_mount="/srv"))
    assert drive(release.room_for_release(roomy, new)) == []
    full = host(with_facts(disk_free=str((need_mb - 1) * 1024), disk_mount="/srv"))
    with pytest.raises(StepFailed, match=f"only {need_mb - 1} MB free on /srv, and this release needs about {need_mb}"):
        drive(release.room_for_release(full, new))
    there = host(with_facts(disk_free="1", releases=new.id))  # already on the host: nothing to unpack
    assert drive(release.room_for_release(there, new)) == []


def test_check_fails_on_a_full_disk_or_too_little_memory_and_status_shows_both():
    h = host(min_free_disk_mb=500, min_free_memory_mb=64)
    fine = resource_findings(h, HostFacts.parse(f"disk_free={600 * 1024}\ndisk_mount=/srv\nmem_available=900000\n"))
    assert fine == {"disk 500+ MB free": "", "memory 64+ MB available": ""}
    low = resource_findings(h, HostFacts.parse(f"disk_free={20 * 1024}\ndisk_mount=/srv\nmem_available=1024\n"))
    assert low["disk 500+ MB free"].startswith("only 20 MB free on /srv (min_free_disk_mb 500)")
    assert low["memory 64+ MB available"].startswith("only 1 MB of memory available")
    assert [reports._size_kb(kb) for kb in (79_600_000, 831_488, 640)] == ["75.9G", "812M", "640K"]


def test_security_updates_only_and_a_reboot_only_when_asked():
    ops = drive(server.security_updates(host()))
    assert calls(ops) == [*written("/etc/apt/apt.conf.d/20auto-upgrades"),
                          *written("/etc/apt/apt.conf.d/52fabstack-unattended-upgrades")]  # fmt: skip
    periodic, chosen = ops[0].content, ops[3].content
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in chosen and "-security" in chosen
    assert 'Automatic-Reboot "false"' in chosen and "Reboot-Time" not in chosen
    at = drive(server.security_updates(host(unattended_reboot="03:30")))[3].content
    assert 'Automatic-Reboot "true"' in at and 'Automatic-Reboot-Time "03:30"' in at
    off = drive(server.security_updates(host(unattended_upgrades=False)))
    assert len(off) == 3 and 'Unattended-Upgrade "0"' in off[0].content
    assert reports._updates("3 1", True) == "3 pending (1 security), reboot required"
    assert reports._updates("0 0", False) == "none" and reports._updates("", False) == "-"


def test_check_wants_ssh_by_key_only():
    assert ssh_findings(CheckRead.parse({"ssh_passwords": "no", "ssh_root": "prohibit-password"})) == {
        "ssh password login off": "",
        "ssh root login by key only": "",
    }
    bad = ssh_findings(CheckRead.parse({"ssh_passwords": "yes", "ssh_root": "yes"}))
    assert bad["ssh password login off"].startswith("sshd accepts passwords: set PasswordAuthentication no")
    assert "(PermitRootLogin yes): set PermitRootLogin prohibit-password" in bad["ssh root login by key only"]


FARM = [
    {"host": "root@10.0.0.2", "roles": ["lb"]},
    {"host": "root@10.0.0.11", "roles": ["app"]},
    {"host": "root@10.0.0.12", "roles": ["app"]},
    {"host": "root@10.0.0.20:2222", "roles": ["db"]},
]


def test_the_role_firewall_opens_what_each_role_serves_to_those_it_serves():
    raw = {"hosts": FARM, "firewall": True, "redis": True, "ssh_from": ["192.0.2.0/24"]}
    by_host = {}
    for target in ("root@10.0.0.2", "root@10.0.0.11", "root@10.0.0.20:2222"):
        ops = drive(firewall.rules(host(with_facts(pid1="sh"), target=target, **raw)))
        by_host[target] = next(op.content for op in ops if type(op).__name__ == "Diff")
    lb, app_host, db = by_host.values()
    assert all("policy drop;" in t and "ct state established,related accept" in t for t in by_host.values())
    assert "ip saddr { 192.0.2.0/24 } tcp dport 22 accept" in lb and "tcp dport 80 accept" in lb
    assert "ip saddr { 10.0.0.2 } tcp dport 8080 accept" in app_host and "dport 80 accept" not in app_host
    assert "ip saddr { 192.0.2.0/24 } tcp dport 2222 accept" in db
    assert "ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 5432 accept" in db
    assert "ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 6379 accept" in db and "dport 6379 drop" not in db
    single = next(
        op.content for op in drive(firewall.rules(host(firewall=True))) if getattr(op, "path", "").endswith(".nft")
    )
    assert "# ssh: anywhere\n        tcp dport 22 accept" in single and "tcp dport 80 accept" in single


def test_rules_that_shut_fab_out_are_rolled_back_and_the_run_says_so():
    steps = firewall.rules(host(with_facts(pid1="sh"), firewall=True, ssh_from=["192.0.2.99"]))
    seen, reply = [], None
    with pytest.raises(StepFailed) as failed:
        while True:
            op = steps.send(reply)
            seen.append(op)
            name = type(op).__name__
            reply = {"Upload": "/tmp/stage/firewall.nft", "Reach": UNREACHABLE + "10.0.0.5:22 unreachable: timed out",
                     "Probe": "61\n"}.get(name)  # fmt: skip
    assert "shut fab out (10.0.0.5:22 unreachable: timed out)" in str(failed.value)
    assert "came back by themselves 61 s ago: open SSH to your address in ssh_from" in str(failed.value)
    assert "firewall_keep" not in " ".join(calls(seen)) and calls(seen)[-1] == "probe: firewall_rolled_back 75"


def test_a_virtualenv_built_once_is_unpacked_on_the_other_hosts_of_its_kind(tmp_path):
    h = host(with_facts(venv_marker="old", arch="x86_64", os="debian 12"))
    built = tmp_path / "venv.tar.gz"
    built.write_bytes(b"the bits")
    seen = drive(server.virtualenv(h), build=str(built))
    assert isinstance(seen[0], Claim) and seen[1].content == b"the bits"
    assert calls(seen)[1].startswith("command: unpack_venv /tmp/stage/venv-") and "make_venv" not in " ".join(
        calls(seen)
    )
    other = host(with_facts(venv_marker="old", arch="aarch64", os="debian 12"))  # another kind: another build
    assert seen[0].key != next(op.key for op in drive(server.virtualenv(other)) if isinstance(op, Claim))


def test_the_first_host_to_claim_a_build_makes_it_and_the_others_wait_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FABSTACK_CACHE", str(tmp_path))
    session, answers = Session(), {}
    assert session.claim("a", "k1") == ""  # a builds
    waiter = threading.Thread(target=lambda: answers.update(b=session.claim("b", "k1")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # b waits for a's build
    session.publish("k1", "/cache/k1.tar.gz")
    waiter.join(5)
    assert answers == {"b": "/cache/k1.tar.gz"}
    assert session.claim("c", "k2") == ""
    session.release_builds("c")  # c failed before publishing: the next host builds for itself
    assert session.claim("d", "k2", wait=1) == ""
    (tmp_path / "builds").mkdir()
    (tmp_path / "builds" / "k3.tar.gz").write_bytes(b"cached")
    assert session.claim("e", "k3") == str(tmp_path / "builds" / "k3.tar.gz")  # a cached build: nobody builds


def test_the_project_s_requirements_are_built_as_wheels_once_and_installed_from_them():
    project = REPO / "templates" / "sample"
    new = Release(project, "staticfiles")
    object.__setattr__(new, "needs", Requirements(("six==1.16.0",)))  # a project with a requirement
    built = calls(drive(release.project_requirements(host(), new)))
    assert built[0] == "upload: requirements.txt" and built[1].startswith(
        "publish: build_wheels /tmp/stage/requirements.txt "
    )
    seen = drive(release.project_requirements(host(), new), build=str(REPO / "README.md"))
    assert calls(seen)[2].startswith("command: install_wheels /tmp/stage/requirements.txt /tmp/stage/wheels-")


def nested_project(root: Path) -> Path:
    """startproject's layout as real projects grow it: requirements.txt includes another
    file (which includes a third) and a constraints file."""
    files = {
        "manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n",
        "proj/__init__.py": "", "proj/settings.py": "", "proj/wsgi.py": "",
        "requirements.txt": "-r requirements/production.txt\n-c constraints.txt\n",
        "requirements/production.txt": "-r base.txt  # shared\ndj-database-url>=2\n",
        "requirements/base.txt": "# the framework\nDjango>=5.2,<6\n",
        "constraints.txt": "dj-database-url==2.3.0\n",
    }  # fmt: skip
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_requirements_includes_are_followed_and_constraints_kept_apart(tmp_path):
    project = nested_project(tmp_path)
    new = release_of(s.validate({"project_path": str(project)}))
    assert new.needs.lines == ("Django>=5.2,<6", "dj-database-url>=2")
    assert new.needs.constraints == ("dj-database-url==2.3.0",)
    ops = calls(drive(release.project_requirements(host(), new)))
    assert ops[:2] == ["upload: constraints.txt", "upload: requirements.txt"], ops
    staged = [op for op in drive(release.project_requirements(host(), new)) if isinstance(op, Upload)]
    assert staged[1].content == b"-c /tmp/stage/constraints.txt\nDjango>=5.2,<6\ndj-database-url>=2\n"
    marker = new.requirements_marker
    (project / "constraints.txt").write_text("dj-database-url==2.2.0\n")  # an included file changes: a new build
    assert release_of(s.validate({"project_path": str(project)})).requirements_marker != marker


def test_a_requirements_include_out_of_the_project_or_missing_is_refused_naming_the_key(tmp_path):
    project = nested_project(tmp_path / "p")
    (tmp_path / "elsewhere.txt").write_text("six\n")
    (project / "requirements" / "base.txt").write_text("-r ../../elsewhere.txt\n")
    with pytest.raises(
        s.SettingsError,
        match=r"setting requirements='': requirements/base.txt: -r \.\./\.\./elsewhere.txt leads out of the project",
    ):
        s.validate({"project_path": str(project)})
    with pytest.raises(s.SettingsError, match=r"setting requirements='requirements/none.txt': .* is not a file"):
        s.validate({"project_path": str(project), "requirements": "requirements/none.txt"})


def test_pyproject_dependencies_are_the_requirements_without_a_requirements_file(tmp_path):
    project = nested_project(tmp_path)
    (project / "requirements.txt").unlink()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\ndependencies = ["Django>=5.2", "celery[redis]>=5.4"]\n'
    )
    needs = release_of(s.validate({"project_path": str(project)})).needs
    assert (needs.lines, needs.source) == (("Django>=5.2", "celery[redis]>=5.4"), "pyproject.toml")
    chosen = s.validate({"project_path": str(project), "requirements": "requirements/production.txt"})
    assert release_of(chosen).needs.lines == ("Django>=5.2,<6", "dj-database-url>=2")


def test_apt_goes_through_the_apt_proxy_setting():
    ops = drive(server.apt_packages(host(apt_proxy="http://10.0.0.1:3142")))
    assert calls(ops)[:3] == written("/etc/apt/apt.conf.d/95fabstack-proxy")
    assert 'Acquire::http::Proxy "http://10.0.0.1:3142";' in ops[0].content
    assert drive(server.apt_packages(host())) == []  # none asked: no file, nothing to install


def test_the_new_settings_refuse_bad_values_in_one_line_naming_the_key():
    from deploy import settings as s

    cases = {
        "log_max_size": ("100MB", "is not a size; use a number of bytes with k, M or G"),
        "unattended_reboot": ("3am", "is not a time; use HH:MM"),
        "ssh_from": (["my-laptop"], "is not an address or network"),
        "apt_proxy": ("ftp://mirror", "is not a proxy URL; use http://HOST:PORT"),
        "min_free_disk_mb": (-1, "use a number >= 0"),
        "log_keep": (0, "use a number >= 1"),
    }
    for key, (value, fix) in cases.items():
        with pytest.raises(s.SettingsError) as refused:
            s.validate({key: value})
        assert key in str(refused.value) and fix in str(refused.value) and "\n" not in str(refused.value), refused


@pytest.mark.parametrize(
    ("output", "package"),
    [
        ("error: command 'x86_64-linux-gnu-gcc' failed: No such file or directory", "build-essential"),
        ("error: [Errno 2] No such file or directory: 'x86_64-linux-gnu-gcc'", "build-essential"),  # setuptools 80
        ("  Error: pg_config executable not found.", "libpq-dev"),
        ("src/uwsgi.h:4:10: fatal error: Python.h: No such file or directory", "python3-dev"),
        ("The headers or library files could not be found for jpeg,", "libjpeg-dev"),
    ],
)
def test_a_build_that_lacks_a_compiler_or_headers_names_the_package(output, package):
    script = scripts.text("python.sh") + '\nbuild_hint "$1"'
    said = subprocess.run(["sh", "-c", script, "sh", output], capture_output=True, text=True, check=True).stdout
    assert said.startswith("a requirement builds from source and needs ") and package in said, said
    assert said.rstrip().endswith("to system_packages")


def test_the_project_s_pins_win_over_what_fabstack_adds(tmp_path):
    project = nested_project(tmp_path)
    (project / "requirements" / "base.txt").write_text("Django==5.2.8\npsycopg[c]==3.2.3\n")
    settings = s.validate({"project_path": str(project), "database": "postgresql"})
    ours = server.requirements(settings)
    assert [r.split(">")[0].split("[")[0] for r in ours] == ["gunicorn", "gevent"], ours  # its Django, its psycopg
    (project / "requirements" / "base.txt").write_text("psycopg2-binary==2.9.10\n")  # one driver, whichever
    assert not any(
        r.startswith("psycopg")
        for r in server.requirements(s.validate({"project_path": str(project), "database": "postgresql"}))
    )
    (project / "requirements" / "base.txt").write_text("six\n")
    assert "psycopg[binary]>=3.1" in server.requirements(
        s.validate({"project_path": str(project), "database": "postgresql"})
    )


class Redirecting(http.server.BaseHTTPRequestHandler):
    """/ -> /en/ (a language prefix) -> 200; /secure -> https://same host/; /away -> another site."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        where = {"/": "/en/", "/secure": f"https://{self.headers['Host']}/", "/away": "http://other.example/"}
        if self.path in where and not (self.path == "/secure" and self.headers["X-Forwarded-Proto"] == "https"):
            self.send_response(301)
            self.send_header("Location", where[self.path])
        else:
            self.send_response(200 if self.path in ("/en/", "/secure") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    ("path", "scheme", "code", "said"),
    [
        ("/", "http", 0, ""),  # followed on the same address to its 200
        ("/secure", "http", 1, "HTTP 301 to https://example.com/, and this site serves no HTTPS"),
        ("/secure", "https", 0, ""),  # behind nginx's HTTPS the app sees https and answers
        ("/away", "http", 0, ""),
    ],
)
def test_the_health_check_follows_redirects_and_fails_one_to_https_nothing_serves(path, scheme, code, said):
    server_ = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server_.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server_.server_address[1]}"
        argv = ["python3", "-c", scripts.text("health.py"), address, path, "example.com", "5", "1", scheme]
        run = subprocess.run(argv, capture_output=True, text=True)
    finally:
        server_.shutdown()
    assert run.returncode == code and said in run.stderr, run


def test_a_vendored_archive_in_the_requirements_is_uploaded_and_its_bytes_are_in_the_key(tmp_path):
    project = nested_project(tmp_path)
    (project / "vendor").mkdir()
    (project / "vendor" / "tinyext-0.1.tar.gz").write_bytes(b"an sdist")
    (project / "requirements" / "base.txt").write_text("Django>=5.2,<6\nvendor/tinyext-0.1.tar.gz\n")
    new = release_of(s.validate({"project_path": str(project)}))
    ops = drive(release.project_requirements(host(), new))
    uploads = [op for op in ops if isinstance(op, Upload)]
    names = ["tinyext-0.1.tar.gz", "constraints.txt", "requirements.txt", "requirements-install.txt"]
    assert [u.name for u in uploads] == names
    assert uploads[0].content == b"an sdist"
    assert b"\n/tmp/stage/tinyext-0.1.tar.gz\n" in uploads[2].content  # built from the archive
    assert b"\ntinyext==0.1\n" in uploads[3].content  # installed as the wheel built from it, with no index
    build = [c for c in calls(ops) if "build_wheels" in c]
    assert build == [
        "publish: build_wheels /tmp/stage/requirements.txt "
        f"{new.requirements_marker} /tmp/stage/requirements-install.txt"
    ], build
    marker = new.requirements_marker
    (project / "vendor" / "tinyext-0.1.tar.gz").write_bytes(b"another sdist")  # same name, new bytes: a new build
    assert release_of(s.validate({"project_path": str(project)})).requirements_marker != marker
    (project / "requirements" / "base.txt").write_text("vendor/none-0.1.tar.gz\n")
    with pytest.raises(s.SettingsError, match="vendor/none-0.1.tar.gz: no such archive in the project"):
        s.validate({"project_path": str(project)})
