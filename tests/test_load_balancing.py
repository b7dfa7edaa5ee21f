"""Issue 5 on real lab hosts: 1 load balancer + 3 app hosts from one inventory."""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ColdRun, Load, Remote, fab, sample_variant, unused_address

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
    assert f"server {farm[1].address}:8080" in lb.run("cat /etc/nginx/sites-enabled/django-lb.conf")
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
    nowhere = unused_address(250)
    data["hosts"].append({"host": f"root@{nowhere}", "roles": ["app"]})  # nothing lives there
    Path(settings).write_text(yaml.safe_dump(data))
    run = fab("provision", settings=settings)
    assert run.code == 1, run
    totals = run.totals()
    assert totals.get(f"root@{nowhere}", (0, 0, 0))[2] == 1, run
    assert all(totals[h.target][2] == 0 for h in farm), run
    assert f"{nowhere}:22 unreachable" in run.out
    assert f"failed on 1 of 5 host(s): root@{nowhere}" in run.err


def release_project(tmp_path, name: str, broken: bool = False) -> str:
    append = {"sample/wsgi.py": "import no_such_module_v3\n"} if broken else {}
    return sample_variant(tmp_path, name, title=f"Release {name}", append=append)


def test_rolling_deploy_broken_release_and_rollback_under_load(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    run = fab("provision", "deploy", "--project", release_project(tmp_path, "V1"), settings=settings)
    assert run.code == 0, run
    v2 = release_project(tmp_path, "V2")
    with Load(farm[0].address) as v2_load:
        run = fab("deploy", "--project", v2, settings=settings)
    print(f"deploy v2 under load: {v2_load.sent} requests, {v2_load.failed} failed, {dict(v2_load.bodies)}")
    assert run.code == 0, run
    assert "[rolling] 3 of 3 app host(s) to change, 1 at a time" in run.out
    # one summary for the whole rollout (its 3 batches and the lb's phases folded), every host once
    assert sum(line.startswith("HOST ") for line in run.out.splitlines()) == 1, run
    assert set(run.summary()) == {h.target for h in farm}, run
    assert v2_load.failed == 0 and v2_load.bodies["V1"] > 0 and v2_load.bodies["V2"] > 0
    assert served_bodies(farm[0], 9) == {"V2": 9}

    with Load(farm[0].address) as v3_load:
        broken = fab("deploy", "--project", release_project(tmp_path, "V3", broken=True), settings=settings)
    print(f"broken v3 under load: {v3_load.sent} requests, {v3_load.failed} failed, {dict(v3_load.bodies)}")
    assert broken.code == 1, broken
    assert "ModuleNotFoundError: No module named 'no_such_module_v3'" in broken.out
    assert "rollout stopped" in broken.err and f"failed on 1 of {len(farm)} host(s)" in broken.err, broken.err
    assert v3_load.failed == 0 and set(v3_load.bodies) == {"V2"}
    lb_conf = Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
    assert f"server {farm[1].address}:8080 down;" in lb_conf, lb_conf  # the failed host stays out
    assert Remote(farm[2]).run("readlink /srv/django/current") == Remote(farm[3]).run("readlink /srv/django/current")

    # deploying what every host already runs changes no host, and puts the healthy one back in
    again = fab("deploy", "--project", v2, settings=settings)
    assert again.code == 0 and "[rolling] 0 of 3 app host(s) to change" in again.out, again
    assert ":8080 down" not in Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
    with Load(farm[0].address) as v4_load:
        fixed = fab("deploy", "--project", release_project(tmp_path, "V4"), settings=settings)
    assert fixed.code == 0 and v4_load.failed == 0, fixed
    assert {h.name for h in farm[1:]} <= set(served_by(farm[0], 30)), "every app host serves again"
    rows = json.loads(fab("status", "--json", "--role", "lb", settings=settings).out)["runs"][0]["hosts"]
    assert rows[0]["data"]["upstream"] == {h.address: "up" for h in farm[1:]}

    with Load(farm[0].address) as back_load:  # rolling, like deploy: no --role needed
        back = fab("rollback", settings=settings)
    print(
        f"rolling rollback under load: {back_load.sent} requests, {back_load.failed} failed, "
        f"slowest {back_load.slowest:.3f}s, {dict(back_load.bodies)}"
    )
    assert back.code == 0, back
    assert "[rolling] 3 of 3 app host(s) to change" in back.out
    assert back_load.failed == 0 and back_load.slowest < 1.0
    assert served_bodies(farm[0], 9) == {"V2": 9}


def test_a_provision_that_restarts_the_app_rolls_host_by_host_under_load(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    assert fab("provision", "deploy", "--project", release_project(tmp_path, "V1"), settings=settings).code == 0
    data = yaml.safe_load(Path(settings).read_text())
    data["env"] = {"FABSTACK_ROLL_MARK": "1"}  # a new environment: every app host's gunicorn takes it
    Path(settings).write_text(yaml.safe_dump(data))
    with Load(farm[0].address) as load:
        run = fab("provision", settings=settings)
    print(f"provision with a new env under load: {load.sent} requests, {load.failed} failed")
    assert run.code == 0, run
    assert "[rolling] 3 of 3 app host(s) restart, 1 at a time" in run.out, run.out[-3000:]
    assert load.failed == 0 and load.sent > 20, (load.sent, load.failed)
    for host in farm[1:]:
        assert "FABSTACK_ROLL_MARK=1" in Remote(host).run("cat /srv/django/config/gunicorn.conf.py")
    again = fab("provision", settings=settings)
    assert again.code == 0 and again.changed() == 0 and "[rolling]" not in again.out, again


def served_bodies(lb, count: int) -> dict[str, int]:
    seen: collections.Counter = collections.Counter()
    for _ in range(count):
        with urllib.request.urlopen(f"http://{lb.address}/", timeout=10) as response:
            body = response.read().decode()
            seen[next((w for w in ("V1", "V2", "V3", "V4") if f"Release {w}" in body), "?")] += 1
    return dict(seen)


# Soak: the lb never fails over while every app host is healthy --------------
UPSTREAM_ERRORS = ("upstream prematurely closed", "connect() failed", "no live upstreams", "recv() failed")
LB_ERROR_LOG = "/var/log/nginx/django/lb-error.log"


def upstream_errors(r: Remote, since: int) -> list[str]:
    """Upstream error lines the lb's error log gained after its first `since` lines."""
    lines = r.run(f"tail -n +{since + 1} {LB_ERROR_LOG} 2>/dev/null || true").splitlines()
    return [line for line in lines if any(e in line for e in UPSTREAM_ERRORS)]


def log_length(r: Remote) -> int:
    return int(r.run(f"cat {LB_ERROR_LOG} 2>/dev/null | wc -l").strip())


def burst(lb, clients: int = 8, each: int = 25) -> collections.Counter:
    """clients threads at once, each sending `each` requests; which app answered each."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(clients) as pool:
        counts = list(pool.map(lambda _: served_by(lb, each), range(clients)))
    return sum(counts, collections.Counter())


def wait_idle(hosts: list, port: int, deadline: float = 60.0) -> float:
    """Wait until no connection to `port` is established on any of hosts: every idle
    keepalive connection has timed out (closed by the client side, as it must be)."""
    import time

    started = time.monotonic()
    remotes = [Remote(h) for h in hosts]
    while time.monotonic() - started < deadline:
        if not any(r.run(f"ss -Htn state established '( dport = :{port} )'").strip() for r in remotes):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"connections to :{port} still open after {deadline}s: keepalive never timed out")


class StickyLoad(Load):
    """Load that records which app host served each request (X-Served-By)."""

    def client(self) -> None:
        while not self.stop.is_set() and self.sent < self.max_requests:
            try:
                with urllib.request.urlopen(self.request(), timeout=10) as response:
                    who = response.headers["X-Served-By"]
            except (urllib.error.URLError, OSError):
                who = "failed"
            with self.lock:
                self.sent += 1
                self.failed += who == "failed"
                self.bodies[who] += 1


def test_soak_ip_hash_never_fails_over_on_a_healthy_farm(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold, lb_method="ip_hash")
    assert fab("provision", "deploy", settings=settings).code == 0
    lb = Remote(farm[0])
    start = log_length(lb)
    provision(settings)
    seen = [burst(farm[0])]  # right after a provision
    print(f"idle after provision: {wait_idle(farm[:1], 8080):.1f}s")
    seen.append(burst(farm[0]))  # after every keepalive connection timed out
    with StickyLoad(farm[0].address, clients=8) as during_deploy:
        run = fab("deploy", "--project", release_project(tmp_path, "V2"), settings=settings)
    assert run.code == 0, run
    assert during_deploy.failed == 0, during_deploy.bodies  # a client moves only while its app is out
    seen.append(burst(farm[0]))  # right after the deploy
    print(f"idle after deploy: {wait_idle(farm[:1], 8080):.1f}s")
    with StickyLoad(farm[0].address, clients=8) as during_reload:
        assert fab("reload", "--role", "app", settings=settings).code == 0
    seen.append(during_reload.bodies)  # a reload takes no host out: the client stays
    seen.append(burst(farm[0]))  # right after the reload
    print(f"ip_hash soak: {[dict(s) for s in seen]}; during deploy {dict(during_deploy.bodies)}")
    total = sum(seen, collections.Counter())
    assert total["failed"] == 0 and len(total) == 1, seen
    assert upstream_errors(lb, start) == []


def test_weights_are_exact_and_the_backup_idle(lab, farm, cold, tmp_path, deployed_snapshot):
    (backup,) = lab.up(count=1, init="sshd", prefix="bk", snapshot=deployed_snapshot)
    settings = write_settings(tmp_path, farm, cold, **{"1": {"weight": 3}})
    data = yaml.safe_load(Path(settings).read_text())
    data["hosts"].append({"host": backup.target, "roles": ["app"], "backup": True})
    Path(settings).write_text(yaml.safe_dump(data))
    assert fab("provision", "deploy", settings=settings).code == 0
    lb = Remote(farm[0])
    start = log_length(lb)
    print(f"idle after provision: {wait_idle(farm[:1], 8080):.1f}s")
    seen = served_by(farm[0], 1000)
    print(f"weights 3:1:1 + backup over 1000 sequential requests: {dict(seen)}")
    assert seen == {farm[1].name: 600, farm[2].name: 200, farm[3].name: 200}, seen
    assert upstream_errors(lb, start) == []


# Issue 21 on the farm: `fab check` per role, and a forged Host header refused -----------
def test_check_passes_on_a_healthy_farm_and_names_what_breaks(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    data = yaml.safe_load(Path(settings).read_text())
    data["server_name"] = "shop.example"
    Path(settings).write_text(yaml.safe_dump(data))
    assert fab("provision", "deploy", settings=settings).code == 0
    healthy = fab("check", settings=settings)
    assert healthy.code == 0, healthy
    # SQLite on three app hosts: listed as a warning on each, not failed (and said by provision)
    sqlite = "warning: SQLite on 3 app hosts: each keeps its own database"
    assert all(f"[{h.target}] {sqlite}" in healthy.out for h in farm[1:]), healthy.out[-3000:]
    assert f"[{farm[2].target}] one SECRET_KEY for the farm: ok" in healthy.out
    # Django refuses a Host header that is not the site's (no password-reset link to evil.example)
    request = urllib.request.Request(f"http://{farm[0].address}/", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    lb, app = Remote(farm[0]), Remote(farm[1])
    assert "nginx/" not in lb.run(f"curl --noproxy '*' -sI http://{farm[0].address}/ | grep -i '^server:'")
    app.run("chmod 644 /srv/django/shared/data/secret_key")
    lb.run("sed -i '/server_tokens off;/d' /etc/nginx/sites-available/django-lb.conf && nginx -s reload")
    rogue = "setsid python3 -m http.server --bind 0.0.0.0 8765 > /dev/null 2>&1 < /dev/null &"
    Remote(farm[2]).run(f"setpriv --reuid=django --regid=django --init-groups --reset-env sh -c '{rogue}'")
    try:
        Remote(farm[2]).run("for i in $(seq 50); do ss -Hltn | grep -q ':8765 ' && break; sleep 0.1; done")
        broken = fab("check", settings=settings)
        assert broken.code == 1, broken
        assert f"{farm[1].target}: step 'secret files private' failed" in broken.out
        assert (
            f"{farm[0].target}: step 'nginx hides its version' failed: nginx runs without server_tokens off"
            in broken.out
        )
        assert (
            f"{farm[2].target}: step 'gunicorn only through nginx' failed: the app user listens on 0.0.0.0:8765"
            in broken.out
        )
    finally:
        Remote(farm[2]).run("pkill -u django -f http.server || true")
    assert fab("provision", settings=settings).code == 0  # provision puts both back
    assert fab("check", settings=settings).code == 0


def test_a_host_that_stops_answering_is_taken_out_and_put_back(farm, cold, tmp_path):
    settings = write_settings(tmp_path, farm, cold)
    assert fab("provision", "deploy", settings=settings).code == 0
    app = Remote(farm[2])
    gunicorns = "$(pgrep -d ' ' -u django -f '[b]in/gunicorn')"
    app.run(f"kill -STOP {gunicorns}")  # hung: alive to its manager, answering nobody
    try:
        hung = fab("deploy", settings=settings)
        assert hung.code == 1, hung
        assert "the load balancers keep them out until they answer" in hung.err and farm[2].target in hung.err
        lb_conf = Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
        assert f"server {farm[2].address}:8080 down;" in lb_conf, lb_conf
        assert served_by(farm[0], 20)["failed"] == 0
    finally:
        app.run(f"kill -CONT {gunicorns}")
    back = fab("deploy", settings=settings)
    assert back.code == 0, back
    assert ":8080 down" not in Remote(farm[0]).run("cat /etc/nginx/sites-enabled/django-lb.conf")
