"""Every step, from facts to the exact operations it yields (pyinfra's and Kamal's
command tests): no host, no connection. The lab tests run the same steps for real."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
from conftest import REPO

from deploy import packages
from deploy import settings as s
from deploy.facts import CheckRead, HostFacts
from deploy.host import HostContext
from deploy.ops import Blocked, Check, Claim, Command, Diff, Handler, Notify, Probe, Publish, Reach, Say, Upload
from deploy.release import Release
from deploy.results import StepFailed
from deploy.steps import database, gunicorn, health, nginx, release, server

HOST = "root@203.0.113.5"
CONVERGED = {
    "pid1": "systemd", "systemd": "running", "python": "3.11.2", "nproc": "2", "now": "1000", "apt_stamp": "900",
    "user": "999", "nginx_pid": "10", "app_pid": "20", "app_listen": "", "unit_state": "active",
    "unit_enabled": "enabled", "venv_version": "3.11.2", "current": "/srv/django/releases/bbb",
    "releases": "bbb aaa", "passed": "bbb", "venv_marker": "m",
    **{f"pkg.{p}": "installed" for p in (*packages.APP, *packages.UPDATES)},
}  # fmt: skip


def host(facts: dict | None = None, target: str = HOST, **raw) -> HostContext:
    """A host as the facts describe it (CONVERGED by default), with these settings."""
    lines = "".join(f"{k}={v}\n" for k, v in (CONVERGED if facts is None else facts).items())
    return HostContext(target, s.validate(raw), HostFacts.parse(lines))


def with_facts(**changes: str) -> dict:
    return {**CONVERGED, **changes}


def drive(steps, probe_output: str = "", build: str = "") -> list:
    """Every operation a step yields, replying as the runner would in a dry run; with
    build, as when another host's build (that archive) is there for a Claim."""
    ops, reply = [], None
    while True:
        try:
            op = steps.send(reply)
        except StopIteration:
            return ops
        ops.append(op)
        replies = {Upload: f"/tmp/stage/{getattr(op, 'name', '')}", Probe: probe_output, Claim: build}
        reply = replies.get(type(op))


def calls(ops: list) -> list[str]:
    """The operations as one line each: call lines for shell, names for the rest."""
    shown = []
    for op in ops:
        if isinstance(op, Command | Check | Probe | Reach):
            shown.append(f"{type(op).__name__.lower()}: {op.shell.line}")
        elif isinstance(op, Upload):
            shown.append(f"upload: {op.name}")
        elif isinstance(op, Diff):
            shown.append(f"diff: {op.path}")
        elif isinstance(op, Notify):
            shown.append(f"notify: {op.handler.name}")
        elif isinstance(op, Say):
            shown.append(f"say: {op.text}")
        elif isinstance(op, Blocked):
            shown.append(f"blocked: {op.reason}")
        elif isinstance(op, Publish):
            shown.append(f"publish: {op.shell.line}")
    return shown


def written(path: str, owner: str = "root", group: str = "root", mode: str = "644") -> list[str]:
    """The operations (as calls() shows them) that write a file root owns: diff, upload, install."""
    staged = path.strip("/").replace("/", "_")
    return [
        f"diff: {path}",
        f"upload: {staged}",
        f"command: install_file /tmp/stage/{staged} {path} {owner} {group} {mode}",
    ]


def file_facts(path: str, content: str, meta: str = "root:root 644") -> dict:
    return {f"sha.{path}": hashlib.sha256(content.encode()).hexdigest(), f"meta.{path}": meta}


# facts -----------------------------------------------------------------------------------
def test_facts_are_typed():
    f = host().facts
    assert f.current_release == "bbb" and f.previous_release == "aaa" and f.releases == ["bbb", "aaa"]
    assert f.installed("nginx") and not f.installed("supervisor") and f.nproc == 2 and f.provisioned
    parsed = HostFacts.parse("sha./etc/x=abc\nmeta./etc/x=root:adm 640\nlink./etc/l=/etc/x\nweird=1\n")
    x = parsed.file("/etc/x")
    assert (x.sha256, x.owner, x.group, x.mode) == ("abc", "root", "adm", "640")
    assert parsed.file("/etc/y") is None and parsed.link("/etc/l") == "/etc/x" and parsed.link("/etc/x") is None
    assert parsed.extra == {"weird": "1"} and not parsed.provisioned and parsed.current_release == ""
    # a fact is a field: read from the key of its name (or its metadata's) by its type
    typed = HostFacts.parse("logrotate_timer=active\nuser=998\nsupervisord_pid=42\ndisk_free=x\nreleases=b a\n")
    assert (typed.logrotate_timer, typed.app_uid, typed.supervisord_running) == ("active", "998", True)
    assert typed.disk_free == 0 and typed.releases == ["b", "a"] and typed.extra == {}


# server ----------------------------------------------------------------------------------
def test_apt_packages_installs_only_what_is_missing_and_updates_stale_lists():
    assert calls(drive(server.apt_packages(host()))) == []
    fresh = host(with_facts(**{"pkg.nginx": "not-installed", "now": "1000", "apt_stamp": "900"}))
    assert calls(drive(server.apt_packages(fresh))) == [
        "probe: lock_holders",
        "command: apt_install no nginx",
    ]
    stale = host(with_facts(**{"pkg.python3-venv": "", "now": "99999"}))
    assert calls(drive(server.apt_packages(stale), probe_output="42 unattended-upgr\n")) == [
        "probe: lock_holders",
        "say: apt is busy (unattended-upgr, pid 42): waiting up to 300s for it",
        "command: apt_install yes python3-venv",
    ]
    supervised = host(process_manager="supervisor")
    assert calls(drive(server.apt_packages(supervised)))[-1] == "command: apt_install no supervisor"


def test_a_load_balancer_gets_no_virtualenv_package():
    lb = host(
        {"now": "1"}, target="root@10.0.0.10", hosts=[{"host": "root@10.0.0.10", "roles": ["lb"]}, "root@10.0.0.11"]
    )
    assert (
        calls(drive(server.apt_packages(lb)))[-1]
        == "command: apt_install no nginx python3 logrotate unattended-upgrades cron"
    )


def test_app_user_and_directories():
    assert calls(drive(server.app_user(host()))) == []
    assert calls(drive(server.app_user(host({})))) == [
        "command: useradd --system --user-group --home-dir /srv/django --no-create-home --shell /usr/sbin/nologin "
        "--comment 'fabstack app django' django"
    ]
    right = {f"dir.{p}": f"{o}:{g} {m}" for p, o, g, m in host().layout.directories()}
    assert calls(drive(server.directories(host(right)))) == []
    wrong = {**right, "dir./srv/django/shared/data": "django:django 755"}
    assert calls(drive(server.directories(host(wrong)))) == [
        "command: install_dirs /srv/django/shared/data:django:django:700"
    ]


def test_virtualenv_is_made_anew_only_for_a_new_python():
    wanted = server.requirements(s.validate({}))
    marker = hashlib.sha256("\n".join(["3.11.2", *wanted]).encode()).hexdigest()[:16]
    assert calls(drive(server.virtualenv(host(with_facts(venv_marker=marker))))) == []
    upgrade = calls(drive(server.virtualenv(host())))
    key = server.venv_key(host(), marker)
    assert upgrade == [f"command: make_venv no {marker} 'Django>=5.2,<7' 'gunicorn[gevent]>=25.1' 'gevent>=24'",
                       "publish: pack_venv", "notify: RESTART_APP"]  # fmt: skip
    assert key in [op.key for op in drive(server.virtualenv(host())) if isinstance(op, Publish)]
    new_python = calls(drive(server.virtualenv(host(with_facts(venv_version="3.10.0")))))
    assert new_python[0].startswith("command: make_venv yes ")


def test_secret_key_is_generated_on_the_host_or_uploaded_from_the_settings(monkeypatch):
    key = "/srv/django/shared/data/secret_key"
    assert calls(drive(server.secret_key(host()))) == [f"command: new_secret {key}"]
    private = with_facts(**{f"sha.{key}": "x", f"meta.{key}": "django:django 600"})
    assert calls(drive(server.secret_key(host(private)))) == []
    monkeypatch.setenv("KEY", "s3cret")
    ops = drive(server.secret_key(host(secrets={"SECRET_KEY": "env:KEY"})))
    assert calls(ops) == [
        f"diff: {key}",
        "upload: srv_django_shared_data_secret_key",
        f"command: put_app_file /tmp/stage/srv_django_shared_data_secret_key {key} 600",
        "notify: RELOAD_APP",
    ]
    assert ops[0].content is None and "s3cret" not in "".join(calls(ops))  # never in a diff or a command


# gunicorn config and releases --------------------------------------------------------------
def test_gunicorn_config_is_checked_against_the_release_before_it_replaces_the_old():
    h = host()
    conf = release.gunicorn_conf(h)
    same = host(with_facts(**file_facts(h.layout.gunicorn_conf, conf, "root:django 640")))
    assert calls(drive(release.gunicorn_config(same))) == []
    assert calls(
        drive(release.gunicorn_config(h, "/srv/django/releases/ccc"))
    ) == [  # a deploy: checked with its release
        "diff: /srv/django/config/gunicorn.conf.py",
        "upload: srv_django_config_gunicorn.conf.py",
        "command: install_file /tmp/stage/srv_django_config_gunicorn.conf.py /srv/django/config/gunicorn.conf.py "
        "root django 640 check_gunicorn_config /srv/django/releases/ccc sample.wsgi:application",
        "notify: RELOAD_APP",
    ]
    first = host(with_facts(current=""))  # nothing to load the app from yet: written as is
    assert "check_gunicorn_config" not in calls(drive(release.gunicorn_config(first)))[2]
    # provision checks it with the current release; another project's release: left to the deploy
    same_project = host(with_facts(current_has_wsgi="yes"))
    assert calls(drive(release.gunicorn_config(same_project)))[-2].endswith(
        "check_gunicorn_config /srv/django/releases/bbb sample.wsgi:application"
    )
    other = calls(drive(release.gunicorn_config(host())))  # the facts: the current release lacks the package
    assert other == [
        "say: gunicorn config: the current release has no sample package (another project); "
        "fab deploy writes the config with the release it uploads"
    ]


def test_deploy_steps_on_a_new_release():
    new = Release(REPO / "templates" / "sample", "staticfiles")
    h = host()
    assert calls(drive(release.upload(h, new))) == [
        "probe: read_manifest bbb",  # the current release's manifest: none here, so the whole release goes
        "upload: release.tar.gz",
        f"command: unpack_release {new.id} /tmp/stage/release.tar.gz staticfiles sample.wsgi "
        f"'/srv/django/releases/\\.{new.id}\\.partial/staticfiles' yes",  # its own database: migrated here
    ]
    shared = host(**FARM, target="root@10.0.0.11")  # a shared PostgreSQL: migrated once, by migrate
    assert calls(drive(release.upload(shared, new)))[-1].endswith(" no")
    assert calls(drive(release.migrate(shared, new))) == [f"command: migrate_release {new.id}"]
    assert calls(drive(release.switch(h, new))) == [
        f"command: switch_current /srv/django/releases/{new.id}",
        "notify: RELOAD_APP",
    ]
    assert h.facts.current_release == new.id and h.facts.releases == [new.id, "bbb", "aaa"]
    # what the steps after the switch see: a rollback to the release before really switches back
    assert (
        calls(drive(gunicorn.serve_release(h, "bbb")))[0] == "command: serve_release /srv/django/releases/bbb systemd"
    )
    there = host(with_facts(releases=f"{new.id} bbb", current=f"/srv/django/releases/{new.id}", passed=new.id))
    assert calls(drive(release.upload(there, new))) == calls(drive(release.switch(there, new))) == []
    # current but never checked (a run cut off after the switch): reloaded, so its check tests what it serves
    cut = host(with_facts(releases=f"{new.id} bbb", current=f"/srv/django/releases/{new.id}"))
    assert calls(drive(release.switch(cut, new))) == ["notify: RELOAD_APP"]
    assert calls(drive(release.project_requirements(h, new))) == []  # the sample has none


def test_prune_keeps_the_newest_the_current_and_the_one_before():
    many = host(with_facts(releases="g f e d c b a", current="/srv/django/releases/b"), keep_releases=2)
    assert calls(drive(release.prune(many))) == ["command: remove_releases e d c"]  # b's previous is a
    assert calls(drive(release.prune(host()))) == []


def test_a_host_not_provisioned_blocks_the_deploy():
    assert calls(drive(release.provisioned(host()))) == []
    assert calls(drive(release.provisioned(host({})))) == [
        "blocked: this host is not provisioned: run fab provision on it first"
    ]


# nginx -------------------------------------------------------------------------------------
def test_nginx_site_is_applied_tested_and_reloaded_once():
    h = host()
    site = nginx.site_config(h)
    done = with_facts(**file_facts(h.layout.nginx_site, site), **{f"link.{h.layout.nginx_link}": h.layout.nginx_site})
    assert calls(drive(nginx.site(host(done)))) == []
    default_enabled = {**done, f"link.{h.layout.NGINX_DEFAULT_LINK}": h.layout.NGINX_DEFAULT}
    assert calls(drive(nginx.site(host(default_enabled)))) == [
        "diff: /etc/nginx/sites-available/django.conf",
        "upload: nginx-site.conf",
        "command: apply_site /tmp/stage/nginx-site.conf /etc/nginx/sites-available/django.conf "
        "/etc/nginx/sites-enabled/django.conf /etc/nginx/sites-enabled/default /etc/nginx/sites-enabled/django-lb.conf",
        "notify: RELOAD_NGINX",
    ]
    assert calls(drive(nginx.running(host()))) == []
    h.notify(Handler.RELOAD_NGINX)
    assert calls(drive(nginx.running(h))) == ["command: nginx_running"] and h.notified == []
    assert calls(drive(nginx.running(host(with_facts(nginx_pid=""))))) == ["command: nginx_running"]


def test_nginx_control_tests_the_config_first_and_a_dry_run_only_tests():
    (start,) = drive(nginx.control(host(), "start"))
    assert start.shell.line == "nginx_control start" and start.rehearse.line == "nginx_test_for start"
    (stop,) = drive(nginx.control(host(), "stop"))
    assert stop.rehearse is None
    assert calls(drive(nginx.control(host(), "configtest"))) == ["probe: nginx_control configtest"]


# the process -------------------------------------------------------------------------------
def test_gunicorn_running_acts_on_what_was_notified():
    assert calls(drive(gunicorn.running(host()))) == []
    assert calls(drive(gunicorn.running(host(with_facts(app_pid=""))))) == ["command: start_app systemd"]
    for handler, call in ((Handler.RESTART_APP, "restart_app systemd"), (Handler.RELOAD_APP, "reload_app")):
        h = host()
        h.notify(handler)
        assert calls(drive(gunicorn.running(h))) == [f"command: {call}"]
    # a master from before the unix socket, on a loopback port: a restart moves it (a HUP may not)
    old = host(with_facts(app_listen="127.0.0.1:8000"))
    assert calls(drive(gunicorn.running(old))) == ["command: restart_app systemd"]
    own = with_facts(app_listen="127.0.0.1:9000")
    assert calls(drive(gunicorn.running(host(own, bind="127.0.0.1:9000")))) == []
    moved = host(with_facts(app_listen="127.0.0.1:8001"), bind="127.0.0.1:9000")
    assert calls(drive(gunicorn.running(moved))) == ["command: restart_app systemd"]
    nohup = host(with_facts(pid1="sh", app_pid=""))
    assert calls(drive(gunicorn.running(nohup))) == ["command: start_app nohup"]


def test_process_manager_moves_the_app_and_removes_the_old_files():
    h = host()
    unit = drive(gunicorn.manager(h))  # no unit file yet
    assert calls(unit)[-3:] == [
        "command: install_file /tmp/stage/etc_systemd_system_gunicorn-django.service "
        "/etc/systemd/system/gunicorn-django.service root root 644",
        "command: systemd_unit_changed",
        "notify: RESTART_APP",
    ]
    unit_file = "/etc/systemd/system/gunicorn-django.service"
    to_supervisor = host(with_facts(**{f"sha.{unit_file}": "x", f"meta.{unit_file}": "root:root 644"}),
                         process_manager="supervisor")  # fmt: skip
    ops = calls(drive(gunicorn.manager(to_supervisor)))
    assert ops[:3] == ["command: stop_app systemd", "command: remove_manager systemd", "command: start_supervisord"]
    assert ops[-1] == "command: supervisor_update"
    assert to_supervisor.facts.app_pid == "started by supervisor"


def test_a_failed_release_is_rolled_back_or_stopped():
    assert calls(drive(gunicorn.serve_release(host(), "aaa", "ccc"))) == [
        "command: serve_release /srv/django/releases/aaa systemd",
        "command: remove_releases ccc",
    ]
    assert calls(drive(gunicorn.serve_release(host(), "bbb"))) == []  # serving it already
    assert calls(drive(gunicorn.stop_unverified(host()))) == ["command: stop_app systemd"]


@pytest.mark.parametrize(
    ("action", "running", "expected"),
    [
        ("start", True, []),
        ("start", False, ["command: start_app systemd"]),
        ("stop", True, ["command: stop_app systemd"]),
        ("stop", False, []),
        ("restart", True, ["command: restart_app systemd"]),
        ("reload", True, ["command: reload_app"]),
        ("reload", False, ["command: start_app systemd"]),
    ],
)
def test_app_control(action, running, expected):
    h = host(with_facts(app_pid="20" if running else ""))
    assert calls(drive(gunicorn.control(h, action))) == expected


def test_health_check_records_the_release_that_passed():
    assert calls(drive(health.passes(host(), "bbb"))) == ["check: health_check 127.0.0.1:80"]
    h = host()
    assert calls(drive(health.passes(h, "ccc"))) == ["command: health_passed 127.0.0.1:80 ccc"]
    assert h.facts.passed == "ccc"
    behind = host(target="root@10.0.0.11", hosts=["root@10.0.0.11", {"host": "root@10.0.0.10", "roles": ["lb"]}])
    assert calls(drive(health.answers(behind))) == ["check: health_check 127.0.0.1:8080"]


# the shell a step sends --------------------------------------------------------------------
def test_every_value_reaching_a_shell_is_quoted_once():
    h = host(server_name="example.com")
    shell = h.shell(["gunicorn.sh"], "switch_current", "/srv/a b; rm -rf /")
    assert shell.line == "switch_current '/srv/a b; rm -rf /'"
    assert shell.text.endswith("switch_current '/srv/a b; rm -rf /'\n")
    assert "APP=django\n" in shell.text and "HEALTH_HOST=example.com\n" in shell.text
    assert "\nswitch_current() {" in shell.text and "\nas_app() {" in shell.text  # common.sh comes too


def test_the_env_setting_reaches_the_app_and_a_changed_value_reloads_it():
    old = host(env={"SHOP_CURRENCY": "EUR"})
    conf = release.gunicorn_conf(old)
    assert '"SHOP_CURRENCY=EUR"' in conf and '"DJANGO_SETTINGS_MODULE=fabstack_settings"' in conf
    path = old.layout.gunicorn_conf
    changed = host(
        with_facts(current_has_wsgi="yes", **file_facts(path, conf, "root:django 640")), env={"SHOP_CURRENCY": "USD"}
    )
    assert calls(drive(release.gunicorn_config(changed)))[-1] == "notify: RELOAD_APP"
    same = host(with_facts(**file_facts(path, conf, "root:django 640")), env={"SHOP_CURRENCY": "EUR"})
    assert calls(drive(release.gunicorn_config(same))) == []
    assert "SHOP_CURRENCY=USD" in changed.values["APP_ENV"].split("\n")  # manage.py and fab manage see it too


# PostgreSQL ----------------------------------------------------------------------
FARM = {
    "hosts": [
        {"host": "root@10.0.0.10", "roles": ["lb"]},
        "root@10.0.0.11",
        "root@10.0.0.12",
        {"host": "root@10.0.0.13", "roles": ["db"]},
    ]
}


def test_the_db_host_listens_for_the_app_hosts_and_lets_in_only_them():
    db = host({"os": "debian 12"}, target="root@10.0.0.13", **FARM)
    assert db.roles == ("db",) and db.settings.postgresql
    ops = drive(database.config(db))
    assert calls(ops)[-2:] == [
        "command: install_file /tmp/stage/etc_postgresql_15_main_conf.d_fabstack.conf "
        "/etc/postgresql/15/main/conf.d/fabstack.conf postgres postgres 644",
        "notify: RESTART_DB",
    ]
    assert "listen_addresses = 'localhost,10.0.0.13'" in ops[0].content
    hba = drive(database.access(db))[0].content
    rules = [line.split() for line in hba.splitlines() if line.startswith("host")]
    assert rules == [["host", "django", "django", f"10.0.0.{n}/32", "scram-sha-256"] for n in (11, 12)]
    assert calls(drive(database.running(db))) == ["command: postgres_running none"]  # not running: started
    assert calls(drive(database.database(db))) == ["command: ensure_database"]


def test_a_converged_db_host_changes_nothing_and_restarts_only_when_it_must():
    facts = {
        "os": "debian 12",
        "pg": "15 5432 online",
        "pg_objects": "1,1",
        "sha./etc/fabstack/django/db_password": "x",
    }
    db = host(facts, target="root@10.0.0.13", **FARM)
    assert calls(drive(database.running(db))) == [] and calls(drive(database.database(db))) == []
    db.notify(Handler.RELOAD_DB)
    assert calls(drive(database.running(db))) == ["command: postgres_running reload"]
    db.notify(Handler.RESTART_DB)
    db.notify(Handler.RELOAD_DB)
    assert calls(drive(database.running(db))) == ["command: postgres_running restart"] and db.notified == []


def test_app_hosts_get_the_database_and_its_password_as_a_secret():
    app_host = host(target="root@10.0.0.11", **FARM)
    env = app_host.values["APP_ENV"].split("\n")
    assert {"DJANGO_DB_ENGINE=postgresql", "DJANGO_DB_HOST=10.0.0.13", "DJANGO_DB_NAME=django",
            "DJANGO_DB_PASSWORD_FILE=/srv/django/shared/data/db_password"} <= set(env)  # fmt: skip
    assert "psycopg[binary]>=3.1" in server.requirements(app_host.settings)
    single = host({"os": "debian 13"}, database="postgresql")  # a single host runs its own
    assert "db" in single.roles and "listen_addresses = 'localhost'" in drive(database.config(single))[0].content
    assert "127.0.0.1/32" in drive(database.access(single))[0].content
    assert calls(drive(database.app_password(single))) == [
        "command: app_db_password /srv/django/shared/data/db_password",
        "notify: RELOAD_APP",
    ]


def test_fab_check_on_the_db_host_names_a_wide_listener_or_a_stranger_let_in():
    from deploy.checks import findings

    db = host({}, target="root@10.0.0.13", **FARM)
    good = {"pg_listen": "127.0.0.1:5432 [::1]:5432 10.0.0.13:5432", "pg_clients": "10.0.0.11/32 10.0.0.12/32"}
    assert set(findings(db, CheckRead.parse(good)).values()) == {""}
    bad = {"pg_listen": "0.0.0.0:5432", "pg_clients": "10.0.0.11/32 0.0.0.0/0"}
    found = findings(db, CheckRead.parse(bad))
    assert found["postgresql listens privately"] == "postgresql listens on 0.0.0.0:5432"
    assert found["postgresql lets in the app hosts only"] == "pg_hba.conf lets in 0.0.0.0"
    assert findings(db, CheckRead.parse({}))["postgresql running"] == "postgresql does not listen"


def test_the_lb_checks_that_postgresql_turns_it_away():
    from deploy.checks import findings, read_command

    lb = host({}, target="root@10.0.0.10", **FARM)
    assert "read_db_reach 10.0.0.13 5432 django django" in read_command(lb).line
    assert (
        findings(lb, CheckRead.parse({"db_reach": "rejected", "nginx_test": "ok", "server_tokens": "1"}))[
            "database closed to this host"
        ]
        == ""
    )
    assert (
        findings(lb, CheckRead.parse({"db_reach": "asks for a password"}))["database closed to this host"]
        == "PostgreSQL asks for a password"
    )


def test_a_db_port_in_use_is_refused_before_anything_is_installed():
    from deploy.results import StepFailed

    db = host({"db_port_taken_by": "nginx"}, target="root@10.0.0.13", **FARM)
    with pytest.raises(StepFailed, match="db_port 5432 is in use by nginx on this host; stop it or set db_port"):
        drive(database.port_free(db))
    assert calls(drive(database.port_free(host({}, target="root@10.0.0.13", **FARM)))) == []


def test_a_db_host_shared_by_apps_keeps_the_other_apps_access_rules():
    from deploy.results import StepFailed

    facts = {
        "os": "debian 12",
        "pg": "15 5432 online",
        # what the file holds: shop's rule, and django's from an app host since replaced
        "pg_hba_rules": "shop shop 10.0.0.21/32,django django 10.0.0.99/32,",
    }
    db = host(facts, target="root@10.0.0.13", **FARM)
    hba = drive(database.access(db))[0].content
    rules = [line.split()[1:4] for line in hba.splitlines() if line.startswith("host")]
    assert rules == [
        ["django", "django", "10.0.0.11/32"],
        ["django", "django", "10.0.0.12/32"],
        ["shop", "shop", "10.0.0.21/32"],
    ]  # sorted: the same file whichever app writes it
    # over the socket: postgres for administration, each app's role to its own database only
    local = [line.split()[1:3] for line in hba.splitlines() if line.startswith("local")]
    assert local == [["all", "postgres"], ["django", "django"], ["shop", "shop"]]
    removing = drive(database.access(db, True))[0].content  # fab remove: the others' rules only
    assert [line.split()[1] for line in removing.splitlines() if line.startswith("host")] == ["shop"]
    assert calls(drive(database.dropped(db))) == ["command: drop_database"]
    moved = host({**facts, "pg": "15 5433 online"}, target="root@10.0.0.13", **FARM)
    with pytest.raises(
        StepFailed,
        match="PostgreSQL on this host listens on port 5433 for database shop of another app; set db_port: 5433",
    ):
        drive(database.port_free(moved))
    assert (
        drive(
            database.port_free(host({**facts, "pg": "15 5433 online"}, target="root@10.0.0.13", db_port=5433, **FARM))
        )
        == []
    )


def test_bind_unset_is_the_app_s_own_socket_never_a_port_other_users_reach():
    from deploy.steps import claims

    fresh = {k: v for k, v in CONVERGED.items() if k not in ("app_pid", "app_listen")}
    assert host(fresh).bind == "unix:/srv/django/run/gunicorn.sock"
    assert host(fresh, app_name="blog").bind == "unix:/srv/blog/run/gunicorn.sock"
    # an app from before the socket held a loopback port in its record: it moves to the socket
    old = with_facts(**{"claim.django.bind": "127.0.0.1:8000", "app_listen": "127.0.0.1:8000"})
    assert host(old).bind == "unix:/srv/django/run/gunicorn.sock"
    assert host(old, bind="127.0.0.1:9000").bind == "127.0.0.1:9000"  # a bind of your own is kept
    # nginx alone may enter the socket's directory: the app's, group www-data, no other bits
    assert ("/srv/django/run", "django", "www-data", "750") in host().layout.directories()
    # the claims an lb-only host records hold no bind: it runs no gunicorn
    lb = host(fresh, hosts=[{"host": HOST, "roles": ["lb"]}, {"host": "root@203.0.113.6", "roles": ["app"]}])
    assert "bind=\n" in claims.claims_text(lb)


@pytest.mark.parametrize(
    ("held", "raw", "message"),
    [
        (
            {"server_name": "shop.test", "default_server": "no"},
            {"server_name": "blog.test shop.test", "default_server": False},
            "server_name shop.test is app 'shop''s on this host too; give app 'blog' names of its own",
        ),
        (
            {"server_name": "_", "default_server": "no"},
            {"default_server": False},
            "apps 'blog' and 'shop' would both answer any name (server_name _) on this host",
        ),
        (
            {"server_name": "shop.test", "default_server": "yes"},
            {"server_name": "blog.test"},
            "app 'shop' is this host's default server; set default_server: false for app 'blog'",
        ),
        (
            {"server_name": "shop.test", "default_server": "no", "serves": "80", "firewall": "22 80"},
            {"server_name": "blog.test", "default_server": False, "listen_port": 8080},
            "app 'shop''s firewall would drop app 'blog''s port 8080 on this host",
        ),
        (
            {"server_name": "shop.test", "default_server": "no", "serves": "8080", "firewall": ""},
            {"server_name": "blog.test", "default_server": False, "firewall": True},
            "app 'blog''s firewall would drop app 'shop''s port 8080 on this host",
        ),
        (
            {"server_name": "shop.test", "default_server": "no", "bind": "127.0.0.1:9000"},
            {"server_name": "blog.test", "bind": "127.0.0.1:9000"},
            "bind 127.0.0.1:9000 is app 'shop''s on this host; give app 'blog' another port",
        ),
    ],
)
def test_an_app_wanting_what_another_holds_is_refused_naming_both(held, raw, message):
    from deploy.results import StepFailed
    from deploy.steps import claims

    facts = with_facts(**{f"claim.shop.{k}": v for k, v in held.items()})
    with pytest.raises(StepFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        drive(claims.no_clash(host(facts, app_name="blog", **raw)))
    mine = with_facts(**{f"claim.blog.{k}": v for k, v in held.items()})  # its own record is no clash
    assert drive(claims.no_clash(host(mine, app_name="blog", **raw))) == []


def test_apps_whose_firewalls_open_the_same_ports_share_a_host():
    from deploy.steps import claims

    held = {"claim.shop.server_name": "shop.test", "claim.shop.serves": "80", "claim.shop.firewall": "22 80"}
    blog = host(with_facts(**held), app_name="blog", server_name="blog.test", default_server=False, firewall=True)
    assert drive(claims.no_clash(blog)) == []
    assert "serves=80\nfirewall=22 80\n" in claims.claims_text(blog)


def test_remove_takes_the_app_s_redis_settings_off_the_redis_host():
    from deploy.steps import redis

    db = host({"os": "debian 12", "redis_included": "yes"}, target="root@10.0.0.13", redis=True, **FARM)
    assert calls(drive(redis.removed(db))) == ["command: redis_remove"]
    assert calls(drive(redis.removed(host({}, target="root@10.0.0.13", redis=True, **FARM)))) == []


def test_a_site_no_record_covers_keeps_its_names_and_default_server():
    from deploy.results import StepFailed
    from deploy.steps import claims

    legacy = with_facts(**{"site.legacy.conf": "80 [::]:80|legacy.test www.legacy.test", "site.other.conf": "8081|_"})
    with pytest.raises(StepFailed, match=r"/etc/nginx/sites-enabled/legacy.conf is this host's default server; set"):
        drive(claims.no_clash(host(legacy, app_name="blog", server_name="blog.test")))
    with pytest.raises(StepFailed, match=r"server_name www.legacy.test is /etc/nginx/sites-enabled/legacy.conf's"):
        drive(claims.no_clash(host(legacy, app_name="blog", server_name="www.legacy.test", default_server=False)))
    # not the default server, its own names; another port's default server is no clash
    assert drive(claims.no_clash(host(legacy, app_name="blog", server_name="blog.test", default_server=False))) == []
    assert drive(claims.no_clash(host(with_facts(**{"site.other.conf": "8081|_"}), app_name="blog"))) == []
    # an app's site that its record covers is checked by the record, not twice
    recorded = with_facts(**{"site.shop.conf": "80|shop.test", "claim.shop.server_name": "shop.test"})
    assert drive(claims.no_clash(host(recorded, app_name="blog", server_name="blog.test", default_server=False))) == []


@pytest.mark.parametrize(
    ("facts", "refused"),
    [
        ({"user": "108", "user_home": "/var/lib/postgresql"}, "user django exists on this host and is not an app"),
        ({"user": "0", "user_home": "/root"}, "(uid 0, home /root)"),
        ({"dir./var/log/django": "root:root 755"}, "/var/log/django exists on this host but user django does not"),
        ({"dir./srv/django": "root:root 755"}, "/srv/django exists on this host but user django does not"),
    ],
)
def test_an_account_or_directory_fabstack_did_not_make_is_refused(facts, refused):
    with pytest.raises(StepFailed, match=re.escape(refused)):
        drive(server.app_account(host(facts)))
    assert drive(server.app_account(host({"user": "999", "user_home": "/srv/django"}))) == []  # fabstack's
    assert drive(server.app_account(host({}))) == []  # nothing there yet


def test_an_app_database_that_every_role_may_connect_to_is_closed():
    facts = {
        "os": "debian 12",
        "pg": "15 5432 online",
        "pg_objects": "1,1,0",
        "sha./etc/fabstack/django/db_password": "x",
    }
    db = host(facts, target="root@10.0.0.13", **FARM)
    assert db.facts.db_exists and not db.facts.db_public_connect
    opened = host({**facts, "pg_objects": "1,1,1"}, target="root@10.0.0.13", **FARM)
    assert opened.facts.db_public_connect  # PostgreSQL's default: CONNECT for PUBLIC
    assert calls(drive(database.database(opened))) == ["command: ensure_database"]


# one SECRET_KEY for a farm ------------------------------------------------------------------
FARM_OF_TWO = [{"host": "root@10.0.0.11"}, {"host": "root@10.0.0.12"}]


def test_a_farm_keeps_its_one_secret_key_on_its_db_host_else_its_first_app_host():
    from deploy import checks, invocation

    assert invocation.farm_key_host(s.validate({})) == ""  # one host: its own key is the site's
    assert invocation.farm_key_host(s.validate({"hosts": FARM_OF_TWO})) == "root@10.0.0.11"
    with_db = [{"host": "root@10.0.0.10", "roles": ["lb"]}, *FARM_OF_TWO, {"host": "root@10.0.0.13", "roles": ["db"]}]
    assert invocation.farm_key_host(s.validate({"hosts": with_db})) == "root@10.0.0.13"
    lone = [{"host": "root@10.0.0.10", "roles": ["lb"]}, {"host": "root@10.0.0.11"}]
    assert invocation.farm_key_host(s.validate({"hosts": lone})) == ""
    # SQLite on two app hosts: said, naming the fix; with a db host, or on one host, nothing
    said = checks.sqlite_on_a_farm(s.validate({"hosts": FARM_OF_TWO}))
    assert said.startswith("fabstack: SQLite on 2 app hosts: each keeps its own database") and "roles: [db]" in said
    assert checks.sqlite_on_a_farm(s.validate({"hosts": with_db})) == checks.sqlite_on_a_farm(s.validate({})) == ""


def test_the_farm_s_key_replaces_a_host_s_own_and_says_so():
    key_file = "/srv/django/shared/data/secret_key"
    farm = dataclasses.replace(s.validate({"hosts": FARM_OF_TWO}), secret_values={"SECRET_KEY": "k" * 50})
    own = HostFacts.parse("".join(f"{k}={v}\n" for k, v in with_facts(**{f"sha.{key_file}": "0" * 64,
                                                                        f"meta.{key_file}": "django:django 600"}).items()))  # fmt: skip
    ops = calls(drive(server.secret_key(HostContext("root@10.0.0.12", farm, own))))
    staged = "/tmp/stage/srv_django_shared_data_secret_key"
    assert ops == [f"diff: {key_file}", "upload: srv_django_shared_data_secret_key",
                   f"command: put_app_file {staged} {key_file} 600", "notify: RELOAD_APP",
                   "say: secret key: this host's own key is replaced by the app's one SECRET_KEY (the farm's, or your "
                   "secrets:); sessions and signed links made with the old key end"]  # fmt: skip
    fresh = calls(drive(server.secret_key(HostContext("root@10.0.0.12", farm, HostFacts.parse("")))))
    assert not [op for op in fresh if op.startswith("say:")]  # a new host has no key to lose


def test_fab_check_finds_an_app_host_whose_key_is_not_the_farm_s():
    from deploy import checks

    key_file = "/srv/django/shared/data/secret_key"
    farm = dataclasses.replace(s.validate({"hosts": FARM_OF_TWO}), secret_values={"SECRET_KEY": "k" * 50})

    def found(sha: str) -> dict[str, str]:
        h = HostContext("root@10.0.0.12", farm, HostFacts.parse(""))
        return checks.farm_key_findings(h, CheckRead.parse({"key_sha": sha}))

    assert found(hashlib.sha256(("k" * 50 + "\n").encode()).hexdigest()) == {"one SECRET_KEY for the farm": ""}
    assert found("0" * 64) == {
        "one SECRET_KEY for the farm": f"{key_file} is not the farm's one key: run fab provision"
    }
    alone = HostContext(HOST, s.validate({}), HostFacts.parse(""))
    assert checks.farm_key_findings(alone, CheckRead.parse({})) == {}  # one app host: its own key is the site's


def test_the_key_before_a_rotation_is_read_with_the_other_secrets():
    # the facts read the fallback's checksum: without it every provision after a rotation
    # wrote it again (changed=2 on each app host, and a rolling restart for nothing)
    layout = host().layout
    assert layout.secret_files(["API_TOKEN"]) == [
        "/srv/django/shared/data/secret_key", "/srv/django/shared/data/secret_key_fallback",
        "/srv/django/shared/data/api_token",
    ]  # fmt: skip
    key_file, fallback = layout.secret_key, layout.secret_key_fallback
    keys = {"SECRET_KEY": "k" * 50, "SECRET_KEY_FALLBACK": "o" * 50}
    farm = dataclasses.replace(s.validate({"hosts": FARM_OF_TWO}), secret_values=keys)
    sha = {
        path: hashlib.sha256((value + "\n").encode()).hexdigest()
        for path, value in ((key_file, keys["SECRET_KEY"]), (fallback, keys["SECRET_KEY_FALLBACK"]))
    }
    facts = HostFacts.parse("".join(f"sha.{p}={v}\nmeta.{p}=django:django 600\n" for p, v in sha.items()))
    assert drive(server.secret_key(HostContext("root@10.0.0.12", farm, facts))) == []
