"""Issue 5 on real lab hosts: 1 load balancer + 3 app hosts from one inventory."""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ColdRun, Remote, fab, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def farm(lab: Lab, deployed_snapshot: str):
    return lab.up(count=4, init="sshd", prefix="lb", snapshot=deployed_snapshot)


def write_settings(tmp_path, farm, cold: ColdRun, lb_method="round_robin", **flags) -> str:
    """Inventory: farm[0] the lb, farm[1:] apps with per-app flags (flags={'1': {...}})."""
    base = yaml.safe_load(cold.settings.read_text())
    apps = [{"host": h.target, "roles": ["app"], **flags.get(str(i), {})} for i, h in enumerate(farm[1:], 1)]
    base.update(hosts=[{"host": farm[0].target, "roles": ["lb"]}, *apps], lb_method=lb_method, connect_timeout=3)
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(base))
    return str(path)


def served_by(lb, count: int) -> collections.Counter:
    """Send count requests through the lb; count which app host answered (failures as 'failed')."""
    seen: collections.Counter = collections.Counter()
    for _ in range(count):
        try:
            with urllib.request.urlopen(f"http://{lb.address}/", timeout=10) as response:
                seen[response.headers["X-Served-By"]] += 1
        except (urllib.error.URLError, OSError):
            seen["failed"] += 1
    return seen


def provision(settings: str, *args: str):
    run = fab("provision", *args, settings=settings)
    assert run.code == 0, run
    return run


def test_one_command_provisions_and_deploys_all_four(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    run = fab("provision", "deploy", settings=settings)
    assert run.code == 0, run
    assert set(run.totals()) == {h.target for h in farm}
    lb, app = Remote(farm[0]), Remote(farm[1])
    assert "server 10.78.0." in lb.run("cat /etc/nginx/sites-enabled/django-lb.conf")
    assert lb.run("ls /etc/nginx/sites-enabled").split() == ["django-lb.conf"]
    # an app host answers the lb, and refuses anyone else (here: the controller)
    assert lb.run(f"curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' http://{farm[1].address}:8080/") == "200"
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"http://{farm[1].address}:8080/", timeout=10)
    listeners = app.run("ss -Hltn").split("\n")
    assert not any(" 0.0.0.0:8080 " in line or "*:8080" in line for line in listeners), listeners
    again = fab("provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
    everyone = fab("status", "--json", settings=settings)
    assert everyone.code == 0, everyone
    rows = {h["host"]: h["data"] for h in json.loads(everyone.out)["runs"][0]["hosts"]}
    assert rows[farm[0].target]["app"] == "-" and rows[farm[0].target]["health"] == "ok"  # the lb: site through it
    assert all(rows[h.target]["app"] == "running" and rows[h.target]["health"] == "ok" for h in farm[1:])
    narrowed = fab("status", "--role", "app", settings=settings)
    assert set(narrowed.totals()) == {h.target for h in farm[1:]}, narrowed
    limited = fab("status", "--limit", farm[2].address, settings=settings)
    assert set(limited.totals()) == {farm[2].target}, limited


def test_weights_split_requests_in_proportion(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold, **{"1": {"weight": 3}})
    provision(settings)
    seen = served_by(farm[0], 600)
    shares = {h.name: seen[h.name] / 600 for h in farm[1:]}
    assert seen["failed"] == 0
    for host, expected in zip(farm[1:], (0.6, 0.2, 0.2), strict=True):
        assert abs(shares[host.name] - expected) <= 0.05, shares


def test_ip_hash_keeps_a_client_on_one_app(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold, lb_method="ip_hash")
    run = provision(settings)
    assert {h: c for h, (_, c, _) in run.totals().items() if c} == {farm[0].target: 2}, run  # the lb alone
    seen = served_by(farm[0], 60)
    assert len(seen) == 1 and seen["failed"] == 0, seen


@pytest.mark.parametrize("method", ["least_conn", "hash", "random"])
def test_other_methods_are_accepted_by_nginx_and_serve(farm, cold, tmp_path, method):
    settings = write_settings(tmp_path, farm, cold, lb_method=method)
    provision(settings, "--role", "lb")
    line = {"least_conn": "least_conn;", "hash": "hash $request_uri consistent;", "random": "random;"}[method]
    assert line in Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
    assert served_by(farm[0], 20)["failed"] == 0


def test_backup_serves_only_when_the_others_are_down(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold, **{"3": {"backup": True}})
    provision(settings)
    seen = served_by(farm[0], 60)
    assert seen[farm[3].name] == 0 and seen["failed"] == 0, seen
    settings = write_settings(tmp_path, farm, cold, **{"1": {"down": True}, "2": {"down": True}, "3": {"backup": True}})
    run = provision(settings)
    changed = {h for h, (_, c, _) in run.totals().items() if c}
    assert changed == {farm[0].target}, run  # `down` changes the lb only
    assert served_by(farm[0], 30) == {farm[3].name: 30}


def test_stopped_app_is_passed_over(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold, **{"1": {"max_fails": 1, "fail_timeout": "30s"}})
    provision(settings)
    assert fab("stop", "--limit", farm[1].address, settings=settings).code == 0
    try:
        seen = served_by(farm[0], 100)
        print(f"requests failed while {farm[1].name} was down: {seen['failed']} of 100; served: {dict(seen)}")
        assert seen["failed"] == 0 and seen[farm[1].name] == 0, seen
        assert seen[farm[2].name] > 0 and seen[farm[3].name] > 0
    finally:
        assert fab("start", "--limit", farm[1].address, settings=settings).code == 0


def test_unreachable_host_does_not_stop_the_others(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    data = yaml.safe_load(Path(settings).read_text())
    data["hosts"].append({"host": "root@10.78.0.250", "roles": ["app"]})  # nothing lives there
    Path(settings).write_text(yaml.safe_dump(data))
    run = fab("provision", settings=settings)
    assert run.code == 1, run
    totals = run.totals()
    assert totals["root@10.78.0.250"][2] == 1
    assert all(totals[h.target][2] == 0 for h in farm), run
    assert "10.78.0.250:22 unreachable" in run.out
    assert "failed on 1 of 5 host(s): root@10.78.0.250" in run.err


class Load:
    """Bounded load through the lb: `clients` threads until stopped (or max_requests)."""

    def __init__(self, address: str, clients: int = 20, max_requests: int = 50_000):
        import threading

        self.address, self.stop, self.lock = address, threading.Event(), threading.Lock()
        self.sent, self.failed, self.bodies = 0, 0, collections.Counter()
        self.max_requests = max_requests
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        while not self.stop.is_set() and self.sent < self.max_requests:
            marker, ok = "", True
            try:
                with urllib.request.urlopen(f"http://{self.address}/", timeout=10) as response:
                    body = response.read().decode()
                    marker = next((w for w in ("V1", "V2", "V3") if f"Release {w}" in body), "?")
            except (urllib.error.URLError, OSError):
                ok = False
            with self.lock:
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


def release_project(tmp_path, name: str, broken: bool = False) -> str:
    append = {"sample/wsgi.py": "import no_such_module_v3\n"} if broken else {}
    return sample_variant(tmp_path, name, title=f"Release {name}", append=append)


def test_rolling_deploy_broken_release_and_rollback_under_load(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    run = fab("provision", "deploy", "--project", release_project(tmp_path, "V1"), settings=settings)
    assert run.code == 0, run
    with Load(farm[0].address) as v2_load:
        run = fab("deploy", "--project", release_project(tmp_path, "V2"), settings=settings)
    print(f"deploy v2 under load: {v2_load.sent} requests, {v2_load.failed} failed, {dict(v2_load.bodies)}")
    assert run.code == 0, run
    assert "[rolling] 3 of 3 app host(s) to change, 1 at a time" in run.out
    assert v2_load.failed == 0 and v2_load.bodies["V1"] > 0 and v2_load.bodies["V2"] > 0
    assert served_bodies(farm[0], 9) == {"V2": 9}

    with Load(farm[0].address) as v3_load:
        broken = fab("deploy", "--project", release_project(tmp_path, "V3", broken=True), settings=settings)
    print(f"broken v3 under load: {v3_load.sent} requests, {v3_load.failed} failed, {dict(v3_load.bodies)}")
    assert broken.code == 1, broken
    assert "ModuleNotFoundError: No module named 'no_such_module_v3'" in broken.out
    assert "rollout stopped" in broken.err
    assert v3_load.failed == 0 and set(v3_load.bodies) == {"V2"}
    lb_conf = Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
    assert f"server {farm[1].address}:8080 down;" in lb_conf, lb_conf  # the failed host stays out
    assert Remote(farm[2]).run("readlink /srv/django/current") == Remote(farm[3]).run("readlink /srv/django/current")

    with Load(farm[0].address) as back_load:
        back = fab("rollback", "--role", "app", settings=settings)
    print(f"rollback under load: {back_load.sent} requests, {back_load.failed} failed, {dict(back_load.bodies)}")
    assert back.code == 0, back
    assert back_load.failed == 0
    assert served_bodies(farm[0], 9) == {"V1": 9}
    provision(settings, "--role", "lb")  # every app host back in the upstream
    assert ":8080 down" not in Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")


def served_bodies(lb, count: int) -> dict[str, int]:
    seen: collections.Counter = collections.Counter()
    for _ in range(count):
        with urllib.request.urlopen(f"http://{lb.address}/", timeout=10) as response:
            body = response.read().decode()
            seen[next((w for w in ("V1", "V2", "V3") if f"Release {w}" in body), "?")] += 1
    return dict(seen)
