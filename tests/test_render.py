"""Rendering and packing, without hosts: templates, gunicorn settings, release archives."""

from __future__ import annotations

import ast
import os
import shutil
import sys

import pytest
from conftest import REPO

from deploy import settings as s
from deploy.appenv import app_env
from deploy.facts import HostFacts
from deploy.host import HostContext
from deploy.release import Release
from deploy.render import check, environment, names, render, variables
from deploy.steps import nginx, release


def FakeHostRun(settings, facts, host="root@203.0.113.5"):  # noqa: N802
    """A host with facts but no connection: only for rendering."""
    return HostContext(host, settings, HostFacts.parse("".join(f"{k}={v}\n" for k, v in facts.items())))


def gunicorn_conf(**raw) -> str:
    return release.gunicorn_conf(FakeHostRun(s.validate(raw), {"nproc": "4"}))


def test_gunicorn_config_has_only_settings_gunicorn_knows():
    from gunicorn.config import KNOWN_SETTINGS  # the real list from the gunicorn package

    known = {setting.name for setting in KNOWN_SETTINGS}
    tree = ast.parse(gunicorn_conf())
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert names and names <= known, names - known
    assert "debug" not in names and "logfile" not in names


def test_workers_default_to_twice_the_cores_plus_one():
    assert "workers = 9\n" in gunicorn_conf()
    assert "workers = 2\n" in gunicorn_conf(workers=2)


def test_worker_class_specific_settings():
    assert "threads = 4" in gunicorn_conf(worker_class="gthread", threads=4)
    assert "threads" not in gunicorn_conf(worker_class="sync")
    assert "worker_connections" in gunicorn_conf()


def test_preload_app_patches_gevent_first_and_names_the_master():
    """With preload_app the master imports the app: gevent patches it before anything
    else, its workers name their master to the health check, and the
    result is still only settings gunicorn knows (plus its hooks)."""
    from gunicorn.config import KNOWN_SETTINGS

    conf = gunicorn_conf(preload_app=True)
    tree = ast.parse(conf)
    first = tree.body[0]
    assert isinstance(first, ast.ImportFrom) and first.module == "gevent"
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert "preload_app" in names and names <= {setting.name for setting in KNOWN_SETTINGS}
    hooks = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "post_worker_init" in hooks
    assert "monkey" not in gunicorn_conf(preload_app=True, worker_class="sync")
    assert "preload_app" not in gunicorn_conf() and "X-Fabstack-Master" not in gunicorn_conf()


def test_nginx_site_proxies_with_headers_and_safe_aliases():
    h = FakeHostRun(s.validate({"server_name": "example.com www.example.com"}), {})
    site = nginx.site_config(h)
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for",
                   "X-Forwarded-Proto $scheme", 'X-Fabstack-Probe ""'):  # fmt: skip
        assert f"proxy_set_header {header};" in site
    assert "server_name example.com www.example.com;" in site
    assert "location /static/ {\n        alias /srv/django/current/staticfiles/;" in site
    assert "location /media/ {\n        alias /srv/django/shared/media/;" in site
    assert "proxy_pass http://django_app;" in site and "server unix:/srv/django/run/gunicorn.sock;" in site


def test_user_templates_override_ours(tmp_path):
    (tmp_path / "nginx-site.conf.j2").write_text("# mine {{ app_name }}\n")
    h = FakeHostRun(s.validate({"templates_dir": str(tmp_path)}), {})
    assert nginx.site_config(h) == "# mine django\n"


def test_every_template_of_ours_parses_and_a_step_renders_it():
    check(every=True)  # a run checks only a user's templates_dir: ours are parsed here
    sources = "".join(p.read_text() for p in (REPO / "deploy").rglob("*.py"))
    included = {"nginx-tls.conf.j2", "nginx-acme.conf.j2", "nginx-redirect.conf.j2", "nginx-maintenance.conf.j2",
                "nginx-maintenance-geo.conf.j2"}  # by the two sites  # fmt: skip
    assert [name for name in names() if f'"{name}"' not in sources and name not in included] == []
    assert variables("apt-proxy.conf.j2") == {"proxy"}


def test_template_errors_are_one_line_and_found_before_any_host(tmp_path):
    (tmp_path / "nginx-site.conf.j2").write_text("{{ app_name }}\n{% if %}\n")
    with pytest.raises(s.SettingsError, match=r"template .*nginx-site.conf.j2 line 2: .*fix the template"):
        check(str(tmp_path))
    (tmp_path / "nginx-site.conf.j2").write_text("{{ not_defined }}\n")
    with pytest.raises(s.SettingsError, match=r"\{\{ not_defined \}\} is not a variable fabstack passes; use one of"):
        check(str(tmp_path))
    (tmp_path / "nginx-site.conf.j2").write_text("{{ app_name.nope.deeper }}\n")  # only rendering finds this one
    check(str(tmp_path))
    context = dict.fromkeys(variables("nginx-site.conf.j2"), "x")
    with pytest.raises(s.SettingsError, match="has no attribute 'nope'; fix the template or the setting it uses"):
        render(environment(str(tmp_path)), "nginx-site.conf.j2", **context)


def test_release_is_deterministic_and_skips_junk(tmp_path):
    project = tmp_path / "p"
    shutil.copytree(REPO / "templates" / "sample", project)
    first = Release(project, "staticfiles")
    (project / "sample" / "__pycache__").mkdir(exist_ok=True)
    (project / "sample" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (project / "db.sqlite3").write_text("local db")
    (project / "staticfiles").mkdir()
    (project / "staticfiles" / "collected.css").write_text("x")
    second = Release(project, "staticfiles")
    assert first.id == second.id and len(first.id) == 12
    (project / "sample" / "views.py").write_text("# changed\n")
    assert Release(project, "staticfiles").id != first.id


def test_app_environment_has_paths_not_secrets():
    h = FakeHostRun(s.validate({"server_name": "example.com"}), {})
    env = app_env(h.settings, h.facts)
    assert env["DJANGO_SECRET_KEY_FILE"].endswith("/secret_key")
    assert env["DJANGO_ALLOWED_HOSTS"] == "example.com,localhost"
    assert not any("SECRET_KEY=" in f"{k}={v}" for k, v in env.items() if k != "DJANGO_SECRET_KEY_FILE")


INVENTORY = {
    "hosts": [
        {"host": "root@10.0.0.10", "roles": ["lb"]},
        {"host": "root@10.0.0.11", "weight": 3, "max_fails": 2, "fail_timeout": "30s"},
        {"host": "root@10.0.0.12", "backup": True},
    ],
    "server_name": "shop.example.com",
}


@pytest.mark.parametrize(
    ("raw", "addresses", "expected"),
    [
        ({"server_name": "shop.example.com *.shop.example.com"}, "", "shop.example.com,.shop.example.com,localhost"),
        ({}, "10.0.0.11 fd00::11", "10.0.0.11,[fd00::11],127.0.0.1,[::1],localhost"),  # `_`: this host's addresses
        ({**INVENTORY, "server_name": "_"}, "10.0.0.11", "10.0.0.11,10.0.0.10,127.0.0.1,[::1],localhost"),  # its lbs'
        ({"allowed_hosts": ["*"]}, "10.0.0.11", "*,localhost"),  # only when asked for
    ],
)
def test_allowed_hosts_are_never_a_wildcard_by_default(raw, addresses, expected):
    h = FakeHostRun(s.validate(raw), {"addresses": addresses}, host="root@10.0.0.11")
    assert app_env(h.settings, h.facts)["DJANGO_ALLOWED_HOSTS"] == expected


@pytest.mark.parametrize(
    ("method", "line"),
    [("round_robin", None), ("least_conn", "least_conn;"), ("hash", "hash $request_uri consistent;")],
)
def test_lb_upstream_from_the_inventory(method, line):
    hosts = [{k: v for k, v in m.items() if not (k == "backup" and method == "hash")} for m in INVENTORY["hosts"]]
    h = FakeHostRun(s.validate({**INVENTORY, "hosts": hosts, "lb_method": method}), {}, host="root@10.0.0.10")
    lb = nginx.lb_config(h)
    assert "upstream django_apps {" in lb
    assert "server 10.0.0.11:8080 weight=3 max_fails=2 fail_timeout=30s;" in lb
    assert f"server 10.0.0.12:8080{'' if method == 'hash' else ' backup'};" in lb and "10.0.0.10:8080" not in lb
    assert "keepalive 16;" in lb and 'proxy_set_header Connection "";' in lb and "proxy_http_version 1.1;" in lb
    assert "zone django_apps 64k;" in lb  # one rotation and one failure count for every worker
    assert "keepalive_timeout 10s;" in lb  # the lb gives up on an idle connection first
    assert "server_name shop.example.com;" in lb and "proxy_pass http://django_apps;" in lb
    method_lines = {"least_conn;", "ip_hash;", "hash $request_uri consistent;", "random;"}
    assert {m for m in method_lines if f"    {m}" in lb} == ({line} if line else set())


def test_app_site_behind_an_lb_listens_privately_and_allows_only_the_lb():
    h = FakeHostRun(s.validate(INVENTORY), {}, host="root@10.0.0.11")
    site = nginx.site_config(h)
    # the default app on the lbs is the default on the app hosts (the lbs pass the client's Host)
    assert "listen 10.0.0.11:8080 default_server;" in site and "listen 127.0.0.1:8080 default_server;" in site
    assert "listen 80" not in site
    other = nginx.site_config(
        FakeHostRun(s.validate({**INVENTORY, "default_server": False}), {}, host="root@10.0.0.11")
    )
    assert "listen 10.0.0.11:8080;" in other and "default_server" not in other
    assert "allow 10.0.0.10;\n    allow 127.0.0.1;\n    deny all;" in site
    assert "keepalive_timeout 15s;" in site  # longer than the lb's 10 s: the server closes last
    assert h.settings.inventory.roles_of(h.host) == ("app",)
    assert s.validate({}).inventory.roles_of(h.host) == ("app", "lb")


def test_app_site_keeps_no_idle_connection_to_gunicorn():
    for inventory in ({}, INVENTORY):
        site = nginx.site_config(FakeHostRun(s.validate(inventory), {}, host="root@10.0.0.11"))
        upstream = site[site.index("upstream ") : site.index("}")]
        assert "keepalive" not in upstream and 'Connection ""' not in site, site


PROJECT_SETTINGS = """
import os

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]  # django-environ and cookiecutter read these at import
DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
API_TOKEN = os.environ["API_TOKEN"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "ATOMIC_REQUESTS": True,
                         "CONN_MAX_AGE": 60, "OPTIONS": {"sslmode": "disable"}}}
CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://localhost:6379/0"}}
SECURE_HSTS_SECONDS = 3600
"""


def generated_settings(tmp_path, monkeypatch, project_settings: str, env: dict[str, str]) -> dict:
    """fabstack's generated settings module run over a project settings module of
    project_settings' text, with env (NAME: a secret file's text for NAME_FILE), as a
    host's app process runs it; its globals."""
    (tmp_path / "proj_settings.py").write_text(project_settings)
    code = render(environment(""), "fabstack_settings.py.j2", project_settings="proj_settings", static_dir="static")
    for name in [n for n in os.environ if n.startswith("DJANGO_") or n in ("DATABASE_URL", "REDIS_URL", "API_TOKEN")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.endswith("_FILE"):
            (tmp_path / name).write_text(value + "\n")
            value = str(tmp_path / name)
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("proj_settings", None)
    scope: dict = {"__file__": str(tmp_path / "fabstack_settings.py")}
    exec(compile(code, "fabstack_settings.py", "exec"), scope)
    return scope


def test_generated_settings_give_the_environment_projects_read_and_keep_what_is_theirs(tmp_path, monkeypatch):
    env = {
        "DJANGO_SECRET_KEY_FILE": "k" * 50, "DJANGO_DB_PASSWORD_FILE": "p@ss/word", "DJANGO_REDIS_URL_FILE":
        "redis://django:secret@10.0.0.13:6379/0", "DJANGO_API_TOKEN_FILE": "token", "DJANGO_DB_ENGINE": "postgresql",
        "DJANGO_DB_HOST": "10.0.0.13", "DJANGO_DB_PORT": "5432", "DJANGO_DB_NAME": "django", "DJANGO_DB_USER": "django",
        "DJANGO_ALLOWED_HOSTS": "example.com", "DJANGO_STATIC_URL": "/static/", "DJANGO_MEDIA_URL": "/media/",
        "DJANGO_MEDIA_ROOT": "/srv/django/shared/media", "DJANGO_DB_PATH": "/srv/django/shared/data/db.sqlite3",
        "DJANGO_HTTPS": "1", "DJANGO_HSTS_SECONDS": "0",
    }  # fmt: skip
    scope = generated_settings(tmp_path, monkeypatch, PROJECT_SETTINGS, env)
    assert scope["DATABASE_URL"] == "postgres://django:p%40ss%2Fword@10.0.0.13:5432/django"
    assert (scope["SECRET_KEY"], scope["API_TOKEN"]) == ("k" * 50, "token")
    db = scope["DATABASES"]["default"]
    assert (db["HOST"], db["PASSWORD"], db["ATOMIC_REQUESTS"], db["CONN_MAX_AGE"]) == (
        "10.0.0.13", "p@ss/word", True, 60,
    )  # fmt: skip
    assert db["OPTIONS"]["sslmode"] == "disable" and db["OPTIONS"]["connect_timeout"] == 5
    assert scope["CELERY_RESULT_BACKEND"] == scope["CELERY_BROKER_URL"] == "redis://django:secret@10.0.0.13:6379/0"
    assert scope["CACHES"]["default"] == {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://django:secret@10.0.0.13:6379/0",
        "KEY_PREFIX": "django",
    }  # fmt: skip
    assert scope["SECURE_HSTS_SECONDS"] == 3600  # tls.hsts 0: the project's own stays


def test_generated_settings_keep_a_value_the_env_setting_gives(tmp_path, monkeypatch):
    env = {
        "DJANGO_SECRET_KEY_FILE": "k" * 50, "DATABASE_URL": "postgres://elsewhere/db", "REDIS_URL": "redis://r/1",
        "API_TOKEN": "t", "DJANGO_ALLOWED_HOSTS": "", "DJANGO_STATIC_URL": "/s/", "DJANGO_MEDIA_URL": "/m/",
        "DJANGO_MEDIA_ROOT": "/m", "DJANGO_DB_PATH": "/srv/django/shared/data/db.sqlite3",
    }  # fmt: skip
    scope = generated_settings(tmp_path, monkeypatch, PROJECT_SETTINGS, env)
    assert scope["DATABASE_URL"] == "postgres://elsewhere/db"  # the project read the env setting's value
    assert scope["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert scope["DATABASES"]["default"]["ATOMIC_REQUESTS"] is True
