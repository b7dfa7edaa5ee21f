"""Settings validation: every bad value stops with one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, fab

from deploy import settings as s
from deploy.connection import check_host_string
from deploy.docs import TARGET, settings_reference

BAD = [
    ({"workers": 0}, "workers=0 is invalid: use a number >= 1, or auto"),
    ({"workers": -1}, "workers=-1 is invalid"),
    ({"workers": "many"}, "workers='many' is invalid: use a number >= 1, or auto"),
    ({"workers": 2.5}, "workers=2.5: expected int or str, got float"),
    ({"listen_port": 70000}, "listen_port=70000 is invalid: use a port from 1 to 65535"),
    ({"listen_port": 0}, "listen_port=0 is invalid"),
    ({"worker_class": "tornado"}, "worker_class='tornado' is invalid: use one of: sync, gevent, gthread"),
    ({"worker_class": "meinheld"}, "meinheld is unmaintained since 2020"),
    ({"worker_class": "egg:meinheld#gunicorn_worker"}, "meinheld is unmaintained"),
    ({"bind": "0.0.0.0:8000"}, "gunicorn must be reachable only through nginx"),
    ({"bind": "localhost"}, "use HOST:PORT"),
    ({"app_name": "Bad Name"}, "app_name='Bad Name' is invalid"),
    ({"app_name": "root name"}, "app_name="),
    ({"wsgi_module": "sample.wsgi"}, "use module.path:callable"),
    ({"wsgi_module": "nothere.wsgi:application"}, "nothere.wsgi not found in"),
    ({"project_path": "/does/not/exist"}, "project_path='/does/not/exist': no such directory"),
    ({"server_name": "a;b"}, "server_name='a;b' is invalid"),
    ({"static_url": "static"}, "static_url='static' is invalid"),
    ({"health_path": "healthz"}, "health_path='healthz' is invalid"),
    ({"django_version": "; rm -rf /"}, "django_version="),
    ({"loglevel": "loud"}, "loglevel='loud' is invalid"),
    ({"threads": 0}, "threads=0 is invalid"),
    ({"parallel": 0}, "parallel=0 is invalid"),
    ({"timeout": True}, "timeout=True: expected int"),
    ({"allowed_hosts": 5}, "allowed_hosts=5: expected list"),
    ({"wokers": 3}, "unknown setting 'wokers'"),
    ({"accept_new_host_keys": "yes"}, "accept_new_host_keys='yes': expected bool, got str"),
    ({"lb_method": "fair"}, "fair needs the third-party upstream_fair module"),
    ({"lb_method": "url_hash"}, "url_hash is `hash $request_uri consistent` in today's nginx: use lb_method: hash"),
    ({"lb_method": "weighted"}, "lb_method='weighted' is invalid: use one of: round_robin"),
    ({"hosts": [{"host": "root@10.0.0.1", "roles": ["lb"]}]}, "an lb host needs app hosts behind it"),
    ({"hosts": ["root@10.0.0.2", "root@10.0.0.2"]}, "duplicate server 'root@10.0.0.2'"),
    ({"hosts": ["root@10.0.0.2", "admin@10.0.0.2"]}, "duplicate server '10.0.0.2'"),
    ({"hosts": [{"host": "10.0.0.2", "weight": 0}]}, "hosts[0] (10.0.0.2): weight=0; use a whole number >= 1"),
    ({"hosts": [{"host": "10.0.0.2", "weight": -2}]}, "weight=-2"),
    (
        {"hosts": [{"host": "10.0.0.2", "backup": True}], "lb_method": "ip_hash"},
        "cannot be used with lb_method ip_hash",
    ),
    ({"hosts": [{"host": "10.0.0.2", "backup": True}], "lb_method": "hash"}, "cannot be used with lb_method hash"),
    ({"hosts": [{"host": "10.0.0.2", "roles": ["cache"]}]}, "roles=['cache']; use a list of: app, lb, db"),
    (
        {"hosts": ["10.0.0.2", {"host": "10.0.0.3", "roles": ["db"]}, {"host": "10.0.0.4", "roles": ["db"]}]},
        "two db hosts (10.0.0.3, 10.0.0.4): fabstack runs one PostgreSQL",
    ),  # fmt: skip
    ({"hosts": [{"host": "10.0.0.2", "colour": "red"}]}, "unknown key 'colour'"),
    ({"hosts": [{"host": "bad host"}]}, "host 'bad host' is not a valid host string"),
    ({"hosts": [{"host": "10.0.0.2", "fail_timeout": "soon"}]}, "fail_timeout='soon'; use seconds like 10 or 10s"),
    ({"hosts": [{"host": "10.0.0.2", "down": "yes"}]}, "down='yes'; use true or false"),
    ({"hosts": [{"roles": ["app"]}]}, "hosts[0]: expected a mapping with at least `host: user@address`"),
    ({"workers_count": 3}, "unknown setting 'workers_count' in defaults (did you mean workers?)"),
    (
        {"preload_app": True, "process_manager": "supervisor"},
        "preload_app=true: supervisor cannot follow gunicorn's new master; use process_manager nohup or systemd",
    ),
    ({"preload_app": "sometimes"}, "preload_app='sometimes'"),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[next(iter(r)) + "-" + str(i) for i, (r, _) in enumerate(BAD)])
def test_bad_setting_is_one_clear_line(raw, message):
    with pytest.raises(s.SettingsError) as err:
        s.validate(raw)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_defaults_are_valid_and_derive_values():
    settings = s.validate({})
    assert settings.worker_class == "gevent" and settings.workers == "auto"
    assert settings.wsgi_module == "sample.wsgi:application"  # found from manage.py
    assert settings.project_settings == "sample.settings" and settings.django_settings == "fabstack_settings"
    assert s.validate({"production_settings": False}).django_settings == "sample.settings"
    assert settings.project == s.SAMPLE_PROJECT


def test_postgresql_names_of_its_own_are_refused():
    with pytest.raises(s.SettingsError, match="db_user='postgres' is invalid: postgres is PostgreSQL's own"):
        s.validate({"database": "postgresql", "db_user": "postgres"})
    with pytest.raises(s.SettingsError, match="secrets.DB_PASSWORD: fabstack makes the database password"):
        s.validate({"database": "postgresql", "secrets": {"DB_PASSWORD": "env:HOME"}})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"bad-name": "x"}, "env name 'bad-name': use letters, digits and _"),
        ({"DJANGO_SETTINGS_MODULE": "x"}, "env.DJANGO_SETTINGS_MODULE: fabstack sets it; choose another name"),
        ({"DB_PASSWORD_FILE": "x"}, "env.DB_PASSWORD_FILE: fabstack sets it"),
        ({"NOTE": "two\nlines"}, "setting env.NOTE holds a control character"),
    ],
)
def test_env_names_and_values_are_checked(env, message):
    with pytest.raises(s.SettingsError, match=message):
        s.validate({"env": env})


def project_files(root: Path, files: dict[str, str]) -> Path:
    """A project of these files (path: text) under root."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def default(module: str) -> str:
    return f"os.environ.setdefault('DJANGO_SETTINGS_MODULE', '{module}')\n"


def test_wsgi_module_is_found_from_manage_py_or_asked_for(tmp_path):
    project_files(tmp_path, {"mysite/__init__.py": "", "mysite/wsgi.py": "", "mysite/settings.py": ""})
    (tmp_path / "manage.py").write_text(default("mysite.settings"))
    found = s.validate({"project_path": str(tmp_path)})
    assert (found.wsgi_module, found.project_settings) == ("mysite.wsgi:application", "mysite.settings")
    (tmp_path / "manage.py").write_text("print('custom')\n")  # the one package with a wsgi.py
    assert s.validate({"project_path": str(tmp_path)}).wsgi_module == "mysite.wsgi:application"
    (tmp_path / "mysite" / "wsgi.py").unlink()
    with pytest.raises(s.SettingsError, match="set wsgi_module to your project's module:callable"):
        s.validate({"project_path": str(tmp_path)})


def test_a_settings_package_s_production_module_is_served_and_said(tmp_path):
    project = project_files(
        tmp_path,
        {
            "manage.py": default("proj.settings.dev"),
            "proj/__init__.py": "",
            "proj/wsgi.py": default("proj.settings.dev"),
            "proj/settings/__init__.py": "",
            "proj/settings/base.py": "",
            "proj/settings/dev.py": "from .base import *\n",
            "proj/settings/production.py": "from .base import *\n",
        },
    )
    found = s.validate({"project_path": str(project)})
    assert (found.wsgi_module, found.project_settings) == ("proj.wsgi:application", "proj.settings.production")
    assert found.project_note == (
        "fabstack: settings module proj.settings.production (the project's default, proj.settings.dev, is for "
        "development); set settings_module to choose another"
    )
    chosen = s.validate({"project_path": str(project), "settings_module": "proj.settings.dev"})
    assert (chosen.project_settings, chosen.project_note) == ("proj.settings.dev", "")


def test_cookiecutter_django_s_layout_serves_what_its_wsgi_py_names(tmp_path):
    project = project_files(
        tmp_path,
        {
            "manage.py": default("config.settings.local"),
            "config/__init__.py": "",
            "config/wsgi.py": default("config.settings.production"),
            "config/settings/__init__.py": "",
            "config/settings/local.py": "",
            "config/settings/production.py": "",
        },
    )
    found = s.validate({"project_path": str(project)})
    assert (found.wsgi_module, found.project_settings, found.project_note) == (
        "config.wsgi:application",
        "config.settings.production",
        "",
    )


def test_a_settings_module_the_project_does_not_have_is_refused_naming_the_key(tmp_path):
    project = project_files(tmp_path, {"mysite/__init__.py": "", "mysite/wsgi.py": "", "mysite/settings.py": ""})
    (project / "manage.py").write_text(default("mysite.settings.prod"))
    with pytest.raises(s.SettingsError, match=r"setting settings_module='mysite.settings.prod': .* not found in"):
        s.validate({"project_path": str(project)})
    with pytest.raises(s.SettingsError, match=r"setting settings_module='mysite.production': .* not found in"):
        s.validate({"project_path": str(project), "settings_module": "mysite.production"})


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("workers: 2\nserver_name: example.com\n")
    settings = s.load(str(path), {"workers": 7, "server_name": None})
    assert settings.workers == 7 and settings.server_name == "example.com"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("workers: 3\nserver_name: [unclosed\n")
    with pytest.raises(s.SettingsError, match=r"broken.yaml at line \d+: invalid YAML"):
        s.load(str(path))


def test_settings_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- workers\n")
    with pytest.raises(s.SettingsError, match="expected a mapping"):
        s.load(str(path))


@pytest.mark.parametrize("target", ["root@host name", "root@@host", "host:99999x", "", "root@", "a b", "host:0"])
def test_bad_host_strings(target):
    with pytest.raises(ValueError, match="is not a valid host string"):
        check_host_string(target)


@pytest.mark.parametrize(
    "target", ["web1", "root@203.0.113.5", "deploy@web-1.example.com:2222", "root@[2001:db8::1]:22"]
)
def test_good_host_strings(target):
    assert check_host_string(target) == target


def test_inventory_upstream_flags():
    settings = s.validate(
        {
            "hosts": [
                {"host": "root@10.0.0.1", "roles": ["lb", "app"]},
                {"host": "deploy@10.0.0.2:2222", "weight": 3, "max_fails": 2, "fail_timeout": 30, "max_conns": 100},
                {"host": "root@web3", "address": "10.0.1.3", "backup": True, "down": True},
            ]
        }
    )
    flags = [m.server_flags() for m in settings.inventory.with_role("app")]
    assert flags == ["", "weight=3 max_fails=2 fail_timeout=30 max_conns=100", "backup down"]
    assert [m.address for m in settings.inventory.members] == ["10.0.0.1", "10.0.0.2", "10.0.1.3"]
    assert [m.host for m in settings.inventory.with_role("lb")] == ["root@10.0.0.1"]


def test_settings_reference_is_generated_from_the_schema():
    assert TARGET.read_text() == settings_reference(), "run: python -m deploy.docs"


def test_fab_rejects_bad_input_before_connecting(tmp_path):
    # 203.0.113.0/24 is TEST-NET-3: if fab tried to connect, the error would differ.
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: 0.5\n")
    run = fab("-H", "root@203.0.113.9", "provision", settings=bad)
    assert run.code == 2 and run.err.strip() == "fabstack: setting workers=0.5: expected int or str, got float"
    run = fab("-H", "root@bad host", "provision")
    assert run.code == 2 and "is not a valid host string" in run.err
    run = fab("provision")
    assert run.code == 2 and "no hosts given" in run.err
    assert (REPO / "fabfile.py").exists()


def test_a_lab_task_on_a_dry_line_is_refused_before_anything_runs():
    run = fab("lab.status", "provision", "--dry-run", "-H", "root@192.0.2.1")
    assert run.code == 2, run
    assert run.err.strip() == "fabstack: lab.status has no dry run; run it on its own line without --dry-run"
    assert run.out == ""  # lab.status did not run, nor did provision


@pytest.mark.parametrize(
    ("key", "meant"),
    [("wrokers", "workers"), ("server-name", "server_name"), ("secret", "secrets"), ("worker", "workers"),
     ("domain", "server_name"), ("worker_clas", "worker_class")],
)  # fmt: skip
def test_an_unknown_key_names_the_one_probably_meant(key, meant):
    with pytest.raises(s.SettingsError, match=rf"unknown setting '{key}' in defaults \(did you mean {meant}\?\)"):
        s.validate({key: 1})


def _apps_file(tmp_path, text: str) -> str:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    return str(path)


SITES = """\
workers: 3
apps:
  shop:
    server_name: shop.test
  blog:
    server_name: blog.test
    workers: 2
"""


def test_one_file_describes_several_apps_each_over_the_shared_keys(tmp_path):
    shop, blog = s.load_apps(_apps_file(tmp_path, SITES))
    assert (shop.app_name, shop.server_name, shop.workers, shop.default_server) == ("shop", "shop.test", 3, True)
    assert (blog.app_name, blog.server_name, blog.workers, blog.default_server) == ("blog", "blog.test", 2, False)
    (only,) = s.load_apps(_apps_file(tmp_path, SITES), app="blog")
    assert only.app_name == "blog"
    overridden = s.load_apps(_apps_file(tmp_path, SITES), {"workers": 5})
    assert [a.workers for a in overridden] == [5, 5]  # a task flag is every app's


def test_a_file_of_one_app_is_a_list_of_one(tmp_path):
    (one,) = s.load_apps(_apps_file(tmp_path, "app_name: shop\n"), app="shop")
    assert one.app_name == "shop"


@pytest.mark.parametrize(
    ("text", "app", "message"),
    [
        (SITES, "news", "--app 'news' is not in {file}; its apps: shop, blog"),
        ("app_name: shop\n", "blog", "--app 'blog' is not the app of {file} ('shop'); give --app shop"),
        ("apps: [shop, blog]\n", "", "{file}: apps must map each app's name to its settings"),
        ("apps:\n  shop: 3\n", "", "{file}: apps.shop must be a mapping of settings, got int"),
        ("app_name: x\napps:\n  shop: {}\n", "", "app_name with apps: each app's name is its key under apps"),
        ("apps:\n  shop: {app_name: blog}\n", "", "apps.shop.app_name is 'blog'; an app's name is its key"),
        ("apps:\n  shop: {wrokers: 2}\n", "", "unknown setting 'wrokers' in {file} apps.shop (did you mean workers?)"),
        (
            "apps:\n  shop: {server_name: a.test}\n  blog: {server_name: b.test a.test}\n",
            "",
            "server_name a.test is in apps 'shop' and 'blog'; give each app names of its own",
        ),
        (
            "apps:\n  shop: {server_name: a.test}\n  blog: {server_name: b.test, default_server: true}\n",
            "",
            "apps 'shop' and 'blog' both have default_server: true; a host has one",
        ),
        (
            "bind: 127.0.0.1:8000\napps:\n  shop: {server_name: a.test}\n  blog: {server_name: b.test}\n",
            "",
            "bind 127.0.0.1:8000 is in apps 'shop' and 'blog'",
        ),
    ],
)
def test_bad_apps_files_are_refused_naming_the_key(tmp_path, text, app, message):
    path = _apps_file(tmp_path, text)
    with pytest.raises(s.SettingsError) as refused:
        s.load_apps(path, app=app)
    assert message.format(file=path) in str(refused.value)
    assert "\n" not in str(refused.value)


def test_apps_on_hosts_they_do_not_share_may_use_the_same_names(tmp_path):
    text = (
        "apps:\n"
        "  shop: {server_name: a.test, hosts: [root@10.0.0.11]}\n"
        "  blog: {server_name: a.test, hosts: [root@10.0.0.12]}\n"
    )
    assert [a.app_name for a in s.load_apps(_apps_file(tmp_path, text))] == ["shop", "blog"]


def test_django_6_on_a_python_3_11_host_is_refused_in_one_line_naming_where_it_runs():
    from deploy.settings.project import Requirements, python_too_old

    six = Requirements(("Django>=6.0,<6.1", "celery"))
    assert python_too_old(six, "3.11.2", "debian 12") == (
        "the project's requirements ask for Django 6, which needs Python 3.12+; this host has 3.11 (debian 12): "
        "use a host with Debian 13 (trixie) or Ubuntu 24.04, or a Django its Python runs"
    )
    assert python_too_old(six, "", "debian 12").startswith("the project's requirements ask for Django 6")
    assert python_too_old(six, "3.13.5", "debian 13") == ""
    assert python_too_old(Requirements(("Django~=5.2",)), "3.11.2", "debian 12") == ""
    assert python_too_old(Requirements(("six",)), "3.9.2", "debian 11") == ""  # no Django named: pip decides
