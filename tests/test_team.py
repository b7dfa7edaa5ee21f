"""What a team needs every day, on a farm of one lb and two app hosts: the deploy lock
(two runs at once, a lock by hand, a run killed mid-way), the audit trail, hooks that
gate and follow a deploy, and a secret read from a real password manager (`pass`, with
a GPG key made here)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import FAB, REPO, ColdRun, Load, Remote, changed_paths, fab, get, git, stock_project, with_view

from deploy.lab import Lab

pytestmark = pytest.mark.lab

TOKEN_VIEW = """

def token(request):
    import hashlib
    import os

    with open(os.environ["DJANGO_PASS_TOKEN_FILE"]) as f:
        return HttpResponse(hashlib.sha256(f.read().strip().encode()).hexdigest())
"""
GLUSTER_OWN = ("/var/log/glusterfs/", "/var/lib/glusterd/", "/var/lib/fabstack/bricks/django/.glusterfs/")
GATE = (
    '#!/bin/sh\n# a gate: closed while GATE=closed\n[ "${GATE:-open}" = open ] || { echo "gate closed" >&2; exit 1; }\n'
)
NOTIFY = '#!/bin/sh\nenv | grep "^FABSTACK_" | sort > "$HOOK_LOG"\n'


@pytest.fixture(scope="module")
def password_store(tmp_path_factory):
    """A real `pass` store, its GPG key made here with no passphrase: the environment
    that reaches it, and the secret in it."""
    home = tmp_path_factory.mktemp("gpg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home), "PASSWORD_STORE_DIR": str(home / "store")}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "fabstack test <test@example.com>", "default",
         "default", "never"], env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["pass", "init", "test@example.com"], env=env, check=True, capture_output=True)
    value = "pass-" + secrets.token_hex(16)
    subprocess.run(["pass", "insert", "-m", "team/token"], env=env, input=value + "\n", text=True, check=True,
                   capture_output=True)  # fmt: skip
    yield {"GNUPGHOME": env["GNUPGHOME"], "PASSWORD_STORE_DIR": env["PASSWORD_STORE_DIR"]}, value
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)


@pytest.fixture(scope="module")
def team(lab: Lab, cold: ColdRun, deployed_snapshot: str, password_store, tmp_path_factory):
    hosts = lab.up(count=3, init="sshd", prefix="tm", snapshot=deployed_snapshot)
    root = tmp_path_factory.mktemp("team")
    project = stock_project(root / "mysite", "dotenv-" + secrets.token_hex(8))
    with_view(project, "token", TOKEN_VIEW)
    (project / "bin").mkdir()
    for name, text in (("gate.sh", GATE), ("notify.sh", NOTIFY)):
        (project / "bin" / name).write_text(text)
        (project / "bin" / name).chmod(0o755)
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "A view of the token, and hooks")
    base = yaml.safe_load(cold.settings.read_text()) or {}
    lb, app1, app2 = hosts
    settings = root / "team.yaml"
    config = {
        **base, "project_path": str(project),
        "hosts": [{"host": lb.target, "roles": ["lb"]}, {"host": app1.target}, {"host": app2.target}],
        "secrets": {"PASS_TOKEN": "cmd:pass show team/token"},
        "hooks": {"pre_deploy": "bin/gate.sh", "post_deploy": "bin/notify.sh"},
        "lock_timeout": 10,  # a run that stops answering holds the lock 10 s
    }  # fmt: skip
    settings.write_text(yaml.safe_dump(config))
    env, _ = password_store
    first = fab("provision", "deploy", settings=settings, env={**env, "HOOK_LOG": str(root / "first.env")})
    assert first.code == 0, first
    return hosts, project, settings, env


def edit(project: Path, text: str) -> None:
    """A code change a deploy ships (committed, as a team's would be)."""
    (project / "notes" / "marker.py").write_text(f"MARKER = {text!r}\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", f"marker {text}")


def start_fab(*args: str, settings: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [FAB, *args], cwd=REPO, env={**os.environ, **env, "FABSTACK_SETTINGS": str(settings)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def releases_served(settings: Path, env: dict) -> dict[str, str]:
    """Each app host's current release, from fab status (the lb, started from a deployed
    host's snapshot, keeps that host's old release directory: not its to serve)."""
    status = fab("status", "--json", settings=settings, env=env)
    rows = json.loads(status.out)["runs"][0]["hosts"]
    apps = {m["host"] for m in yaml.safe_load(settings.read_text())["hosts"] if "lb" not in m.get("roles", [])}
    return {h["host"]: h["data"]["release"] for h in rows if h["host"] in apps}


def test_two_deploys_at_once_one_runs_and_a_killed_run_s_lock_is_taken_over(team, tmp_path):
    (lb, app1, app2), project, settings, env = team
    hook_env = {**env, "HOOK_LOG": str(tmp_path / "hook.env")}
    edit(project, "both")
    started = time.monotonic()
    runs = [start_fab("deploy", settings=settings, env=hook_env) for _ in range(2)]
    ended: dict[int, float] = {}
    while len(ended) < 2:
        for i, run in enumerate(runs):
            if i not in ended and run.poll() is not None:
                ended[i] = time.monotonic() - started
        time.sleep(0.05)
    outs = [(run.returncode, *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in outs)
    assert codes == [0, 1], outs
    refused = next(i for i, (code, _, _) in enumerate(outs) if code == 1)
    said = outs[refused][2]
    # refused at once, not after the other's deploy; the bound leaves room
    # for a machine busy with a second lab (fab's start, the password manager, the connection)
    print(f"refused after {ended[refused]:.2f} s; the deploy took {ended[1 - refused]:.2f} s")
    assert ended[refused] < 4.0 and ended[refused] < ended[1 - refused] / 2, ended
    assert f"app django is locked on {lb.target} by " in said and "'s deploy of release " in said, said
    assert len(said.strip().splitlines()) == 1, said
    served = releases_served(settings, env)
    assert sorted(served) == sorted([app1.target, app2.target]) and len(set(served.values())) == 1, served
    lb_conf = Remote(lb).run("cat /etc/nginx/sites-available/django-lb.conf")
    assert lb_conf.count(" down;") == 0 and app1.address in lb_conf and app2.address in lb_conf, lb_conf

    # a run killed mid-way: its lock stays, named; the next run takes it over, saying so
    edit(project, "killed")
    killed = start_fab("deploy", settings=settings, env=hook_env)
    r = Remote(lb)
    deadline = time.monotonic() + 60
    while "task=deploy" not in r.run("cat /var/lib/fabstack/django/lock 2>/dev/null || true"):
        assert time.monotonic() < deadline and killed.poll() is None, killed.communicate()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert "state=held" in r.run("cat /var/lib/fabstack/django/lock")
    after = fab("deploy", settings=settings, env=hook_env)
    assert after.code == 0, after
    assert "warning: took over app django's lock on" in after.out + after.err and "ended without releasing" in (
        after.out + after.err
    )
    assert r.run("test -e /var/lib/fabstack/django/lock || echo gone").strip() == "gone"
    served = releases_served(settings, env)
    assert len(set(served.values())) == 1, served
    log = fab("audit", "--lines", "3", settings=settings, env=env)
    assert "lock taken over from a run that ended without releasing it: who=" in log.out, log
    assert "task=deploy" in log.out.splitlines()[-1] and "result=ok" in log.out.splitlines()[-1], log

    # a run that stops answering (its machine asleep: SIGSTOP) keeps its connection open:
    # the lock holds for lock_timeout (10 s) after its last `alive`, then the next run takes it
    edit(project, "asleep")
    asleep = start_fab("deploy", settings=settings, env=hook_env)
    deadline = time.monotonic() + 60
    while "task=deploy" not in r.run("cat /var/lib/fabstack/django/lock 2>/dev/null || true"):
        assert time.monotonic() < deadline and asleep.poll() is None, asleep.communicate()
        time.sleep(0.05)
    asleep.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        refused = fab("deploy", settings=settings, env=hook_env)
        assert refused.code == 1 and "is locked on" in refused.err, refused
        while True:
            taken = fab("deploy", settings=settings, env=hook_env)
            if taken.code == 0 or time.monotonic() - stopped > 60:
                break
            assert "is locked on" in taken.err, taken
            time.sleep(1)
        waited = time.monotonic() - stopped
        assert taken.code == 0 and "took over app django's lock" in taken.out + taken.err, taken
        assert 10 <= waited < 30, waited
    finally:
        asleep.kill()
        asleep.communicate()
    assert len(set(releases_served(settings, env).values())) == 1


def test_a_lock_by_hand_refuses_a_deploy_until_unlock_and_audit_says_who_did_what(team, tmp_path):
    (lb, _, _), project, settings, env = team
    hook_env = {**env, "HOOK_LOG": str(tmp_path / "hook.env")}
    locked = fab("lock", "--message", "migrating data", settings=settings, env=env)
    assert locked.code == 0 and f"app django locked on {lb.target}" in locked.out, locked
    edit(project, "by-hand")
    refused = fab("deploy", settings=settings, env=hook_env)
    assert refused.code == 1 and "by hand: migrating data" in refused.err and "fab unlock" in refused.err, refused
    assert not (tmp_path / "hook.env").exists()  # refused before any hook
    assert fab("lock", settings=settings, env=env).code == 1  # held already
    unlocked = fab("unlock", settings=settings, env=env)
    assert unlocked.code == 0 and "unlocked" in unlocked.out and "migrating data" in unlocked.out, unlocked
    deployed = fab("deploy", settings=settings, env=hook_env)
    assert deployed.code == 0, deployed
    noop = fab("deploy", settings=settings, env=hook_env)
    assert noop.code == 0 and noop.changed() == 0, noop
    # a task on the whole farm: gunicorn's on the app hosts only (the lb has none to restart)
    restarted = fab("restart", settings=settings, env=env)
    assert restarted.code == 0 and restarted.summary()[lb.target] == (0, 0, 0), restarted
    log = fab("audit", "--lines", "4", settings=settings, env=env)
    assert log.code == 0 and "task=restart" in log.out.splitlines()[-1], log
    log.out = "\n".join(log.out.splitlines()[:-1])
    lock_line, unlock_line, deploy_line = log.out.strip().splitlines()  # the no-op deploy left no line
    assert "task=lock message='migrating data'" in lock_line and "task=unlock" in unlock_line, log.out
    for word in ("who=", "task=deploy", f"hosts={lb.target},", "release=", "->", "result=ok"):
        assert word in deploy_line, deploy_line


def test_a_failing_pre_deploy_hook_changes_no_host_and_post_deploy_sees_the_release(team, tmp_path):
    hosts, project, settings, env = team
    edit(project, "gated")
    remotes = [Remote(h) for h in hosts]
    before = [r.tree() for r in remotes]
    log = tmp_path / "hook.env"
    gated = fab("deploy", settings=settings, env={**env, "GATE": "closed", "HOOK_LOG": str(log)})
    assert gated.code == 1, gated
    assert "the pre_deploy hook bin/gate.sh exited 1; no host was changed" in gated.err, gated
    assert "gate closed" in gated.err and not log.exists()
    for r, tree in zip(remotes, before, strict=True):
        # GlusterFS (the shared media) writes on its own: its client's log, glusterd's state,
        # the brick's health check every 30 s; not fab's
        assert changed_paths(tree, r.tree(), ignore=GLUSTER_OWN) == [], r.host.name
    opened = fab("deploy", settings=settings, env={**env, "HOOK_LOG": str(log)})
    assert opened.code == 0, opened
    facts = dict(line.split("=", 1) for line in log.read_text().splitlines())
    served = set(releases_served(settings, env).values())
    assert {facts["FABSTACK_RELEASE"]} == served and facts["FABSTACK_PREVIOUS_RELEASE"] not in served, facts
    assert facts["FABSTACK_TASK"] == "deploy" and facts["FABSTACK_RESULT"] == "ok" and facts["FABSTACK_APP"] == "django"
    assert facts["FABSTACK_HOSTS"] == ",".join(h.target for h in hosts), facts


def test_a_secret_from_pass_reaches_the_app_and_no_output(team, password_store, tmp_path):
    (lb, app1, _), project, settings, env = team
    _, value = password_store
    wanted = hashlib.sha256(value.encode()).hexdigest()
    assert get(f"http://{lb.address}/notes/token/") == (200, wanted)
    hook_env = {**env, "HOOK_LOG": str(tmp_path / "hook.env")}
    runs = [
        fab("provision", "deploy", "--verbose", settings=settings, env=hook_env),
        fab("provision", "deploy", "--json", settings=settings, env=hook_env),
        fab("provision", "deploy", "--dry-run", settings=settings, env=hook_env),
        fab("status", "--json", settings=settings, env=env),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0], [r for r in runs if r.code]
    assert not [r.args for r in runs if value in r.out + r.err]
    found = Remote(app1).run(f"grep -rlsF -- {value} /etc /srv /var/log /var/lib /tmp /root || true")
    assert found.strip().splitlines() == ["/srv/django/shared/data/pass_token"], found
    # a command that fails: one line naming the secret and why, exit 2, before any host
    broken = yaml.safe_load(settings.read_text())
    broken["secrets"] = {"PASS_TOKEN": "cmd:pass show team/missing"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    started = time.monotonic()
    refused = fab("deploy", settings=path, env=env)
    assert refused.code == 2 and refused.out == "", refused
    (line,) = refused.err.strip().splitlines()
    assert line.startswith("fabstack: secrets.PASS_TOKEN: the command 'pass show team/missing' exited 1:"), line
    assert "not in the password store" in line and time.monotonic() - started < 10


class Watch(Load):
    """Clients asking the lb for /notes/ until stopped: each answer's time, status and
    whether it was the maintenance page (with its Retry-After)."""

    def __init__(self, address: str):
        self.seen: list[tuple[float, int, bool]] = []
        super().__init__(address, clients=4, path="/notes/")

    def client(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.request(), timeout=10) as response:
                    status, body = response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read().decode()
                body += "" if error.headers.get("Retry-After") else " (no Retry-After)"
            except OSError as exc:
                status, body = 0, str(exc)
            self.seen.append((time.monotonic(), status, "Back after the migration" in body and "(no" not in body))


def test_maintenance_answers_503_with_its_page_under_load_but_to_the_admins(team, tmp_path):
    (lb, app1, _), project, settings, env = team
    config = yaml.safe_load(settings.read_text())
    config["maintenance_allow"] = [f"{app1.address}/32"]  # an admin's address: app1 asks the lb from it
    settings.write_text(yaml.safe_dump(config))
    hook_env = {**env, "HOOK_LOG": str(tmp_path / "hook.env")}
    assert fab("provision", settings=settings, env=hook_env).code == 0  # the lb's site lets the admin pass
    admin = Remote(app1)
    with Watch(lb.address) as watch:
        time.sleep(0.5)
        on = fab("maintenance", "on", "--message", "Back after the migration", settings=settings, env=env)
        on_returned = time.monotonic()
        assert on.code == 0, on
        assert admin.run(f"curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' http://{lb.address}/notes/") == "200"
        assert (
            admin.run(
                f"curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' http://{lb.address}/.well-known/acme-challenge/x"
            )
            != "503"
        )
        status = fab("status", "--json", settings=settings, env=env)
        rows = {h["host"]: h["data"] for h in json.loads(status.out)["runs"][0]["hosts"]}
        assert rows[lb.target]["maintenance"] == "on", rows
        edit(project, "during maintenance")
        deployed = fab("deploy", settings=settings, env=hook_env)  # a deploy keeps it on
        assert deployed.code == 0, deployed
        time.sleep(1.5)
        off_started = time.monotonic()  # the page goes before fab returns: 200s may start from here
        off = fab("maintenance", "off", settings=settings, env=env)
        off_returned = time.monotonic()
        assert off.code == 0, off
        time.sleep(1.5)
    seen = watch.seen
    during = [(s, page) for t, s, page in seen if on_returned + 1 <= t <= off_started]
    after = [s for t, s, _ in seen if t >= off_returned + 1]
    half = [(s, page) for _, s, page in seen if not (s == 200 or (s == 503 and page))]
    assert during and set(during) == {(503, True)}, collections_of(during)
    assert after and set(after) == {200}, collections_of(after)
    assert half == [], collections_of(half)
    assert fab("maintenance", "off", settings=settings, env=env).changed() == 0


def collections_of(items: list) -> dict:
    return dict(collections.Counter(items))
