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
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ColdRun, Remote, fab, get, git, stock_project

from deploy.lab import Host, Lab

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


# cookiecutter-django's conventions, as its template generates them: pyproject.toml and no
# requirements.txt, config/ with settings/{base,local,production}.py read by
# django-environ (DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL at import), manage.py on
# local and wsgi.py on production, Celery with a result backend, a Redis cache,
# ATOMIC_REQUESTS, a pinned psycopg, a redirect of every page to HTTPS by default.
COOKIECUTTER = {
    "pyproject.toml": '[project]\nname = "shop"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = [\n'
    '    "Django>=5.2,<6",\n    "django-environ>=0.11",\n    "celery[redis]>=5.4",\n    "psycopg[binary]==3.2.10",\n]\n',
    "manage.py": "#!/usr/bin/env python\nimport os\nimport sys\n\nif __name__ == '__main__':\n"
    "    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.local')\n"
    "    from django.core.management import execute_from_command_line\n\n    execute_from_command_line(sys.argv)\n",
    "config/__init__.py": "from .celery_app import app as celery_app\n\n__all__ = ('celery_app',)\n",
    "config/celery_app.py": "import os\n\nfrom celery import Celery\n\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.local')\napp = Celery('shop')\n"
    "app.config_from_object('django.conf:settings', namespace='CELERY')\napp.autodiscover_tasks()\n",
    "config/wsgi.py": "import os\n\nfrom django.core.wsgi import get_wsgi_application\n\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.production')\n"
    "application = get_wsgi_application()\n",
    "config/urls.py": "from django.contrib import admin\nfrom django.urls import path\n\nfrom shop.views import cached, work\n\n"
    "urlpatterns = [path('admin/', admin.site.urls), path('work/', work), path('cached/', cached)]\n",
    "config/settings/__init__.py": "",
    "config/settings/base.py": """from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
SECRET_KEY = env("DJANGO_SECRET_KEY")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
REDIS_URL = env("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles", "shop"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.contrib.sessions.middleware.SessionMiddleware",
              "django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
ROOT_URLCONF = "config.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth",
                                                 "django.contrib.messages.context_processors.messages"]}}]
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
""",
    "config/settings/local.py": "from .base import *  # noqa: F403\n\nDEBUG = True\n",
    "config/settings/production.py": "from .base import *  # noqa: F403\nfrom .base import env\n\nDEBUG = False\n"
    "ALLOWED_HOSTS = env.list('DJANGO_ALLOWED_HOSTS')\n"
    "SECURE_SSL_REDIRECT = env.bool('DJANGO_SECURE_SSL_REDIRECT', default=True)\n",
    "shop/__init__.py": "",
    "shop/tasks.py": "from celery import shared_task\n\n\n@shared_task\ndef add(x, y):\n    return x + y\n",
    "shop/views.py": """from django.core.cache import cache
from django.http import HttpResponse

from .tasks import add


def work(request):
    return HttpResponse(add.delay(2, 3).id)


def cached(request):
    if "set" in request.GET:
        cache.set("greeting", request.GET["set"], 600)
    return HttpResponse(str(cache.get("greeting")))
""",
    ".gitignore": ".env\n__pycache__/\n",
}


def cookiecutter_project(root: Path) -> Path:
    for name, text in COOKIECUTTER.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "As the template made it")
    return root


def shop_page(lb: Host, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{lb.address}{path}", headers={"Host": "shop.test"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_a_cookiecutter_django_project_deploys_unmodified_with_celery_results_and_one_cache(grown, tmp_path):
    (lb, app1, app2, db), _, grown_settings = grown
    project = cookiecutter_project(tmp_path / "shop")
    settings = tmp_path / "shop.yaml"
    hosts = yaml.safe_load(grown_settings.read_text())["hosts"]
    worker = {"worker": {"command": "celery -A config.celery_app worker -l info --concurrency 1"}}
    config = {"hosts": hosts, "app_name": "shop", "project_path": str(project), "server_name": "shop.test",
              "default_server": False, "redis": True, "workers": 2, "processes": worker}  # fmt: skip
    settings.write_text(yaml.safe_dump(config))
    # the template redirects every page to HTTPS, which nothing serves without tls: refused
    first = fab("provision", "deploy", settings=settings)
    assert first.code == 1 and "this site serves no HTTPS" in first.out + first.err, (first.out + first.err)[-3000:]
    settings.write_text(yaml.safe_dump({**config, "env": {"DJANGO_SECURE_SSL_REDIRECT": "False"}}))
    run = fab("provision", "deploy", settings=settings)
    assert run.code == 0, (run.out + run.err)[-4000:]
    # a task's result, from the worker through Redis's result backend
    status, task = shop_page(lb, "/work/")
    assert status == 200 and task, (status, task)
    result = f"from celery.result import AsyncResult; print('result', AsyncResult('{task}').get(timeout=60))"
    shown = fab("manage", "--", "shell", "-c", result, settings=settings)
    assert shown.code == 0 and "result 5" in shown.out, shown
    # one cache for the farm: set through one app host, read on the other
    set_on = fab("-H", app1.target, "manage", "--", "shell", "-c",
                 "from django.core.cache import cache; cache.set('farm', 'one', 600)", settings=settings)  # fmt: skip
    assert set_on.code == 0, set_on
    got = fab("-H", app2.target, "manage", "--", "shell", "-c",
              "from django.core.cache import cache; print('cached', cache.get('farm'))", settings=settings)  # fmt: skip
    assert "cached one" in got.out, got
    assert {shop_page(lb, "/cached/?set=hi")[1]} | {shop_page(lb, "/cached/")[1] for _ in range(10)} == {"hi"}
    # the project's own database setting kept; one psycopg, the project's pin
    kept = fab("manage", "--", "shell", "-c",
               "from django.conf import settings; print('atomic', settings.DATABASES['default']['ATOMIC_REQUESTS'])",
               settings=settings)  # fmt: skip
    assert "atomic True" in kept.out, kept
    r = Remote(app1)
    try:
        listed = r.run(
            '/srv/shop/venv/bin/python -c "from importlib.metadata import distributions as d; '
            "print(sorted(f'{x.name}=={x.version}' for x in d() if x.name.lower().startswith('psycopg')))\""
        )
    finally:
        r.conn.close()
    assert listed.strip() == "['psycopg-binary==3.2.10', 'psycopg==3.2.10']", listed
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again.out[-3000:]
