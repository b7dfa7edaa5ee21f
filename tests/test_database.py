"""Issue 16 on real lab hosts: 1 lb + 2 app hosts + 1 PostgreSQL db host, the stock
project (made at test time) sharing one database; only the app hosts get in."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import re
import secrets
import shlex
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import (
    BIN,
    ColdRun,
    FabRun,
    Remote,
    fab,
    get,
    git,
    sample_variant,
    stock_project,
    wait_until,
    with_celery,
    with_view,
)

from deploy.lab import Host, Lab

pytestmark = pytest.mark.lab
WORKER = "celery -A mysite worker -l info --concurrency 2"
TICK = "manage.py shell -c \"print('tick', flush=True)\""  # a job every minute, on the first app host
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
# A raw PING to Redis: its answer (-NOAUTH: the client got in), or what stopped it.
REDIS_PING = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 6379), timeout=3)
    s.sendall(b"PING\\r\\n")
    print(s.recv(100).decode().strip())
except OSError as exc:
    print("no answer:", exc)
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


UPLOAD_VIEW = """

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.middleware.csrf import get_token


@login_required
def upload(request):
    if request.method == "POST":
        name = default_storage.save("uploads/" + request.FILES["file"].name, request.FILES["file"])
        return HttpResponse(default_storage.url(name))
    return HttpResponse(f'<input name="csrfmiddlewaretoken" value="{get_token(request)}">')
"""
# on an app host: sha256 of a URL as its own nginx serves it (the lbs' port, from loopback)
SHA_HERE = """
import hashlib, sys, urllib.request, urllib.error
for url in sys.argv[1:]:
    try:
        print(hashlib.sha256(urllib.request.urlopen("http://127.0.0.1:8080" + url, timeout=10).read()).hexdigest())
    except urllib.error.HTTPError as exc:
        print(exc.code)
    except OSError as exc:
        print(type(exc).__name__, exc)
"""


def with_uploads(project: Path) -> None:
    """A view that stores a posted file with Django's default storage, for logged-in
    users, with Django's CSRF check (its GET gives the token): committed."""
    with_view(project, "upload", UPLOAD_VIEW)
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "Uploads: a file stored in MEDIA_ROOT")


class Uploader:
    """A logged-in user of the site behind the lb who POSTs files (multipart, with the
    session's CSRF token) and reads them back through the lb."""

    def __init__(self, lb: Host, password: str, user: str):
        self.lb = lb
        self.opener = admin_session(lb, password, user)
        with self.opener.open(f"http://{lb.address}/notes/upload/", timeout=10) as answer:
            self.token = re.search(r'value="([^"]+)"', answer.read().decode()).group(1)

    def upload(self, name: str, content: bytes) -> str:
        """The stored file's URL."""
        boundary = secrets.token_hex(16)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{self.token}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"http://{self.lb.address}/notes/upload/", data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                     "Referer": f"http://{self.lb.address}/notes/upload/"},
        )  # fmt: skip
        with self.opener.open(request, timeout=30) as answer:
            return answer.read().decode().strip()

    def sha(self, url: str) -> str:
        return sha_through(self.lb, url)


def sha_through(lb: Host, url: str) -> str:
    """sha256 of url through the lb, or the HTTP status / error when it fails."""
    try:
        with urllib.request.urlopen(f"http://{lb.address}{url}", timeout=30) as answer:
            return hashlib.sha256(answer.read()).hexdigest()
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except OSError as exc:
        return str(exc)


def sha_on(r: Remote, url: str) -> str:
    """sha256 of url from the host's own nginx, or what failed (its status, its error)."""
    return shas_on(r, [url])[0]


def shas_on(r: Remote, urls: list[str]) -> list[str]:
    """sha_on for many urls, in one Python on the host per 200 (one each made the check
    of a long run of uploads take minutes)."""
    found: list[str] = []
    for start in range(0, len(urls), 200):
        batch = urls[start : start + 200]
        said = r.run(f"python3 -c {shlex.quote(SHA_HERE)} {shlex.join(batch)} 2>&1", check=False).splitlines()
        found += said[-len(batch) :] if len(said) >= len(batch) else [said[-1] if said else "no answer"] * len(batch)
    return found


@pytest.fixture(scope="module")
def farm(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path_factory):
    hosts = lab.up(count=4, init="systemd", prefix="pg", snapshot=deployed_snapshot)
    (other,) = lab.up(count=1, init="sshd", prefix="pgx")  # an unrelated host on the same network
    root = tmp_path_factory.mktemp("pg")
    project = stock_project(root / "mysite", "dotenv-" + secrets.token_hex(8))
    with_celery(project)  # a Celery worker on every app host, Redis on the db host
    with_uploads(project)
    lb, app1, app2, db = hosts
    base = yaml.safe_load(cold.settings.read_text()) or {}
    inventory = [{"host": lb.target, "roles": ["lb"]}, {"host": app1.target}, {"host": app2.target},
                 {"host": db.target, "roles": ["db"]}]  # fmt: skip
    settings = root / "farm.yaml"
    config = {**base, "project_path": str(project), "hosts": inventory, "db_backup_keep": 2, "redis": True,
              "processes": {"worker": {"command": WORKER, "stop_timeout": 60}},
              "schedule": {"tick": {"command": TICK, "every": "minute"}}}  # fmt: skip
    settings.write_text(yaml.safe_dump(config))
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
    assert f"[{lb.target}] database closed to this host: ok" in check.out, check  # proven from the lb


def test_only_the_app_hosts_get_into_postgresql(farm):
    (lb, app1, _, db), other, settings = farm
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
    # the password is in no command line, log, --verbose or --json output
    loud = fab("provision", "--verbose", "--json", settings=settings)
    assert loud.code == 0 and password not in loud.out + loud.err, "the database password was printed"
    d = Remote(db)
    try:
        assert d.run("stat -c '%U:%G %a' /etc/fabstack/django/db_password").strip() == "root:postgres 640"
        listening = d.run("ss -Hltn '( sport = :5432 )'")
    finally:
        d.conn.close()
    assert f"{db.address}:5432" in listening and "0.0.0.0:5432" not in listening, listening


def deploy_while(client: Callable[[threading.Event], None], settings: Path) -> FabRun:
    """fab deploy while client(stop) runs in a thread of its own; stopped and joined after."""
    stop = threading.Event()
    thread = threading.Thread(target=client, args=(stop,))
    thread.start()
    try:
        return fab("deploy", settings=settings)
    finally:
        stop.set()
        thread.join(timeout=20)


def wait_for_note(lb, text: str, seconds: float = 60) -> str:
    """The notes page once it lists text (a worker wrote it), or the last answer."""
    deadline = time.monotonic() + seconds
    body = ""
    while time.monotonic() < deadline:
        code, body = get(f"http://{lb.address}/notes/")
        if code == 200 and text in body.removeprefix("notes: ").split(","):
            return body
        time.sleep(0.2)
    return body


def worker_masters(remote: Remote) -> list[tuple[str, str, str]]:
    """(pid, user, cwd) of each Celery worker's main process (its parent is not celery)."""
    rows = [line.split(None, 3) for line in remote.run("ps -eo pid=,ppid=,user=,args=").splitlines()]
    celery = {pid: (ppid, user) for pid, ppid, user, args in rows if "bin/celery" in args}
    return [(pid, user, remote.run(f"readlink /proc/{pid}/cwd").strip())
            for pid, (ppid, user) in celery.items() if ppid not in celery]  # fmt: skip


ADMIN = "from django.contrib.auth.models import User; User.objects.create_superuser('boss', 'b@example.com', '{0}')"
NEW_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > /srv/django/shared/data/secret_key"


def admin_session(lb: Host, password: str, user: str = "boss") -> urllib.request.OpenerDirector:
    """A cookie jar logged in to Django's admin through the lb (its form, its CSRF token)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login = f"http://{lb.address}/admin/login/?next=/admin/"
    with opener.open(login, timeout=10) as answer:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', answer.read().decode()).group(1)
    form = {"csrfmiddlewaretoken": token, "username": user, "password": password, "next": "/admin/"}
    opener.open(urllib.request.Request(login, data=urllib.parse.urlencode(form).encode()), timeout=10).close()
    return opener


def logged_in(lb: Host, password: str) -> Callable[[], tuple[int, str, str]]:
    """A function that GETs /admin/ in an admin session through the lb, answering
    (status, final URL, body)."""
    opener = admin_session(lb, password)

    def admin() -> tuple[int, str, str]:
        with opener.open(f"http://{lb.address}/admin/", timeout=10) as answer:
            return answer.status, answer.url, answer.read().decode(errors="replace")

    return admin


def test_one_secret_key_for_the_farm_so_a_login_holds_on_every_app_host(farm, remote):
    (lb, app1, app2, db), _, settings = farm
    key_file = "/srv/django/shared/data/secret_key"
    # a farm from before one key: each app host made its own (sessions signed on one were void on the other)
    remote(app2).run(f"runuser -u django -- sh -c {shlex.quote(NEW_KEY)}")
    found = fab("check", settings=settings)
    mismatch = f"{key_file} is not the farm's one key: run fab provision"
    assert found.code == 1 and mismatch in found.out, found.out[-3000:]
    run = fab("provision", settings=settings)
    assert run.code == 0, run.out[-3000:]
    assert f"[{app2.target}] secret key: this host's own key is replaced by the app's one SECRET_KEY" in run.out
    keys = {remote(h).run(f"runuser -u django -- sha256sum {key_file}").split()[0] for h in (app1, app2)}
    kept = remote(db).run(
        "sha256sum /etc/fabstack/django/secret_key; stat -c '%U:%G %a' /etc/fabstack/django/secret_key"
    )
    assert keys == {kept.split()[0]} and kept.split("\n")[1] == "root:root 600", (keys, kept)
    assert fab("provision", settings=settings).changed() == 0
    check = fab("check", settings=settings)
    assert check.code == 0 and f"[{app2.target}] one SECRET_KEY for the farm: ok" in check.out, check.out[-3000:]
    status = fab("status", "--json", settings=settings)
    rows = [h["data"] for h in json.loads(status.out)["runs"][0]["hosts"] if h["host"] in (app1.target, app2.target)]
    assert status.code == 0 and [row["key"] for row in rows] == [kept.split()[0][:8]] * 2, status.out[-2000:]
    # a superuser logs in through the lb, then 20 admin pages in a row, whichever app host answers
    password = secrets.token_urlsafe(16)
    made = fab("manage", "--", "shell", "-c", ADMIN.format(password), settings=settings)
    assert made.code == 0, made
    served = "grep -c 'GET /admin/ HTTP' /var/log/django/access.log || true"
    before = [int(remote(h).run(served)) for h in (app1, app2)]
    admin = logged_in(lb, password)
    pages = [admin() for _ in range(20)]
    assert [(status, url.endswith("/admin/"), "Site administration" in body) for status, url, body in pages] == [
        (200, True, True)
    ] * 20, [url for _, url, _ in pages]
    after = [int(remote(h).run(served)) for h in (app1, app2)]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # both app hosts served the session
    # a new key: the session the old one signed holds through Django's SECRET_KEY_FALLBACKS
    rotated = fab("secret.rotate", settings=settings)
    assert rotated.code == 0, rotated.out[-3000:]
    digest = "runuser -u django -- sha256sum {0}"
    new_keys = {remote(h).run(digest.format(key_file)).split()[0] for h in (app1, app2)}
    fallbacks = {remote(h).run(digest.format(key_file + "_fallback")).split()[0] for h in (app1, app2)}
    assert len(new_keys) == 1 and new_keys != keys and fallbacks == keys, (keys, new_keys, fallbacks)
    assert [admin()[:2] for _ in range(20)] == [(200, f"http://{lb.address}/admin/")] * 20


def uploader(lb: Host, settings: Path, user: str) -> Uploader:
    password = secrets.token_urlsafe(16)
    made = fab("manage", "--", "shell", "-c", ADMIN.replace("boss", user).format(password), settings=settings)
    assert made.code == 0, made
    return Uploader(lb, password, user)


def test_an_upload_through_the_lb_is_one_file_on_every_app_host(farm, remote):
    (lb, app1, app2, _), _, settings = farm
    content = secrets.token_bytes(200_000)
    url = uploader(lb, settings, "poster").upload("photo.bin", content)
    assert url.startswith("/media/uploads/photo"), url
    wanted = hashlib.sha256(content).hexdigest()
    assert [sha_through(lb, url) for _ in range(20)] == [wanted] * 20  # whichever app host the lb picks
    name = url.removeprefix("/media/")
    for host in (app1, app2):
        r = remote(host)
        assert sha_on(r, url) == wanted, host.name  # each app host's own nginx
        # a copy in each host's brick, the app's: the volume, replicated, not a sync
        brick = f"/var/lib/fabstack/bricks/django/{name}"
        assert r.run(f"sha256sum {brick}; stat -c %U {brick}").split()[::2] == [wanted, "django"], host.name
        assert r.run("findmnt -n -o FSTYPE /srv/django/shared/media").strip() == "fuse.glusterfs"
    # a host whose mount is gone answers 503 (never an empty media directory); the lb
    # serves from the other; provision mounts it again
    a1 = remote(app1)
    a1.run("systemctl stop srv-django-shared-media.mount")
    assert sha_on(a1, url) == "503" and a1.run("stat -c '%U %a' /srv/django/shared/media").strip() == "root 700"
    assert [sha_through(lb, url) for _ in range(10)] == [wanted] * 10
    check = fab("check", settings=settings)
    assert check.code == 1 and "not mounted at /srv/django/shared/media" in check.out, check.out[-3000:]
    assert media_column(settings, app1, app2) == ["not mounted", "shared"]
    again = fab("provision", settings=settings)
    assert again.code == 0 and f"[{app1.target}] media mounted: changed" in again.out, again.out[-3000:]
    assert sha_on(a1, url) == wanted
    assert fab("provision", settings=settings).changed() == 0
    check = fab("check", settings=settings)
    assert check.code == 0 and f"[{app1.target}] shared media: ok" in check.out, check.out[-3000:]
    assert media_column(settings, app1, app2) == ["shared", "shared"]


def media_column(settings: Path, *hosts: Host) -> list[str]:
    """fab status's media column on hosts (a host whose volume is not mounted fails it)."""
    status = fab("status", "--json", settings=settings)
    rows = {h["host"]: h["data"] for h in json.loads(status.out)["runs"][0]["hosts"]}
    column = [rows[h.target].get("media", "") for h in hosts]
    assert status.code == (1 if "not mounted" in column else 0), status.out[-2000:]
    return column


def test_uploads_go_on_while_an_app_host_is_power_cycled_and_it_serves_them_back(farm, lab: Lab, remote):
    (lb, app1, app2, _), _, settings = farm
    client = uploader(lb, settings, "rebooter")
    stored: list[tuple[str, str]] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:  # uploads, each read back at once through the lb, until stopped
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            content = secrets.token_bytes(20_000)
            try:
                url = client.upload(f"u{n}.bin", content)
            except OSError as exc:
                failed.append(f"upload {n}: {exc}")
                continue
            wanted = hashlib.sha256(content).hexdigest()
            got = client.sha(url)
            if got != wanted:
                failed.append(f"GET {url}: {got}")
            stored.append((url, wanted))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until(lambda: len(stored) >= 5, 60, "uploads before the power cut")
        lab.power_cycle(app2.name)
        cut = len(stored)
        r2 = remote(app2)

        def back() -> bool:  # app2's own nginx serves the newest upload from the volume
            if len(stored) <= cut + 5:
                return False
            url, wanted = stored[-1]  # read once: the loader appends while sha_on runs
            return sha_on(r2, url) == wanted

        wait_until(back, 120, "app2 back")
    finally:
        stop.set()
        thread.join()
    print(f"{len(stored)} uploads, {len(stored) - cut} after app2's power cut; failed: {failed}")
    assert [f for f in failed if not f.startswith("upload ")] == [] and len(stored) > cut  # every read good
    # the one upload in flight to app2 when its power went may fail (a POST is never sent
    # twice); none on the surviving host's path: the lb's error log names app2 for it
    uploads_failed = [f for f in failed if f.startswith("upload ")]
    assert len(uploads_failed) <= 1, uploads_failed
    if uploads_failed:
        errors = remote(lb).run("grep -F 'POST /notes/upload/' /var/log/nginx/django/lb-error.log || true")
        upstreams = set(re.findall(r'upstream: "http://([\d.]+):', errors))
        assert upstreams == {app2.address}, errors
    during = stored[cut:]
    assert shas_on(r2, [url for url, _ in during]) == [wanted for _, wanted in during]


def test_a_celery_worker_runs_the_site_s_tasks_with_redis_on_the_db_host(farm):
    (lb, app1, app2, db), other, settings = farm
    assert get(f"http://{lb.address}/notes/later/?add=from-a-worker") == (200, "queued")
    assert redis_answers(db, lb, other, app2) == {lb.name: "no answer", other.name: "no answer", app2.name: "-NOAUTH"}
    assert "from-a-worker" in wait_for_note(lb, "from-a-worker")
    for host in (app1, app2):
        r = Remote(host)
        try:
            masters = worker_masters(r)
            assert [(user, cwd.rsplit("/", 2)[-2]) for _, user, cwd in masters] == [("django", "releases")], masters
            assert r.run("systemctl is-active fabstack-django.worker@1.service").strip() == "active"
        finally:
            r.conn.close()
    d = Remote(db)
    try:  # Redis listens on the private address, and asks for the password
        assert f"{db.address}:6379" in d.run("ss -Hltn '( sport = :6379 )'")
        assert "NOAUTH" in d.run(f"redis-cli -h {db.address} ping 2>&1")
        assert d.run("stat -c '%U:%G %a' /etc/redis/fabstack-django-auth.conf").strip() == "root:redis 640"
    finally:
        d.conn.close()
    status = fab("status", settings=settings)
    assert status.code == 0 and len(re.findall(r"worker 1/1 pid \d+", status.out)) == 2, status


def redis_answers(db: Host, *clients: Host) -> dict[str, str]:
    """What each client gets from Redis on the db host: the app hosts its password prompt,
    any other host nothing (fabstack's firewall drops it)."""
    answers = {}
    for client in clients:
        r = Remote(client)
        try:
            answer = r.run(f"python3 -c {shlex.quote(REDIS_PING)} {db.address}")
            answers[client.name] = answer.split()[0] if answer.startswith("-") else answer.split(":")[0]
        finally:
            r.conn.close()
    return answers


def test_a_deploy_lets_a_running_task_finish_and_loses_none(farm, tmp_path):
    (lb, app1, app2, _), _, settings = farm
    project = Path(yaml.safe_load(Path(settings).read_text())["project_path"])
    before = {}
    for host in (app1, app2):
        r = Remote(host)
        before[host.name] = worker_masters(r)
        r.conn.close()
    assert get(f"http://{lb.address}/notes/later/?add=slow&sleep=20") == (200, "queued")
    deadline = time.monotonic() + 20  # the task is running on one of the workers
    running = False
    while not running and time.monotonic() < deadline:
        for host in (app1, app2):
            r = Remote(host)
            running = running or "add_note" in r.run(
                "journalctl -q --no-pager -u 'fabstack-django.worker@*' | tail -n 20"
            )
            r.conn.close()
        time.sleep(0.2)
    assert running
    views = project / "notes" / "views.py"
    views.write_text(views.read_text() + "\n# release 2\n")
    git(project, "commit", "-qam", "A new release while a task runs")
    queued: list[tuple[int, str]] = []

    def enqueue(done: threading.Event) -> None:  # tasks enqueued all through the deploy
        while not done.wait(0.5):
            queued.append(get(f"http://{lb.address}/notes/later/?add=during-{len(queued) + 1}"))

    run = deploy_while(enqueue, settings)
    assert run.code == 0, run
    body = wait_for_note(lb, "slow")
    assert "slow" in body.split(","), body  # the running task finished
    assert queued and all(answer == (200, "queued") for answer in queued), queued
    last = f"during-{len(queued)}"
    body = wait_for_note(lb, last)
    written = body.removeprefix("notes: ").split(",")
    assert all(f"during-{n}" in written for n in range(1, len(queued) + 1)), body  # none lost
    for host in (app1, app2):
        r = Remote(host)
        try:
            after = worker_masters(r)
            current = r.run("readlink -f /srv/django/current").strip()
        finally:
            r.conn.close()
        assert len(after) == 1 and after[0][0] not in {pid for pid, _, _ in before[host.name]}
        assert after[0][2] == current  # the new generation runs the new release
    # the notes the workers wrote go: the tests after these expect the one shared note
    clean = "from notes.models import Note; Note.objects.exclude(text='shared').delete()"
    assert fab("manage", "--", "shell", "-c", clean, settings=settings).code == 0
    assert get(f"http://{lb.address}/notes/") == (200, "notes: shared")


def test_a_rolling_deploy_migrates_the_shared_database_once_under_load(farm):
    (lb, _, _, db), _, settings = farm
    project = Path(yaml.safe_load(Path(settings).read_text())["project_path"])
    models = project / "notes" / "models.py"
    models.write_text(models.read_text() + "    stars = models.IntegerField(default=0)\n")
    subprocess.run([BIN / "python", "manage.py", "makemigrations", "notes", "-v", "0"], cwd=project, check=True)
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "Notes get stars")
    failures, sent = [], [0]

    def load(stop: threading.Event) -> None:  # bounded: until the deploy ends, at most 5,000 requests
        while not stop.is_set() and sent[0] < 5000:
            sent[0] += 1
            code, body = get(f"http://{lb.address}/notes/")
            if code != 200 or not body.startswith("notes: "):
                failures.append(code)

    run = deploy_while(load, settings)
    assert run.code == 0, run.out[-3000:]
    assert run.out.count("database migrated: changed") == 1, run.out  # once, from one host
    print(f"rolling deploy with a migration: {sent[0]} requests, {len(failures)} failed")
    assert sent[0] > 0 and failures == []
    d = Remote(db)
    try:
        applied = d.run(
            "runuser -u postgres -- psql -d django -tAc "
            "\"select count(*) from django_migrations where app = 'notes' and name like '0002%'\""
        )
        columns = d.run(
            "runuser -u postgres -- psql -d django -tAc "
            "\"select column_name from information_schema.columns where table_name = 'notes_note' order by 1\""
        )
    finally:
        d.conn.close()
    assert applied.strip() == "1" and columns.split() == ["id", "stars", "text"]
    assert get(f"http://{lb.address}/notes/") == (200, "notes: shared")


def test_a_failing_migration_switches_no_host(farm):
    (lb, app1, app2, _), _, settings = farm
    project = Path(yaml.safe_load(Path(settings).read_text())["project_path"])
    before = {h.name: current(h) for h in (app1, app2)}
    (project / "notes" / "migrations" / "0003_fails.py").write_text(FAILING_MIGRATION)
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "A migration that fails")
    run = fab("deploy", settings=settings)
    assert run.code == 1 and "database migrated: failed" in run.out, run.out[-3000:]
    assert "RuntimeError: this migration fails" in run.out  # the migration's own error
    assert "no host switched" in run.err and "release current" not in run.out
    assert {h.name: current(h) for h in (app1, app2)} == before
    assert get(f"http://{lb.address}/notes/") == (200, "notes: shared")
    git(project, "rm", "-q", "notes/migrations/0003_fails.py")
    git(project, "commit", "-q", "-m", "Without it")


FAILING_MIGRATION = """from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("this migration fails")


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_note_stars")]
    operations = [migrations.RunPython(fail)]
"""


def current(host) -> str:
    r = Remote(host)
    try:
        return r.run("readlink /srv/django/current").strip()
    finally:
        r.conn.close()


def test_backup_drop_restore(farm, tmp_path, remote):
    (lb, app1, app2, db), _, settings = farm
    upload = "/srv/django/shared/media/photo.bin"  # an upload, as the app writes one
    a = remote(app1)
    a.run(f"runuser -u django -- sh -c 'head -c 100000 /dev/urandom > {upload}'")
    uploaded = a.run(f"sha256sum {upload}").split()[0]
    run = fab("db.backup", "--to", str(tmp_path), settings=settings)
    assert run.code == 0, run.out[-3000:]
    (copy,) = tmp_path.glob("django-*.dump")
    (media,) = tmp_path.glob("django-*.media.tar.gz")  # the uploads beside the data
    assert media.name == copy.name.replace(".dump", ".media.tar.gz")
    media_sha = a.run(f"sha256sum /var/backups/fabstack/django/{media.name}").split()[0]
    assert media_sha == hashlib.sha256(media.read_bytes()).hexdigest() and f"sha256 {media_sha}" in run.out
    d = Remote(db)
    try:
        on_host = d.run(f"sha256sum /var/backups/fabstack/django/{copy.name}").split()[0]
        assert on_host == hashlib.sha256(copy.read_bytes()).hexdigest() and f"sha256 {on_host}" in run.out
        d.run("runuser -u postgres -- psql -d django -c 'DROP TABLE notes_note'")
        a.run(f"rm {upload}")
        assert get(f"http://{lb.address}/notes/")[0] == 500  # the table is gone
        refused = fab("db.restore", str(copy), settings=settings)
        assert refused.code == 2 and "add --yes" in refused.err, refused
        restored = fab("db.restore", str(copy), "--yes", settings=settings)
        assert restored.code == 0, restored.out[-3000:]
        assert get(f"http://{lb.address}/notes/") == (200, "notes: shared")  # the rows are back
        assert a.run(f"sha256sum {upload}").split()[0] == uploaded  # and the upload
        assert a.run(f"stat -c %U {upload}").strip() == "django"
        # on the farm's one media volume: the other app host has it too, and both still
        # have the volume's marker (nginx serves on), which the backup did not carry
        b = remote(app2)
        assert b.run(f"sha256sum {upload}").split()[0] == uploaded
        assert b.run("cat /srv/django/shared/media/.fabstack-volume").strip() == "fabstack-django"
        with tarfile.open(media) as archive:
            assert "./.fabstack-volume" not in archive.getnames() and "./photo.bin" in archive.getnames()
        a.run(f"rm {upload}")
        (tmp_path / "more").mkdir()
        for _ in range(2):  # the first app host keeps the newest db_backup_keep (2) media archives
            assert fab("db.backup", "--to", str(tmp_path / "more"), settings=settings).code == 0
        kept = a.run("ls /var/backups/fabstack/django").split()
        assert len(kept) == 2 and all(name.endswith(".media.tar.gz") for name in kept), kept
        listing = fab("db.backups", "--where", str(tmp_path), settings=settings)
        assert f"{copy}  {copy.stat().st_size} bytes  sha256 {on_host}" in listing.out, listing
    finally:
        d.conn.close()


def test_a_daily_timer_backs_up_on_the_db_host_and_keeps_the_newest(farm):
    (_, _, _, db), _, _ = farm
    d = Remote(db)
    try:
        assert d.run("systemctl is-active fabstack-backup-django.timer").strip() == "active"
        for _ in range(3):  # what the timer starts each day, started now
            d.run("systemctl start fabstack-backup-django.service")
        kept = d.run("ls /var/backups/fabstack/django").split()
        newest = d.run("ls -t /var/backups/fabstack/django | head -n 1").strip()
        size = int(d.run(f"stat -c %s /var/backups/fabstack/django/{newest}"))
    finally:
        d.conn.close()
    assert len(kept) == 2 and all(name.endswith(".dump") for name in kept), kept  # db_backup_keep: 2
    assert size > 1000


def test_the_site_comes_back_by_itself_after_the_db_host_reboots(farm, lab: Lab):
    (lb, app1, _, db), _, settings = farm
    lab.power_cycle(db.name)  # processes killed, disk kept, booted again
    back = time.monotonic()
    answer = None
    while time.monotonic() - back < 30:
        answer = get(f"http://{lb.address}/notes/")
        if answer == (200, "notes: shared"):
            break
        time.sleep(0.5)
    took = time.monotonic() - back
    print(f"db host rebooted: the site answered {took:.1f}s after the host was back")
    if answer != (200, "notes: shared"):  # what the db host and an app host say, for the log
        d = Remote(db)
        print(
            d.run(
                "pg_lsclusters; ss -Hltn; ss -Htn; nft list ruleset; ip -s link; "
                "tail -n 30 /var/log/postgresql/postgresql-15-main.log; "
                "journalctl -b --no-pager -n 30 -u postgresql@15-main; uptime",
                check=False,
            )
        )
        a = Remote(app1)
        print(
            a.run(
                f"ip neigh; ss -Htn; python3 -c {shlex.quote(STARTUP)} {db.address} 5432 django django; "
                f"python3 -c {shlex.quote(REDIS_PING)} {db.address}",
                check=False,
            )
        )
    assert answer == (200, "notes: shared"), answer
    assert redis_answers(db, lb, app1) == {lb.name: "no answer", app1.name: "-NOAUTH"}  # the firewall is back
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again.out[-3000:]


def test_a_single_host_runs_its_own_postgresql(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path):
    (host,) = lab.up(count=1, init="sshd", prefix="pgone", snapshot=deployed_snapshot)
    assert fab("-H", host.target, "provision", settings=cold.settings).code == 0  # nginx up again after the snapshot
    base = yaml.safe_load(cold.settings.read_text()) or {}
    taken = tmp_path / "taken.yaml"
    taken.write_text(yaml.safe_dump({**base, "database": "postgresql", "db_port": 80}))  # nginx's port
    refused = fab("-H", host.target, "provision", settings=taken)
    assert refused.code == 1 and "db_port 80 is in use by nginx on this host" in refused.out, refused.out[-2000:]
    r = Remote(host)
    try:
        assert r.run("dpkg-query -W -f='${db:Status-Status}' postgresql", check=False) != "installed"  # refused first
        settings = tmp_path / "one.yaml"
        settings.write_text(yaml.safe_dump({**base, "database": "postgresql"}))
        project = sample_variant(tmp_path, "on-postgresql", title="On PostgreSQL")  # a new release: migrated
        settings.write_text(yaml.safe_dump({**base, "database": "postgresql", "project_path": project}))
        run = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert run.code == 0, run.out[-3000:]
        assert "database migrated: changed" in run.out
        assert "this host runs no systemd; schedule fab db.backup" in run.out
        applied = r.run("runuser -u postgres -- psql -d django -tAc 'select count(*) from django_migrations'")
        assert int(applied) > 0
        listening = r.run("ss -Hltn '( sport = :5432 )'")
        assert "127.0.0.1:5432" in listening and host.address not in listening  # loopback only
    finally:
        r.conn.close()
    code, page = get(f"http://{host.address}/")
    assert code == 200 and "On PostgreSQL" in page
    assert fab("-H", host.target, "provision", "deploy", settings=settings).changed() == 0


def test_a_process_removed_from_the_settings_is_stopped_and_its_unit_removed(farm):
    (_, app1, app2, _), _, settings = farm
    config = yaml.safe_load(Path(settings).read_text())
    config.pop("processes")
    Path(settings).write_text(yaml.safe_dump(config))
    run = fab("provision", settings=settings)
    assert run.code == 0, run
    for host in (app1, app2):
        r = Remote(host)
        try:
            assert worker_masters(r) == []
            assert r.run("ls /etc/systemd/system/ | grep -c fabstack-django.worker || true").strip() == "0"
        finally:
            r.conn.close()
    again = fab("provision", settings=settings)
    assert again.code == 0 and again.changed() == 0, again


def test_a_second_app_shares_the_farm_and_its_postgresql(farm, tmp_path):
    # another app on the same lb, app hosts and db host, named as a near-twin of the first
    # (django-blog: its names start with django's); the first keeps its database access,
    # its lb site, its data, its files and its master; the second taken off with its
    # database and Redis user
    (lb, app1, app2, db), _, settings = farm
    farm_config = yaml.safe_load(settings.read_text())
    blog = tmp_path / "blog.yaml"
    project = stock_project(tmp_path / "blog", "blog-" + secrets.token_hex(8))
    blog.write_text(
        yaml.safe_dump(
            {"hosts": farm_config["hosts"], "workers": 2, "app_name": "django-blog", "project_path": str(project),
             "server_name": "blog.test", "default_server": False, "redis": True}
        )
    )  # fmt: skip
    before = get(f"http://{lb.address}/notes/")
    assert before[0] == 200, before
    a = Remote(app1)
    django_files = "find /srv/django/config /etc/fabstack/django -type f -print0 | sort -z | xargs -0 sha256sum"
    run = fab("provision", "deploy", settings=blog)
    assert run.code == 0, run.out[-4000:]
    assert page_of(lb, "blog.test", "/notes/?add=b") == "notes: b"
    assert get(f"http://{lb.address}/notes/") == before  # the first app: still the default, its data
    r = Remote(db)
    try:
        hba = r.run("grep ^host /etc/postgresql/15/main/pg_hba.conf | awk '{print $2, $4}'").split("\n")
        expected = {f"{name} {h.address}/32" for name in ("django", "django_blog") for h in (app1, app2)}
        assert set(filter(None, hba)) == expected, hba
        assert r.run("runuser -u postgres -- psql -d django_blog -tAc 'select count(*) from notes_note'").strip() == "1"
        # one Redis: a user and a password of each app's own, a database each, keys under its name
        urls = r.run("cat /etc/fabstack/django/redis_url /etc/fabstack/django-blog/redis_url").split()
        assert [u.rsplit("/", 1)[1] for u in urls] == ["0", "1"]
        assert [u.split("//")[1].split(":")[0] for u in urls] == ["django", "django-blog"] and len(set(urls)) == 2
        assert [redis_ping(r, app) for app in ("django", "django-blog")] == ["PONG", "PONG"]
        # blog's user reads none of django's keys (Celery's queue is django:celery), nor the
        # config, nor makes a user: what a compromised app tried on a shared Redis
        assert "django:_kombu.binding.celery" in redis_as(r, "django", "--scan")
        for attempt in ("get django:celery", "config get requirepass", "acl setuser backdoor on", "config rewrite"):
            assert "NOPERM" in redis_as(r, "django-blog", attempt), attempt
        # nor reaches django's workers through pub/sub: their remote control (a shutdown
        # broadcast) and their events (task names and arguments)
        for channel in ("django:/0.celery.pidbox", "django:/0.celeryev/task.succeeded", "/0.celery.pidbox"):
            assert "NOPERM" in redis_as(r, "django-blog", f"publish {channel} x"), channel
        assert redis_as(r, "django-blog", "publish django-blog:/1.celery.pidbox x") == "0"  # its own: no one listens
        assert "NOAUTH" in r.run("redis-cli ping 2>&1")  # the default user is off
        again = fab("provision", settings=settings)  # the first app's provision keeps the second's access
        assert again.code == 0 and again.changed() == 0, again
        assert page_of(lb, "blog.test", "/notes/") == "notes: b"
        django_master = "systemctl show -p MainPID --value gunicorn-django.service"
        hashes, master = a.run(django_files), a.run(django_master)
        gone = fab("remove", "--app", "django-blog", "--yes", "--purge", settings=blog)
        assert gone.code == 0, gone
        assert a.run(django_files) == hashes and a.run(django_master) == master  # none of django's taken
        hba = r.run("grep ^host /etc/postgresql/15/main/pg_hba.conf | awk '{print $2}' | sort -u").split()
        assert hba == ["django"], hba
        databases = r.run("runuser -u postgres -- psql -tAc 'select datname from pg_database'").split()
        assert "django_blog" not in databases and "django" in databases, databases
        assert "blog" not in r.run("cat /etc/redis/redis.conf; ls /etc/redis")
        assert "blog" not in a.run("ls /srv /etc/fabstack /etc/systemd/system /etc/nginx/sites-enabled /var/log")
        assert redis_ping(r, "django") == "PONG"
    finally:
        r.conn.close()
        a.conn.close()
    assert get(f"http://{lb.address}/notes/") == before
    assert fab("provision", settings=settings).changed() == 0


def redis_as(r: Remote, app: str, command: str) -> str:
    """Redis's answer to command as app's user, with app's URL (its password through the
    environment, never on a command line)."""
    return r.run(
        f"u=$(cat /etc/fabstack/{app}/redis_url); c=${{u#redis://}}; c=${{c%%@*}}; "
        f'REDISCLI_AUTH="${{c#*:}}" redis-cli --user "${{c%%:*}}" -n "${{u##*/}}" {command} 2>&1'
    ).strip()


def redis_ping(r: Remote, app: str) -> str:
    """Redis's answer to a PING with app's URL."""
    return redis_as(r, app, "ping")


def page_of(lb: Host, name: str, path: str) -> str:
    """What the lb answers for path under Host name (a 200's body, else the status)."""
    request = urllib.request.Request(f"http://{lb.address}{path}", headers={"Host": name})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return str(exc.code)


def ticks(host) -> list[str]:
    """The minutes (UTC, YYYY-MM-DDTHH:MM) in which the tick job printed on host."""
    r = Remote(host)
    try:
        out = r.run(
            "journalctl -q --no-pager -o short-iso -u fabstack-django.job-tick.service | grep ': tick$' || true"
        )
    finally:
        r.conn.close()
    return [line[:16] for line in out.splitlines()]


def test_a_job_every_minute_ran_once_a_minute_on_one_host_through_the_deploys(farm):
    (_, app1, app2, _), _, settings = farm
    deadline = time.monotonic() + 150  # the module's deploys took minutes; five runs at most 2.5 more away
    while len(ticks(app1)) < 5 and time.monotonic() < deadline:
        time.sleep(2)
    minutes = ticks(app1)
    assert len(minutes) >= 5, minutes
    assert len(set(minutes)) == len(minutes), minutes  # never twice in a minute
    first, last = (time.strptime(m, "%Y-%m-%dT%H:%M") for m in (minutes[0], minutes[-1]))
    assert (time.mktime(last) - time.mktime(first)) / 60 == len(minutes) - 1, minutes  # none skipped
    assert ticks(app2) == []  # exactly one host
    status = fab("status", settings=settings)
    assert re.search(r"tick timer active, last \d\d:\d\d:\d\d", status.out), status  # the job's last start
    logs = fab("-H", app1.target, "logs", "--process", "tick", "--lines", "4", settings=settings)
    assert logs.code == 0 and logs.out.count("tick") >= 2, logs  # the job's journal
