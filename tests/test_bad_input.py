"""Issue 7: bad input. Each case runs the real `fab` against a deployed lab host and must
end with one line naming the input and the fix, and leave the host byte-for-byte as it
was (its file tree, and the checksums of every config file, compared)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Remote, changed_paths, fab, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab


@dataclass
class Case:
    id: str
    expect: str  # a fragment of the one error line
    settings: str = ""  # YAML added to the base settings; HOST is this test's host
    args: list[str] = field(default_factory=lambda: ["provision", "deploy"])
    hosts: bool = True  # pass -H HOST
    templates: dict[str, str] = field(default_factory=dict)  # a templates_dir with these files
    project: str = ""  # a project variant: no-wsgi, no-manage, broken-import
    code: int = 2  # 2: stopped before any host; 1: stopped on the host, which was left as it was
    alone: bool = False  # the settings file is `settings` alone, not added to the base


INVENTORY = "hosts:\n  - host: HOST\n    roles: [app]\n"
CASES = [
    # settings file
    Case("workers-0", "setting workers=0 is invalid: use a number >= 1, or auto", "workers: 0\n"),
    Case("bind-public", "gunicorn must be reachable only through nginx", "bind: 0.0.0.0:8000\n"),
    Case("unknown-key", "unknown setting 'wokers'", "wokers: 3\n"),
    Case("yaml-syntax", "invalid YAML", "workers: [3\n"),
    Case("listen-port", "setting listen_port=70000 is invalid: use a port from 1 to 65535", "listen_port: 70000\n"),
    Case("worker-class", "worker_class='tornado' is invalid: use one of: sync, gevent, gthread", "worker_class: tornado\n"),
    Case("meinheld", "meinheld is unmaintained", "worker_class: meinheld\n"),
    Case(
        "preload-supervisor",
        "setting preload_app=true: supervisor cannot follow gunicorn's new master; use process_manager nohup or systemd",
        "preload_app: true\nprocess_manager: supervisor\n",
    ),
    Case("preload-not-bool", "setting preload_app='sometimes'", "preload_app: sometimes\n"),
    Case("app-name", "app_name='Bad Name' is invalid", "app_name: Bad Name\n"),
    Case("server-name-injection", "server_name='a;b' is invalid", "server_name: 'a;b'\n"),
    Case("version-injection", "django_version='; rm -rf /' is invalid", "django_version: '; rm -rf /'\n"),
    Case("lb-fair", "fair needs the third-party upstream_fair module", "lb_method: fair\n"),
    Case("templates-dir", "setting templates_dir='/nope': no such directory", "templates_dir: /nope\n"),
    Case("not-a-mapping", "expected a mapping of key: value, got list", "- workers\n", alone=True),
    # the edges: each value would have crossed into a file root writes (pg_hba.conf, a cron file, a site)
    Case("address-pg-hba", "address='0.0.0.0/0'; use an IP address or a host name", "hosts:\n  - host: HOST\n    address: 0.0.0.0/0\n", hosts=False),
    Case("address-newline", "setting hosts[0].address holds a control character", 'hosts:\n  - host: HOST\n    address: "10.0.0.1\\nhost all all 0.0.0.0/0 trust"\n', hosts=False),
    Case("cron-newline", "setting schedule.r.command holds a control character", 'schedule:\n  r: {command: "true\\n* * * * * root touch /pwned", every: daily}\n'),
    Case("hash-key-block", "setting lb_hash_key=", 'lb_method: hash\nlb_hash_key: "$request_uri; } server { listen 81; root /etc; location / {"\n'),
    Case("static-dir-out", "setting static_dir='../../shared/data' is invalid", "static_dir: ../../shared/data\n"),
    Case("server-name-backslash", "is not a domain name", "server_name: 'x.example\\'\n"),
    Case("allowed-hosts", "'a b' is not a host", "allowed_hosts: ['a b']\n"),
    Case("settings-module", "setting settings_module=", "settings_module: 'x; import os'\n"),
    Case("app-name-system", "app_name='postgres' is invalid: postgres is the system's own", "app_name: postgres\n"),
    Case("app-name-host-account", "user news exists on this host and is not an app fabstack made", "app_name: news\nserver_name: news.test\ndefault_server: false\n", args=["provision"], code=1),
    # flags
    Case("flag-workers-0", "setting workers=0 is invalid", args=["provision", "--workers", "0"]),
    Case("flag-worker-class", "worker_class='x' is invalid", args=["provision", "--worker-class", "x"]),
    Case("flag-server-name", "server_name='a b;' is invalid", args=["provision", "--server-name", "a b;"]),
    Case("flag-role", "--role 'web' is not a role; use app, lb or db", INVENTORY, ["provision", "--role", "web"], False),
    Case("flag-limit", "--limit '10.9.9.9' is not in the inventory; its hosts: root@HOST", INVENTORY, ["status", "--limit", "10.9.9.9"], False),
    Case("flag-project", "project_path='/does/not/exist': no such directory", args=["deploy", "--project", "/does/not/exist"]),
    Case("flag-settings", "settings file /nonexistent.yaml does not exist", args=["provision", "--settings", "/nonexistent.yaml"]),
    # host strings
    Case("host-space", "host 'root@bad host' is not a valid host string", args=["-H", "root@bad host", "provision"], hosts=False),
    Case("host-port", "host 'root@HOST:0' is not a valid host string", args=["-H", "root@HOST:0", "provision"], hosts=False),
    Case("host-empty-user", "host '@HOST' is not a valid host string", args=["-H", "@HOST", "provision"], hosts=False),
    Case("host-unknown-user", "nobody@HOST: authentication failed; check the user name", args=["-H", "nobody@HOST", "provision"], hosts=False, code=1),
    # inventory
    Case("lb-without-apps", "an lb host needs app hosts behind it", "hosts:\n  - host: HOST\n    roles: [lb]\n", hosts=False),
    Case("ip-hash-backup", "cannot be used with lb_method ip_hash", "lb_method: ip_hash\nhosts:\n  - host: HOST\n    backup: true\n", hosts=False),
    Case("duplicate-server", "duplicate server 'HOST'", "hosts: [HOST, HOST]\n", hosts=False),
    Case("weight-0", "weight=0; use a whole number >= 1", "hosts:\n  - host: HOST\n    weight: 0\n", hosts=False),
    Case("role-cache", "roles=['cache']; use a list of: app, lb, db", "hosts:\n  - host: HOST\n    roles: [cache]\n", hosts=False),
    # templates
    Case("template-syntax", "nginx-site.conf.j2 line 1: Expected an expression, got 'end of print statement'; fix the template", templates={"nginx-site.conf.j2": "server {{ }}\n"}),
    Case("template-variable", "{{ setings }} is not a variable fabstack passes", templates={"nginx-site.conf.j2": "# {{ setings.workers }}\n"}),
    Case("template-invalid-gunicorn", "gunicorn rejected the new config (wsgi_module sample.wsgi:application)", templates={"gunicorn.conf.py.j2": "workers = = 2\n"}, args=["provision"], code=1),
    Case("template-invalid-nginx", "nginx -t rejected the new site, previous config restored", templates={"nginx-site.conf.j2": "server { bogus_directive on; }\n"}, args=["provision"], code=1),
    # the app itself
    Case("no-wsgi-module", "names no DJANGO_SETTINGS_MODULE; set wsgi_module to your project's module:callable", args=["deploy"], project="no-wsgi"),
    Case("no-manage-py", "no manage.py there; point it at the project root", args=["deploy"], project="no-manage"),
    Case("app-import-error", "release uploaded: failed: ModuleNotFoundError: No module named 'no_such_module'", args=["deploy"], project="broken-import", code=1),
    Case("link-out-of-project", "project file static/notes.txt is a link to /root/.ssh/authorized_keys, outside the project", args=["deploy"], project="link-out"),
    Case("link-out-provision-first", "project file static/notes.txt is a link to /root/.ssh/authorized_keys", args=["provision", "deploy"], project="link-out"),
    Case("rollback-unknown", "no release 'nosuch' to roll back to", args=["rollback", "--to", "nosuch"], code=1),
]  # fmt: skip

CONFIGS = "find /etc/nginx /etc/systemd/system /srv -xdev -type f -not -path '*/shared/data/db.sqlite3' -exec sha256sum {} + | sort"


@pytest.fixture(scope="module")
def host(lab: Lab, deployed_snapshot: str):
    (host,) = lab.up(count=1, init="sshd", prefix="bad", snapshot=deployed_snapshot)
    return host


@pytest.fixture(scope="module")
def before(host, cold):
    converged = fab("-H", host.target, "provision", "deploy", settings=cold.settings)  # nginx and gunicorn up
    assert converged.code == 0, converged
    r = Remote(host)
    yield r.tree(), r.run(CONFIGS)
    r.conn.close()


def project_variant(tmp_path, kind: str) -> str:
    if kind == "no-wsgi":
        project = tmp_path / "no-wsgi"
        project.mkdir()
        (project / "manage.py").write_text("print('a project without its wsgi module')\n")
        return str(project)
    if kind == "no-manage":
        project = tmp_path / "no-manage"
        project.mkdir()
        return str(project)
    if kind == "link-out":  # a committed link to a file of the controller's, served from /static/ if packed
        project = Path(sample_variant(tmp_path, kind))
        (project / "static").mkdir(exist_ok=True)
        (project / "static" / "notes.txt").symlink_to("/root/.ssh/authorized_keys")
        return str(project)
    return sample_variant(tmp_path, kind, append={"sample/wsgi.py": "import no_such_module\n"})


def test_bad_input_has_a_one_line_error_and_leaves_the_host_unchanged(host, before, cold, tmp_path):
    assert len(CASES) >= 30
    r = Remote(host)
    failures = []
    for case in CASES:
        settings = tmp_path / f"{case.id}.yaml"
        text = case.settings if case.alone else cold.settings.read_text() + case.settings
        if case.templates:
            (tmp_path / case.id).mkdir()
            for name, body in case.templates.items():
                (tmp_path / case.id / name).write_text(body)
            text += f"templates_dir: {tmp_path / case.id}\n"
        if case.project:
            (tmp_path / f"{case.id}-project").mkdir()
            text += f"project_path: {project_variant(tmp_path / f'{case.id}-project', case.project)}\n"
        settings.write_text(text.replace("HOST", host.target))
        args = [a.replace("HOST", host.address) for a in case.args]
        run = fab(*(["-H", host.target] if case.hosts else []), *args, settings=settings)
        error = [line for line in run.err.splitlines() if line.startswith("fabstack: ")]
        expect = case.expect.replace("HOST", host.target if "duplicate" in case.id else host.address)
        if run.code != case.code or expect not in run.out + run.err or len(error) != 1:
            failures.append(f"{case.id}: exit {run.code}, want {case.code} and {expect!r} in:\n{run.out}{run.err}")
        elif case.code == 2 and len(run.err.strip().splitlines()) != 1:
            failures.append(f"{case.id}: want one line on stderr, got:\n{run.err}")
        changed = changed_paths(before[0], r.tree())
        if changed:
            failures.append(f"{case.id}: the host's file tree changed: {changed}")
            break
    assert not failures, "\n".join(failures)
    assert r.run(CONFIGS) == before[1]
    assert ".partial" not in r.run("ls -a /srv/django/releases")
