"""`fab check`: is a host safe as it runs now? One batched read per host, then one
step per check, each ok or failed with what is wrong; every check runs even when an
earlier one fails, and the run exits 1 when any did.

Django's `check --deploy` warnings are listed, not failed: a site served over plain
HTTP (the guide's setup) always has the HTTPS ones. Its errors fail the check.
"""

from __future__ import annotations

import contextlib
import shlex

from deploy import facts
from deploy.layout import Layout
from deploy.runner import HostRun, StepFailed, say
from deploy.steps.app import app_python


def _script(h: HostRun, app_host: bool) -> str:
    """One read of everything the checks need. gunicorn's owners and listeners come from
    every process running this app's gunicorn config and every process of the app user,
    never from a pid the app could forge."""
    layout = Layout.of(h.settings)
    common = """set +e
if out=$(nginx -t 2>&1); then echo nginx_test=ok; else echo "nginx_test=$(echo "$out" | grep -m1 emerg)"; fi
echo "server_tokens=$(nginx -T 2>/dev/null | grep -cE '^[[:space:]]*server_tokens[[:space:]]+off;')"
"""
    if not app_host:
        return common + "true"
    secrets = [layout.secret(name) for name in {"SECRET_KEY", *h.settings.secrets}]
    check = app_python(h, layout.current, "manage.py check --deploy")
    reads = 'for f; do echo "secret.$f=$(stat -c \'%U:%G %a\' "$f" 2>/dev/null)"; done'
    return (
        common
        + f"""echo "app_uid=$(id -u {layout.app} 2>/dev/null)"
masters=$(pgrep -d, -f -- '[b]in/gunicorn --config {layout.gunicorn_conf}')  # [b]: not this script itself
[ -n "$masters" ] && echo "owners=$(ps -o user= -p "$masters" | sort -u | tr '\\n' ' ')"
pids=$(pgrep -d '|' -u {layout.app})
[ -n "$pids" ] && echo "listen=$(ss -Hltnp | grep -E "pid=($pids)," | awk '{{print $4}}' | sort -u | tr '\\n' ' ')"
{layout.as_app("sh -c " + shlex.quote(reads) + " - " + " ".join(sorted(secrets)))}
echo "data_dir=$(stat -c '%U:%G %a' {layout.data} 2>/dev/null)"
if [ -e {layout.current} ]; then
  out=$({check} 2>&1); echo "django_status=$?"
  echo "django_warnings=$(echo "$out" | grep -oE '^[^ ]*: \\(security\\.W[0-9]+\\)' | grep -oE 'W[0-9]+' | tr '\\n' ' ')"
  echo "django_error=$(echo "$out" | grep -m1 -E 'ERROR|Error' )"
fi
true"""
    )


def _fail_if(problem: str):
    def verdict(h: HostRun) -> bool:
        if problem:
            raise StepFailed(problem)
        return False

    return verdict


def findings(h: HostRun, app_host: bool) -> dict[str, str]:
    """Each check's problem ('' when fine), from the host's facts: for a load balancer
    only what it runs (nginx), for an app host everything."""
    f, layout = h.facts, Layout.of(h.settings)
    nginx_checks = {
        "nginx -t": "" if f.get("nginx_test") == "ok" else f.get("nginx_test", "nginx -t failed"),
        "nginx hides its version": "" if int(f.get("server_tokens") or 0) else "nginx runs without server_tokens off",
    }
    found = {"host key trusted": ""}  # connected: the key matched known_hosts (or accept-new recorded it)
    if not app_host:
        return found | nginx_checks
    owners = f.get("owners", "").split()
    listening = f.get("listen", "").split()
    public = [a for a in listening if not a.startswith(("127.", "[::1]", "localhost"))]
    secrets = {k.removeprefix("secret."): v for k, v in f.items() if k.startswith("secret.")}
    exposed = [f"{path} ({meta or 'missing'})" for path, meta in sorted(secrets.items())
               if meta != f"{layout.app}:{layout.app} 600" and (meta or path == layout.secret_key)]  # fmt: skip
    django = f.get("django_status", "")
    return found | {
        "app user not root": (
            f"app user {layout.app} has uid 0"
            if f.get("app_uid") == "0"
            else f"gunicorn runs as {', '.join(o for o in owners if o != layout.app)}"
            if set(owners) - {layout.app}
            else "gunicorn is not running"
            if not owners
            else ""
        ),  # fmt: skip
        "gunicorn on loopback only": f"the app user listens on {', '.join(public)}" if public else "",
        "secret files private": f"not app-only (600): {', '.join(exposed)}" if exposed else "",
        "data directory private": ""
        if f.get("data_dir") == f"{layout.app}:{layout.app} 700"
        else (f"{layout.data} is {f.get('data_dir') or 'missing'}; want {layout.app}:{layout.app} 700"),  # fmt: skip
        **nginx_checks,
        "django check --deploy": (
            "" if django in ("", "0") else f"manage.py check --deploy failed: {f.get('django_error') or django}"
        ),
    }


def check(h: HostRun) -> None:
    app_host = "app" in h.settings.inventory.roles_of(h.host)
    h.facts = facts.parse(h.run(_script(h, app_host)))
    warnings = h.facts.get("django_warnings", "").strip()
    problems = findings(h, app_host)
    h.result.data = {name: problem or "ok" for name, problem in problems.items()} | {
        "django warnings": warnings or "none"
    }
    for name, problem in problems.items():
        with contextlib.suppress(StepFailed):  # recorded; the other checks still run
            h.step(name, _fail_if(problem))
    if warnings:
        say(h.host, f"django check --deploy warnings: {warnings} (run manage.py check --deploy for details)")
