"""Background processes and Redis without a host: the settings' errors (one line, the
key named, before any host is touched), and the steps from facts to operations. The
lab tests (test_database.py) run a Celery worker with Redis on a real farm."""

from __future__ import annotations

import pytest
from test_steps import calls, drive, file_facts, host, with_facts, written

from deploy import packages
from deploy import settings as s
from deploy.steps import background, firewall, redis

WORKER = "celery -A sample worker -l info"
FARM = [
    {"host": "root@10.0.0.2", "roles": ["lb"]},
    {"host": "root@10.0.0.11", "roles": ["app"]},
    {"host": "root@10.0.0.12", "roles": ["app"]},
    {"host": "root@10.0.0.20", "roles": ["db"]},
]


def refused(**raw) -> str:
    with pytest.raises(s.SettingsError) as caught:
        s.validate(raw)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_bad_processes_are_named_with_their_fix():
    assert "processes.Worker: use a name" in refused(processes={"Worker": WORKER})
    assert "processes.worker.count=0: use 1 or more" in refused(processes={"worker": {"command": WORKER, "count": 0}})
    assert "processes.worker.command is empty" in refused(processes={"worker": ""})
    assert "bin/missing.sh is not in the project" in refused(processes={"worker": "bin/missing.sh"})
    assert "is outside the release" in refused(processes={"worker": "/usr/bin/yes"})
    assert "processes.worker.hosts='some'" in refused(processes={"worker": {"command": WORKER, "hosts": "some"}})
    assert "processes.worker.every is not a process setting" in refused(
        processes={"worker": {"command": WORKER, "every": 1}}
    )
    assert "needs a DNS" not in refused(processes={"worker": "celery 'unclosed"})
    assert "redis runs on the inventory's db host" in refused(
        redis=True, hosts=FARM[:3]
    ).lower() or "db role" in refused(redis=True, hosts=FARM[:3])


def test_a_worker_gets_a_systemd_unit_and_starts_once_a_release_is_there():
    h = host(processes={"worker": {"command": WORKER, "count": 2, "stop_timeout": 30}})
    unit = background._unit(h, h.settings.background[0])
    assert "ExecStart=/srv/django/venv/bin/celery -A sample worker -l info" in unit
    assert "WorkingDirectory=/srv/django/current" in unit and "KillMode=mixed" in unit and "TimeoutStopSec=30" in unit
    assert calls(drive(background.processes(h))) == [
        "diff: /srv/django/config/app.env",
        "upload: srv_django_config_app.env",
        "command: install_file /tmp/stage/srv_django_config_app.env /srv/django/config/app.env root django 640",
        "diff: /etc/systemd/system/fabstack-django.worker@.service",
        "upload: etc_systemd_system_fabstack-django.worker@.service",
        "command: install_file /tmp/stage/etc_systemd_system_fabstack-django.worker@.service "
        "/etc/systemd/system/fabstack-django.worker@.service root root 644",
        "command: systemd_unit_changed",
        "command: bg_restart worker systemd 2 30 /srv/django/venv/bin/celery -A sample worker -l info",
    ]
    none_yet = host(with_facts(current="", releases=""), processes={"worker": WORKER})
    assert drive(background.processes(none_yet)) == []


def test_converged_workers_change_nothing_a_new_release_restarts_them_and_a_removed_one_goes():
    h = host(processes={"worker": WORKER})
    env, unit = background.env_text(h), background._unit(h, h.settings.background[0])
    facts = with_facts(**file_facts("/srv/django/config/app.env", env, "root:django 640"),
                       **file_facts("/etc/systemd/system/fabstack-django.worker@.service", unit), **{"bg.worker": "systemd 812"})  # fmt: skip
    converged = host(facts, processes={"worker": WORKER})
    assert drive(background.processes(converged)) == []
    assert calls(drive(background.processes(converged, True))) == [
        "command: bg_restart worker systemd 1 60 /srv/django/venv/bin/celery -A sample worker -l info"
    ]
    crashed = host({**facts, "bg.worker": "systemd"}, processes={"worker": WORKER})
    assert calls(drive(background.processes(crashed))) == [
        "command: bg_start worker systemd 1 /srv/django/venv/bin/celery -A sample worker -l info"
    ]
    removed = host(facts)
    assert calls(drive(background.processes(removed))) == ["command: bg_remove worker systemd"]


def test_a_process_on_one_host_runs_on_the_first_app_host_only():
    raw = {"hosts": FARM, "processes": {"beat": {"command": "celery -A sample beat", "hosts": "one"}, "worker": WORKER}}
    first, second = host(target="root@10.0.0.11", **raw), host(target="root@10.0.0.12", **raw)
    assert [p.name for p in first.background_here] == ["beat", "worker"]
    assert [p.name for p in second.background_here] == ["worker"]


def test_redis_on_the_db_host_is_set_up_once_and_the_app_hosts_get_its_url_as_a_secret():
    db = host(target="root@10.0.0.20", hosts=FARM, redis=True)
    assert db.runs_redis and "REDIS_URL" in db.settings.secrets
    conf = "bind 127.0.0.1 -::1 10.0.0.20"
    ops = calls(drive(redis.config(db)))
    assert ops[-2:] == ["command: redis_setup", "command: redis_running restart"]
    app = host(target="root@10.0.0.11", hosts=FARM, redis=True)
    assert not app.runs_redis
    assert app.values["APP_ENV"].count("DJANGO_REDIS_URL_FILE=/srv/django/shared/data/redis_url") == 1
    assert conf in redis.render(
        redis.environment(""), "redis.conf.j2", app_name="django", address="10.0.0.20", port=6379
    )


def test_bad_schedules_are_refused_with_the_fix():
    assert "use minute, hourly, daily" in refused(schedule={"tick": {"command": "manage.py check", "every": "often"}})
    assert "minute '61' is out of range 0-59" in refused(
        schedule={"tick": {"command": "manage.py check", "every": "61 * * * *"}}
    )
    assert "use a mapping with command and every" in refused(schedule={"tick": "manage.py check"})
    assert "schedule.tick.command is empty" in refused(schedule={"tick": {"command": "", "every": "daily"}})


def test_cron_fields_become_systemd_calendars():
    from deploy.settings.background import calendar

    assert calendar("*/15 * * * *", "x") == "*-*-* *:0/15:00"
    assert calendar("0 9-17 * * 1-5", "x") == "Mon..Fri *-*-* 9..17:0:00"
    assert calendar("30 3 1 * *", "x") == "*-*-1 3:30:00"


def test_jobs_are_timers_on_the_first_app_host_and_cron_where_systemd_does_not_run():
    raw = {"hosts": FARM, "schedule": {"tick": {"command": "manage.py clearsessions", "every": "minute"}}}
    first, second = host(target="root@10.0.0.11", **raw), host(target="root@10.0.0.12", **raw)
    ops = calls(drive(background.jobs(first)))
    assert ops[-1] == "command: timers_enabled fabstack-django.job-tick.timer"
    assert "diff: /etc/systemd/system/fabstack-django.job-tick.timer" in ops
    assert drive(background.jobs(second)) == []
    moved = host(
        with_facts(**{"job.tick": "systemd active Fri 2026-11-27 20:41:00 UTC"}), target="root@10.0.0.12", **raw
    )
    assert calls(drive(background.jobs(moved))) == ["command: job_remove tick systemd"]
    no_systemd = host(with_facts(pid1="sshd", systemd=""), **{k: v for k, v in raw.items() if k != "hosts"})
    ops = calls(drive(background.jobs(no_systemd)))
    assert "diff: /etc/cron.d/fabstack-django" in ops and ops[-1] == "command: cron_started"
    assert no_systemd.jobs_by_cron


def test_redis_on_a_farm_is_behind_a_firewall_table_that_lets_in_the_app_hosts_alone():
    db = host(target="root@10.0.0.20", hosts=FARM, redis=True, facts=with_facts(pid1="systemd"))
    assert db.firewall_here and not host(redis=True, database="postgresql").firewall_here  # a single host: loopback
    ops = drive(firewall.rules(db))
    assert calls(ops) == [
        *written("/etc/systemd/system/fabstack-django-firewall.service"),
        "diff: /etc/fabstack/django/firewall.nft",
        "upload: firewall.nft",
        "command: firewall_try /tmp/stage/firewall.nft 60",
        "reach: echo in",
        "command: firewall_keep /tmp/stage/firewall.nft",
    ]
    unit, rules = ops[0].content, ops[3].content
    assert "policy accept;" in rules and "ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 6379 accept" in rules
    assert rules.index("dport 6379 accept") < rules.index("tcp dport 6379 drop") and "10.0.0.2," not in rules
    assert "Before=network-pre.target shutdown.target redis-server.service" in unit
    facts = with_facts(pid1="systemd", firewall="loaded")
    facts |= file_facts("/etc/fabstack/django/firewall.nft", rules, "root:root 600")
    facts |= file_facts("/etc/systemd/system/fabstack-django-firewall.service", unit)
    assert drive(firewall.rules(host(target="root@10.0.0.20", hosts=FARM, redis=True, facts=facts))) == []
    flushed = {**facts, "firewall": ""}  # nftables.service flushed the ruleset: loaded again
    assert "command: firewall_try /tmp/stage/firewall.nft 60" in calls(
        drive(firewall.rules(host(target="root@10.0.0.20", hosts=FARM, redis=True, facts=flushed)))
    )
    assert "nftables" in packages.wanted({"db"}, "systemd", redis=True, firewall=db.firewall_here)


def test_status_shows_each_process_s_pids_and_each_job_s_state_and_last_run():
    from deploy import reports
    from deploy.facts import HostFacts

    facts = HostFacts.parse(
        "bg.worker=systemd 812 813 \nbg.beat=nohup\njob.tick=systemd active Fri 2026-11-27 20:41:00 UTC\n"
        "job.nightly=cron inactive 2026-11-27T03:00:01Z\njob.new=systemd active n/a\n"
    )
    assert facts.background["worker"].pids == (812, 813) and facts.background["beat"].running == 0
    assert reports._process("worker", facts.background["worker"], 2) == "worker 2/2 pid 812 813"
    assert reports._process("beat", facts.background["beat"], 1) == "beat 0/1"
    assert reports._job("tick", facts.jobs["tick"]) == "tick timer active, last 20:41:00"
    assert reports._job("nightly", facts.jobs["nightly"]) == "nightly cron inactive, last 03:00:01"
    assert reports._job("new", facts.jobs["new"]) == "new timer active, last never"
    kinds = [reports._log_kind(facts, n) for n in ("worker", "beat", "tick", "nightly", "other")]
    assert kinds == ["systemd", "nohup", "timer", "cron", ""]
