"""What an app owns on a host (deploy/manifest.py), with no host: every file a step
writes is in the app's manifest, near-twin app names own nothing in common or are
refused, and removal names exactly what the app owns, never a pattern."""

from __future__ import annotations

import re

import pytest

from deploy import checks, manifest, plans, steps
from deploy import settings as s
from deploy.cli import Run
from deploy.console import Console
from deploy.facts import CheckRead
from deploy.layout import Layout
from deploy.ops import Diff
from deploy.runner import HostRun, Session

# Files a host has once, whatever its apps: apt's, nginx's and PostgreSQL's own, each
# app's part of them in it by name (pg_hba's rules), never one app's file
HOST_FILES = {*steps.host_files(), Layout.NGINX_DEFAULT}
HOST_FILES |= {Layout.pg_conf("15"), Layout.pg_hba("15")}


class Writes(HostRun):
    """A dry run of a real plan on a host that has nothing yet: every Diff (a file a step
    would write) is kept; commands are not sent anywhere."""

    def __init__(self, settings: s.Settings, facts: str):
        super().__init__(Session(Console(False)), "root@203.0.113.5", None, settings, Run(dry_run=True))
        self.written: set[str] = set()
        self.facts_text = facts

    def run(self, shell, check=True, timeout=None):
        return self.facts_text if shell.line.startswith("read_facts") else ""

    def _do(self, op, diffs):
        if isinstance(op, Diff):
            self.written.add(op.path)
        return super()._do(op, diffs)


SETTINGS = {
    "app_name": "shop",
    "processes": {"worker": {"command": "python -m worker"}},
    "schedule": {"report": {"command": "python manage.py report", "every": "daily"}},
    "database": "postgresql",
}


# a host with a release, under systemd or not: the steps that need one write their files too
WITH_RELEASE = "current=/srv/shop/releases/0123456789ab\npid1={}\n"


@pytest.mark.parametrize(
    ("extra", "pid1"),
    [({}, "systemd"), ({"process_manager": "supervisor"}, "systemd"), ({"process_manager": "nohup"}, "sh")],
)
def test_every_file_a_provision_writes_is_in_the_app_s_manifest(extra, pid1):
    settings = s.validate({**SETTINGS, **extra})
    h = Writes(settings, WITH_RELEASE.format(pid1))
    plans.provision(h)
    owns = manifest.owned(h.layout, settings)
    owned = set(manifest.of_kind(owns, "file")) | set(manifest.of_kind(owns, "cron"))
    assert h.written, "the plan wrote nothing: the test drives no step"
    assert h.written - HOST_FILES <= owned, sorted(h.written - HOST_FILES - owned)


@pytest.mark.parametrize(
    ("one", "other", "kind", "name"),
    [
        ("shop", "shop-lb", "file", "/etc/nginx/sites-available/shop-lb.conf"),  # shop's lb site, shop-lb's site
        ("shop", "shop-logrotate", "cron", "/etc/cron.d/fabstack-shop-logrotate"),
        ("a-b", "a_b", "database", "a_b"),  # - and _ give one database, role and nft table
    ],
)
def test_near_twin_app_names_that_would_own_one_thing_are_refused(one, other, kind, name):
    a, b = s.validate({"app_name": one}), s.validate({"app_name": other})
    assert manifest.clash(manifest.owned(Layout.of(a), a), manifest.owned(Layout.of(b), b)) is not None
    with pytest.raises(s.SettingsError, match=f"apps '{one}' and '{other}' would both own the "):
        manifest.refuse_clashes([a, b])
    shared = set(manifest.owned(Layout.of(a), a)) & set(manifest.owned(Layout.of(b), b))
    assert manifest.Owned(kind, name) in shared


def test_prefix_names_own_nothing_in_common():
    names = ["shop", "backup-shop", "shop2", "shop-a", "shopa", "fab", "shop-backup"]
    owns = {n: set(manifest.owned(Layout(n), s.validate({"app_name": n}))) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not owns[a] & owns[b], (a, b, sorted(owns[a] & owns[b]))


def test_what_removal_names_is_exact_and_the_record_round_trips():
    settings = s.validate(SETTINGS)
    owned = manifest.owned(Layout.of(settings), settings)
    assert manifest.parse(manifest.record(owned)) == owned
    for item in owned:
        assert not re.search(r"[*?\[\]\s]", item.name), item  # a name, never a pattern
    assert {"unit", "file", "table", "database", "role", "user", "cron", "site"} <= {i.kind for i in owned}
    assert manifest.Owned("unit", "fabstack-shop.worker@.service") in owned
    assert manifest.Owned("table", "fabstack_shop") in owned


def test_fab_check_names_what_no_app_s_record_owns():
    settings = s.validate({**SETTINGS, "redis": True})
    owned = manifest.owned(Layout.of(settings), settings)
    found = {
        "owns.shop": manifest.record(owned),
        "found_units": "gunicorn-shop.service fabstack-shop.worker@.service fabstack-shop-logrotate.timer "
        "certbot.service.d",
        "found_sites": "shop.conf",
        "found_cron": "fabstack-shop",
        "found_pg_rules": "all:postgres shop:shop",
        "found_redis_users": "default shop",
    }
    assert checks.unexplained(CheckRead.parse(found)) == ""  # all the app's, by its record
    planted = {
        **found,
        "found_units": found["found_units"] + " fabstack-backdoor.service",
        "found_sites": "shop.conf legacy.conf",
        "found_pg_rules": "all:postgres shop:shop all:all",
        "found_redis_users": "default shop backdoor",
    }
    assert checks.unexplained(CheckRead.parse(planted)) == (
        "no app's record on this host owns /etc/systemd/system/fabstack-backdoor.service, "
        "/etc/nginx/sites-enabled/legacy.conf, pg_hba rule all:all and 1 more"
    )
    assert "Redis user backdoor" in checks.unexplained(CheckRead.parse({**found, "found_redis_users": "shop backdoor"}))


def test_a_pg_hba_rule_pairing_one_app_s_database_with_another_s_role_is_no_app_s():
    shop, blog = (s.validate({"app_name": n}) for n in ("shop", "blog"))
    found = {f"owns.{x.app_name}": manifest.record(manifest.owned(Layout.of(x), x)) for x in (shop, blog)}
    assert checks.unexplained(CheckRead.parse({**found, "found_pg_rules": "shop:shop blog:blog"})) == ""
    assert checks.unexplained(CheckRead.parse({**found, "found_pg_rules": "shop:shop shop:blog"})) == (
        "no app's record on this host owns pg_hba rule shop:blog"
    )  # blog's role into shop's database
