"""Real projects as their authors lay them out, made at test time and deployed unmodified
with a settings file only, on 1 lb + 2 app hosts + 1 PostgreSQL db host: startproject
grown as real ones grow (a settings package with base/dev/production, manage.py on dev,
requirements.txt = `-r requirements/production.txt` + `-c constraints.txt`,
dj-database-url reading DATABASE_URL, django.contrib.postgres only on PostgreSQL, a C
extension vendored as an sdist and built on the host with the compiler system_packages
brings)."""

from __future__ import annotations

import io
import secrets
import shlex
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import ColdRun, Remote, fab, get, git, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab

EXTENSION_C = """#include <Python.h>

static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "The answer."}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tinyext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_tinyext(void) { return PyModule_Create(&module); }
"""
EXTENSION = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
    '[project]\nname = "tinyext"\nversion = "0.1"\n',
    "setup.py": 'from setuptools import Extension, setup\n\nsetup(ext_modules=[Extension("tinyext", ["tinyext.c"])])\n',
    "tinyext.c": EXTENSION_C,
    "PKG-INFO": "Metadata-Version: 2.1\nName: tinyext\nVersion: 0.1\n",
}
PRODUCTION = """import dj_database_url

from .base import *  # noqa: F403

DEBUG = False
DATABASES = {"default": dj_database_url.config(conn_max_age=0)}  # KeyError below without DATABASE_URL
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.postgres"]  # noqa: F405
"""
EXT_VIEW = """

def ext(request):
    import tinyext
    from django.conf import settings

    postgres = "django.contrib.postgres" in settings.INSTALLED_APPS
    return HttpResponse(f"answer {tinyext.answer()} postgres {postgres}")
"""


def sdist(files: dict[str, str], name: str) -> bytes:
    """A source distribution (NAME/ and its files) as pip reads one."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def grown_project(root: Path) -> Path:
    """startproject, then laid out as real projects are (see the module)."""
    project = stock_project(root, "grown-" + secrets.token_hex(8))
    flat = project / "mysite" / "settings.py"
    package = project / "mysite" / "settings"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        flat.read_text().replace(
            "Path(__file__).resolve().parent.parent", "Path(__file__).resolve().parent.parent.parent"
        )
    )
    (package / "dev.py").write_text("from .base import *  # noqa: F403\n\nDEBUG = True\n")
    (package / "production.py").write_text(PRODUCTION)
    flat.unlink()
    for name in ("manage.py", "mysite/wsgi.py", "mysite/asgi.py"):
        path = project / name
        path.write_text(path.read_text().replace("'mysite.settings'", "'mysite.settings.dev'"))
    (project / "vendor").mkdir()
    (project / "vendor" / "tinyext-0.1.tar.gz").write_bytes(sdist(EXTENSION, "tinyext-0.1"))
    (project / "requirements").mkdir()
    (project / "requirements.txt").write_text("-r requirements/production.txt\n-c constraints.txt\n")
    (project / "requirements" / "base.txt").write_text("Django>=5.2,<6\n")
    (project / "requirements" / "production.txt").write_text(
        "-r base.txt\ndj-database-url>=2\nvendor/tinyext-0.1.tar.gz\n"
    )
    (project / "constraints.txt").write_text("dj-database-url==3.1.2\n")
    views = project / "notes" / "views.py"
    views.write_text(views.read_text() + EXT_VIEW)
    urls = project / "mysite" / "urls.py"
    urls.write_text(
        urls.read_text()
        .replace("from notes.views import index", "from notes.views import ext, index")
        .replace("path('notes/', index),", "path('notes/', index),\n    path('ext/', ext),")
    )
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "A settings package, nested requirements, a C extension")
    return project


@pytest.fixture(scope="module")
def grown(lab: Lab, cold: ColdRun, deployed_snapshot: str, tmp_path_factory):
    hosts = lab.up(count=4, init="systemd", prefix="real", snapshot=deployed_snapshot)
    root = tmp_path_factory.mktemp("real")
    project = grown_project(root / "mysite")
    lb, app1, app2, db = hosts
    inventory = [{"host": lb.target, "roles": ["lb"]}, {"host": app1.target}, {"host": app2.target},
                 {"host": db.target, "roles": ["db"]}]  # fmt: skip
    base = yaml.safe_load(cold.settings.read_text()) or {}
    settings = root / "fabstack.yaml"
    settings.write_text(yaml.safe_dump({**base, "project_path": str(project), "hosts": inventory}))
    return hosts, project, settings


def with_settings(settings: Path, **changes) -> None:
    settings.write_text(yaml.safe_dump({**yaml.safe_load(settings.read_text()), **changes}))


def test_a_grown_project_deploys_unmodified_with_a_settings_file_only(grown):
    (lb, app1, app2, db), project, settings = grown
    # without a compiler the vendored C extension cannot build: the run says what to add
    first = fab("provision", "deploy", settings=settings)
    hint = "a requirement builds from source and needs a C compiler: add build-essential python3-dev to system_packages"
    assert first.code == 1 and hint in first.out + first.err, (first.out + first.err)[-3000:]
    said = "fabstack: settings module mysite.settings.production (the project's default, mysite.settings.dev, is for"
    assert said in first.out + first.err
    with_settings(settings, system_packages=["build-essential", "python3-dev"])
    run = fab("provision", "deploy", settings=settings)
    assert run.code == 0, (run.out + run.err)[-4000:]
    # the C extension built on a host, django.contrib.postgres in (DATABASE_URL was postgres)
    assert get(f"http://{lb.address}/ext/") == (200, "answer 42 postgres True")
    assert get(f"http://{lb.address}/notes/?add=grown")[0] == 200
    assert {get(f"http://{lb.address}/notes/") for _ in range(20)} == {(200, "notes: grown")}  # one database
    assert get(f"http://{lb.address}/admin/login/")[0] == 200
    assert get(f"http://{lb.address}/static/admin/css/base.css")[0] == 200
    for host in (app1, app2):  # gunicorn serves the production module, which dj-database-url configured
        r = Remote(host)
        try:
            shown = r.run("runuser -u django -- cat /srv/django/current/fabstack_settings.py | grep '^from mysite'")
            assert shown.strip().startswith("from mysite.settings.production import *"), shown
        finally:
            r.conn.close()
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again.out[-3000:]


def test_a_change_in_an_included_requirements_file_rebuilds_and_a_rerun_changes_nothing(grown):
    (lb, *_), project, settings = grown
    (project / "constraints.txt").write_text("dj-database-url==3.1.0\n")
    git(project, "commit", "-qam", "An older dj-database-url")
    run = fab("deploy", settings=settings)
    assert run.code == 0 and run.out.count("project requirements: changed") == 2, run.out[-3000:]
    version = "from importlib.metadata import version; print(version('dj-database-url'))"
    shown = fab("manage", "--", "shell", "-c", version, settings=settings)
    assert "3.1.0" in shown.out, shown
    again = fab("deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again.out[-3000:]
    assert get(f"http://{lb.address}/ext/") == (200, "answer 42 postgres True")


def test_the_database_url_s_password_is_in_no_output_and_no_file_others_can_read(grown):
    (lb, app1, app2, db), project, settings = grown
    d = Remote(db)
    try:
        password = d.run("cat /etc/fabstack/django/db_password").strip()
    finally:
        d.conn.close()
    assert len(password) >= 20
    runs = [
        fab("provision", "deploy", "--verbose", settings=settings),
        fab("provision", "deploy", "--json", settings=settings),
        fab("provision", "deploy", "--dry-run", settings=settings),
        fab("status", "--json", settings=settings),
        fab("check", settings=settings),
    ]
    assert all(r.code == 0 for r in runs), [r.out[-500:] for r in runs if r.code]
    assert not [r.args for r in runs if password in r.out + r.err]
    for host in (app1, app2):
        r = Remote(host)
        try:
            # a user who is neither root nor the app finds it nowhere
            found = r.run(
                f"runuser -u nobody -- grep -rlsF -- {shlex.quote(password)} /srv /etc /tmp /var/log /var/lib /run "
                "/home || true"
            )
            assert found.strip() == "", found
        finally:
            r.conn.close()
