"""Issue 16 on real lab hosts: 1 lb + 2 app hosts + 1 PostgreSQL db host, the stock
project (made at test time) sharing one database; only the app hosts get in."""

from __future__ import annotations

import secrets
import shlex

import pytest
import yaml
from conftest import ColdRun, Remote, fab, get, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab
# A PostgreSQL StartupMessage (protocol 3.0), sent raw: the first byte back is 'R' when the
# server asks for a password (the client got in), 'E' when it refuses it outright.
STARTUP = """
import socket, struct, sys
host, port, user, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = struct.pack("!i", 196608) + b"user\\0" + user.encode() + b"\\0database\\0" + db.encode() + b"\\0\\0"
try:
    s = socket.create_connection((host, port), timeout=5)
except OSError as exc:
    print("refused", exc); sys.exit()
s.sendall(struct.pack("!i", len(body) + 4) + body)
answer = s.recv(4096)
print({"R": "asks for a password", "E": "rejected"}.get(answer[:1].decode(errors="replace"), answer[:1]), answer[5:200])
"""
CONNECT = """
import sys, psycopg
host, password = sys.argv[1], sys.argv[2]
try:
    with psycopg.connect(host=host, dbname="django", user="django", password=password, connect_timeout=5) as conn:
        print("connected", conn.execute("select count(*) from notes_note").fetchone()[0])
except psycopg.OperationalError as exc:
    print("failed", str(exc).strip().splitlines()[-1])
"""


@pytest.fixture(scope="module")
def farm(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path_factory):
    hosts = lab.up(count=4, init="systemd", prefix="pg", snapshot=deployed_snapshot)
    (other,) = lab.up(count=1, init="sshd", prefix="pgx")  # an unrelated host on the same network
    root = tmp_path_factory.mktemp("pg")
    project = stock_project(root / "mysite", "dotenv-" + secrets.token_hex(8))
    lb, app1, app2, db = hosts
    base = yaml.safe_load(cold.settings.read_text()) or {}
    inventory = [{"host": lb.target, "roles": ["lb"]}, {"host": app1.target}, {"host": app2.target},
                 {"host": db.target, "roles": ["db"]}]  # fmt: skip
    settings = root / "farm.yaml"
    settings.write_text(yaml.safe_dump({**base, "project_path": str(project), "hosts": inventory}))
    run = fab("provision", "deploy", settings=settings)
    assert run.code == 0, run.out[-4000:] + run.err[-2000:]
    return hosts, other, settings


def test_one_database_for_every_app_host(farm):
    (lb, app1, app2, db), _, settings = farm
    assert get(f"http://{lb.address}/notes/?add=shared")[0] == 200
    edge = Remote(lb)
    try:
        for app_host in (app1, app2):  # each app host's own port, reached from the lb (the only one allowed)
            body = edge.run(f"curl --noproxy '*' -s http://{app_host.address}:8080/notes/")
            assert body == "notes: shared", (app_host.name, body)
    finally:
        edge.conn.close()
    answers = {get(f"http://{lb.address}/notes/") for _ in range(20)}
    assert answers == {(200, "notes: shared")}
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
    status = fab("status", settings=settings)
    assert status.code == 0 and "postgresql 15 online" in status.out, status
    check = fab("check", settings=settings)
    assert check.code == 0, check.out[-3000:]
    assert f"[{db.target}] postgresql lets in the app hosts only: ok" in check.out, check


def test_only_the_app_hosts_get_into_postgresql(farm):
    (lb, app1, _, db), other, _ = farm
    for outsider in (lb, other):
        r = Remote(outsider)
        try:
            answer = r.run(f"python3 -c {shlex.quote(STARTUP)} {db.address} 5432 django django")
        finally:
            r.conn.close()
        refused = answer.startswith("refused")  # nothing listens for it
        rejected = answer.startswith("rejected") and "no pg_hba.conf entry" in answer  # listens, lets it not in
        assert refused or rejected, (outsider.name, answer)
    r = Remote(app1)
    try:
        password = r.run("cat /srv/django/shared/data/db_password").strip()
        python = "/srv/django/venv/bin/python"
        right = r.run(f"{python} -c {shlex.quote(CONNECT)} {db.address} {shlex.quote(password)}")
        wrong = r.run(f"{python} -c {shlex.quote(CONNECT)} {db.address} not-the-password")
        modes = r.run("stat -c '%U:%G %a' /srv/django/shared/data/db_password").strip()
    finally:
        r.conn.close()
    assert right.startswith("connected "), right
    assert wrong.startswith("failed") and "password authentication failed" in wrong, wrong
    assert modes == "django:django 600"
    d = Remote(db)
    try:
        assert d.run("stat -c '%U:%G %a' /etc/fabstack/django/db_password").strip() == "root:postgres 640"
        listening = d.run("ss -Hltn '( sport = :5432 )'")
    finally:
        d.conn.close()
    assert f"{db.address}:5432" in listening and "0.0.0.0:5432" not in listening, listening
