"""Issue 5 on real lab hosts: 1 load balancer + 3 app hosts from one inventory."""

from __future__ import annotations

import collections
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ColdRun, Remote, fab

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
