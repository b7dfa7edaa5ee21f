"""Fixtures: a lab of real hosts for the whole session, and helpers to drive `fab`.

The lab runs in its own home and subnet so the suite never touches a user's lab; it
shares the base image cache so a warm machine does not rebuild it. Integration tests
fail (never skip) when hosts cannot start.
"""

from __future__ import annotations

import collections
import difflib
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from deploy.connection import connect
from deploy.lab import Host, Lab

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
FAB = str(Path(sys.executable).parent / "fab")
TEST_HOME = Path(os.environ.get("FABSTACK_TEST_LAB_DIR", "/var/lib/fabstack-lab-test"))
TEST_SUBNET = os.environ.get("FABSTACK_TEST_LAB_SUBNET", "10.78.0.0/24")


def unused_address(last: int) -> str:
    """An address on the test lab's bridge where no host lives (traffic to it stays here)."""
    return TEST_SUBNET.rsplit(".", 1)[0] + f".{last}"


SUMMARY = re.compile(r"^(\S+) ok=(\d+) changed=(\d+) failed=(\d+)$", re.M)

os.environ["FABSTACK_LAB_DIR"] = str(TEST_HOME)
os.environ.setdefault("FABSTACK_LAB_CACHE", "/var/lib/fabstack-lab/images")
os.environ["FABSTACK_LAB_SUBNET"] = TEST_SUBNET
# the controller's cache of builds shared by hosts: the suite's own, emptied
# when the lab starts, so the cold run builds the virtualenv once and the rest reuse it
BUILD_CACHE = TEST_HOME / "build-cache"
os.environ["FABSTACK_CACHE"] = str(BUILD_CACHE)


@dataclass
class FabRun:
    args: list[str]
    code: int
    out: str
    err: str
    seconds: float

    def summary(self) -> dict[str, tuple[int, int, int]]:
        """HOST -> (ok, changed, failed) from the last summary block of the run."""
        return {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in SUMMARY.findall(self.out)}

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """HOST -> (ok, changed, failed) added up over every task of the run."""
        totals: dict[str, tuple[int, int, int]] = {}
        for host, *counts in SUMMARY.findall(self.out):
            prev = totals.get(host, (0, 0, 0))
            totals[host] = tuple(p + int(c) for p, c in zip(prev, counts, strict=True))
        return totals

    def changed(self) -> int:
        return sum(c for _, c, _ in self.totals().values())

    def __repr__(self) -> str:
        return f"fab {' '.join(self.args)} -> {self.code} in {self.seconds:.1f}s\n{self.out}\n{self.err}"


def fab(*args: str, settings: str | Path | None = None, timeout: int = 600, env: dict | None = None) -> FabRun:
    """Run the real `fab` command from the repo, as a user would."""
    env = {**os.environ, **(env or {})}
    if settings:
        env["FABSTACK_SETTINGS"] = str(settings)
    started = time.monotonic()
    proc = subprocess.run([FAB, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return FabRun(list(args), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def in_terminal(*args: str, env: dict | None = None, answers: dict[str, str] | None = None) -> tuple[int, str]:
    """Run fab on a pseudo-terminal of its own (its controlling tty, as in a user's
    shell), typing each answer once its prompt appears; return (exit code, what it showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec fab, never return into pytest
        os.chdir(REPO)
        os.execve(FAB, [FAB, *args], {**os.environ, **(env or {})})
    pending, shown = dict(answers or {}), b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed its terminal
            break
        if not chunk:
            break
        shown += chunk
        for prompt in [p for p in pending if p.encode() in shown]:
            os.write(fd, pending.pop(prompt).encode() + b"\n")
    else:  # still running at the deadline
        os.kill(pid, signal.SIGKILL)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode().replace("\r\n", "\n")


def sample_variant(tmp_path: Path, name: str, title: str = "", append: dict[str, str] | None = None) -> str:
    """A copy of the bundled sample project: its heading says `title`, and `append` adds
    lines to files (say, a broken import). Returns the project's path."""
    project = tmp_path / name
    shutil.copytree(REPO / "templates" / "sample", project)
    if title:
        views = project / "sample" / "views.py"
        views.write_text(views.read_text().replace("It works", title))
    for relative, text in (append or {}).items():
        path = project / relative
        path.write_text(path.read_text() + text)
    return str(project)


# A project as a Django developer makes it: made at test time, never committed.
BIN = Path(sys.executable).parent
MODEL = "from django.db import models\n\n\nclass Note(models.Model):\n    text = models.CharField(max_length=200)\n"
VIEWS = """from django.http import HttpResponse

from .models import Note


def index(request):
    if "add" in request.GET:
        Note.objects.create(text=request.GET["add"])
    return HttpResponse("notes: " + ",".join(n.text for n in Note.objects.order_by("id")))
"""


def git(project: Path, *args: str) -> str:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    return subprocess.run(["git", *identity, *args], cwd=project, check=True, capture_output=True, text=True).stdout


def stock_project(root: Path, env_secret: str) -> Path:
    """startproject + startapp, the app wired in as any Django developer would, a git
    repo whose .env and local_settings.py are ignored (and hold a secret)."""
    root.mkdir()
    subprocess.run([BIN / "django-admin", "startproject", "mysite", str(root)], check=True)
    subprocess.run([BIN / "python", "manage.py", "startapp", "notes"], cwd=root, check=True)
    (root / "notes" / "models.py").write_text(MODEL)
    (root / "notes" / "views.py").write_text(VIEWS)
    settings = root / "mysite" / "settings.py"
    settings.write_text(re.sub(r"(['\"]django.contrib.staticfiles['\"],)", r"\1\n    'notes',", settings.read_text()))
    urls = root / "mysite" / "urls.py"
    urls.write_text(
        urls.read_text()
        .replace("from django.urls import path", "from django.urls import path\n\nfrom notes.views import index")
        .replace("admin.site.urls),", "admin.site.urls),\n    path('notes/', index),")
    )
    subprocess.run([BIN / "python", "manage.py", "makemigrations", "notes", "-v", "0"], cwd=root, check=True)
    (root / ".gitignore").write_text(".env\nlocal_settings.py\ndb.sqlite3\n__pycache__/\n")
    (root / ".env").write_text(f"API_TOKEN={env_secret}\n")
    (root / "local_settings.py").write_text(f"LOCAL_TOKEN = '{env_secret}'\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "A stock project with a notes app")
    return root


CELERY_APP = """import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""
TASKS = """import time

from celery import shared_task

from .models import Note


@shared_task
def add_note(text, seconds=0.0):
    time.sleep(seconds)
    Note.objects.create(text=text)
"""
LATER = """

def later(request):
    from .tasks import add_note

    add_note.delay(request.GET["add"], float(request.GET.get("sleep", 0)))
    return HttpResponse("queued")
"""


def with_view(project: Path, name: str, code: str) -> None:
    """code (a view function NAME) added to the notes app, served at /notes/NAME/."""
    views = project / "notes" / "views.py"
    views.write_text(views.read_text() + code)
    urls = project / "mysite" / "urls.py"
    text = urls.read_text()
    text = re.sub(r"from notes\.views import (.*)", rf"from notes.views import \1, {name}", text, count=1)
    urls.write_text(
        text.replace("path('notes/', index),", f"path('notes/', index),\n    path('notes/{name}/', {name}),")
    )


def with_celery(project: Path) -> None:
    """Celery wired in as its docs say (mysite/celery.py, a shared task): /notes/later/
    enqueues a note that a worker writes, after `sleep` seconds; committed."""
    (project / "mysite" / "celery.py").write_text(CELERY_APP)
    init = project / "mysite" / "__init__.py"
    init.write_text(init.read_text() + "from .celery import app as celery_app\n\n__all__ = ('celery_app',)\n")
    (project / "notes" / "tasks.py").write_text(TASKS)
    with_view(project, "later", LATER)
    (project / "requirements.txt").write_text("celery[redis]>=5.4\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "Celery: notes written by a worker")


def openssl_certificate(where: Path, names: list[str], days: int = 90, ca: Path | None = None) -> dict[str, Path]:
    """A CA (or ca, reused) and a certificate for names signed by it, made by openssl:
    {"ca": root PEM, "chain": leaf PEM, "key": leaf key (mode 600)}."""
    where.mkdir(parents=True, exist_ok=True)
    ca = ca or where / "ca.pem"
    ca_key = ca.with_suffix(".key")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    if not ca.exists():
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-subj", "/CN=fabstack test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    key, csr, chain = where / "site.key", where / "site.csr", where / "site.pem"
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={names[0]}",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    (where / "site.ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", str(days),
        "-extfile", str(where / "site.ext"), "-out", str(chain))  # fmt: skip
    key.chmod(0o600)
    return {"ca": ca, "chain": chain, "key": key}


def get(url: str, opener=None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:  # no answer (refused, timed out): code 0
        return 0, str(exc)


class Remote:
    """Commands on a lab host over a strict-host-key SSH connection (for assertions)."""

    def __init__(self, host: Host):
        self.host = host
        self.conn = connect(host.target, None, [], 10)

    def run(self, command: str, check: bool = True) -> str:
        result = self.conn.run(command, hide=True, warn=True, in_stream=False)
        if check and result.exited != 0:
            raise AssertionError(f"{self.host.name}: {command!r} exited {result.exited}: {result.stderr}")
        return result.stdout

    def masters(self) -> list[int]:
        """gunicorn processes whose parent is not a gunicorn: the masters (read with ps, as
        a person would; the product finds its master through the process manager)."""
        rows = [line.split(None, 2) for line in self.run("ps -eo pid=,ppid=,args=").splitlines()]
        gunicorns = {int(pid): int(ppid) for pid, ppid, args in rows if "bin/gunicorn" in args}
        return [pid for pid, ppid in gunicorns.items() if ppid not in gunicorns]

    def master(self) -> str:
        (only,) = self.masters()
        return str(only)

    def tree(self) -> str:
        """A listing of the host's files with size, mtime, mode and owner; directories with
        mode and owner only (an entry made and removed again changes their mtime, no byte);
        login records left out, and the state logrotate's hourly timer writes whenever it
        runs (CI19: a bad-input case "changed" /var/lib/logrotate/fabstack-django.status).
        The distribution's files in /usr (half of a host's files, half the listing's time)
        are left out too: only dpkg writes there, and its records in /var/lib/dpkg are
        listed, as is /usr/local."""
        return self.run(
            "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp "
            "-o -path /usr/share -o -path /usr/lib -o -path /usr/bin -o -path /usr/sbin -o -path /usr/include "
            "-o -path /var/log/journal -o -path /var/log/wtmp -o -path /var/log/btmp -o -path /var/log/lastlog "
            "-o -path /var/lib/logrotate "
            "\\) -prune -o -type d -printf '%p/ %m %u:%g\\n' -o -printf '%p %s %T@ %m %u:%g %l\\n' | sort"
        )


def wait_until(condition: Callable[[], T], seconds: float, what: str) -> T:
    """condition()'s first true value, asked every 0.2 s until the deadline."""
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds}s"
        time.sleep(0.2)
    return found


def changed_paths(before: str, after: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """The paths whose line differs between two `Remote.tree()` listings, minus those under
    `ignore`: a failing comparison names what changed instead of printing two whole trees.
    Equal listings are the usual case, and difflib over two of them costs seconds."""
    if before == after:
        return []
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    paths = {line[1:].split(" ", 1)[0] for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---")}
    return sorted(p for p in paths if not p.startswith(ignore))


LOGS_KEPT = Path(os.environ.get("FABSTACK_TEST_LOGS", "/tmp/fabstack-test-logs"))
HOST_LOGS = ("var/log/nginx", "var/log/django")


def keep_host_logs(lab: Lab) -> list[Path]:
    """Copy every lab host's nginx and gunicorn logs out of its disk before the lab goes:
    a failure that comes once in N runs is found in these, not guessed at."""
    kept = []
    shutil.rmtree(LOGS_KEPT, ignore_errors=True)
    for host in lab.hosts():
        for relative in HOST_LOGS:
            source = lab.hosts_dir / host.name / "root" / relative
            if source.is_dir():
                target = LOGS_KEPT / host.name / relative
                shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
                kept += [
                    p for p in target.rglob("*error.log") if p.is_file() and not p.is_symlink() and p.stat().st_size
                ]
    return kept


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the lab must be marked lab: the lab fixture begins by taking the
    lab down, and `make unit` (-m "not lab") would otherwise run it, and take down the
    hosts a suite running beside it is using."""
    unmarked = [i.nodeid for i in items if "lab" in getattr(i, "fixturenames", ()) and not i.get_closest_marker("lab")]
    if unmarked:
        raise pytest.UsageError(f"tests that use the lab without pytestmark = pytest.mark.lab: {unmarked}")


@pytest.fixture(scope="session")
def lab(request) -> Lab:
    lab = Lab(TEST_HOME, subnet=TEST_SUBNET, log=lambda msg: print(msg, file=sys.stderr))
    lab.down()
    shutil.rmtree(BUILD_CACHE, ignore_errors=True)
    yield lab
    if request.session.testsfailed:  # print what the hosts' error logs say, for CI's log
        for log in keep_host_logs(lab):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            print(f"\n==> {log} (last {len(lines)} lines) <==", *lines, sep="\n", file=sys.stderr)
    lab.down()


@dataclass
class ColdRun:
    """The suite's one cold provision + deploy: a systemd host and an sshd-only host at once."""

    hosts: list[Host]
    first: FabRun
    second: FabRun
    settings: Path
    builds: list[Path]  # the archives the cold run put in the build cache (tests before it may add others)


@pytest.fixture(scope="session")
def cold(lab: Lab, tmp_path_factory) -> ColdRun:
    settings = tmp_path_factory.mktemp("cold") / "fabstack.yaml"
    settings.write_text("workers: 3\n")
    hosts = lab.up(count=1, init="systemd", prefix="sd") + lab.up(count=1, init="sshd", prefix="ss")
    targets = ",".join(h.target for h in hosts)
    cached = set((BUILD_CACHE / "builds").glob("*.tar.gz"))
    # progress every 2 s, so the cold run's long steps (apt, pip) show they are alive
    first = fab("-H", targets, "provision", "deploy", settings=settings, env={"FABSTACK_PROGRESS_EVERY": "2"})
    builds = sorted(set((BUILD_CACHE / "builds").glob("*.tar.gz")) - cached)
    second = fab("-H", targets, "provision", "deploy", settings=settings)
    return ColdRun(hosts, first, second, settings, builds)


@pytest.fixture(scope="session")
def deployed_snapshot(lab: Lab, cold: ColdRun) -> str:
    """The cold sshd host, provisioned and deployed, saved for other tests to start from;
    with the distribution's glusterfs-server unpacked once here, not on each farm's app
    hosts (a farm's shared media needs it: provision finds it there and starts it)."""
    assert cold.first.code == 0, cold.first
    r = Remote(cold.hosts[1])
    try:
        r.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends glusterfs-server > /dev/null"
            # no glusterd identity in the image: each host started from it makes its own
            " && { pkill -x glusterd || true; } && rm -f /var/lib/glusterd/glusterd.info"
        )
    finally:
        r.conn.close()
    lab.snapshot("deployed", cold.hosts[1].name)
    return "deployed"


def converged_pair(lab: Lab, snapshot: str, settings: Path, prefix: str) -> list[Host]:
    """A systemd host and an sshd-only host (PREFIXsd1, PREFIXss1) started from snapshot,
    then provisioned and deployed with settings."""
    hosts = lab.up(count=1, init="systemd", prefix=f"{prefix}sd", snapshot=snapshot) + lab.up(
        count=1, init="sshd", prefix=f"{prefix}ss", snapshot=snapshot
    )
    run = fab("-H", ",".join(h.target for h in hosts), "provision", "deploy", settings=settings)
    assert run.code == 0, run
    return hosts


@pytest.fixture
def remote():
    opened: list[Remote] = []

    def make(host: Host) -> Remote:
        opened.append(Remote(host))
        return opened[-1]

    yield make
    for r in opened:
        r.conn.close()


class Load:
    """Bounded load on one site: `clients` threads asking for `path` (with a Host header
    when `host` is given) until stopped or max_requests; counts what failed and, in
    `bodies`, which release answered (the sample's "Release Vn" pages)."""

    def __init__(self, address: str, clients: int = 20, max_requests: int = 50_000, path: str = "/", host: str = ""):
        self.address, self.path, self.host = address, path, host
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.sent, self.failed, self.bodies = 0, 0, collections.Counter()
        self.max_requests, self.slowest = max_requests, 0.0
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def request(self) -> urllib.request.Request:
        return urllib.request.Request(
            f"http://{self.address}{self.path}", headers={"Host": self.host} if self.host else {}
        )

    def client(self) -> None:
        while not self.stop.is_set() and self.sent < self.max_requests:
            marker, ok, started = "", True, time.monotonic()
            try:
                with urllib.request.urlopen(self.request(), timeout=10) as response:
                    body = response.read().decode()
                    marker = next((w for w in ("V1", "V2", "V3", "V4") if f"Release {w}" in body), "?")
            except (urllib.error.URLError, OSError):
                ok = False
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.sent += 1
                self.failed += 0 if ok else 1
                self.bodies[marker] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def broken_site_templates(tmp_path: Path) -> Path:
    """A templates_dir whose nginx site has a directive nginx does not know: the site
    renders, and `nginx -t` fails on it."""
    templates = tmp_path / "broken-templates"
    templates.mkdir()
    good = (REPO / "templates" / "nginx-site.conf.j2").read_text()
    (templates / "nginx-site.conf.j2").write_text(
        good.replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;")
    )
    return templates
