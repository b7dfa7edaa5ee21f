"""`fab check`: is a host safe as it runs now? One batched read per host, then one
step per check, each ok or failed with what is wrong; every check runs even when an
earlier one fails, and the run exits 1 when any did.

Django's `check --deploy` warnings are listed, not failed: a site served over plain
HTTP (the guide's setup) always has the HTTPS ones. Its errors fail the check.
"""

from __future__ import annotations

import contextlib

from deploy import facts
from deploy.layout import Layout
from deploy.runner import HostRun, StepFailed, say
from deploy.steps.app import app_python


def _script(h: HostRun) -> str:
    layout = Layout.of(h.settings)
    secrets = [layout.secret(name) for name in {"SECRET_KEY", *h.settings.secrets}]
    check = app_python(h, layout.current, "manage.py check --deploy")
    return f"""set +e
echo "app_uid=$(id -u {layout.app} 2>/dev/null)"
pid=$(cat {layout.pidfile} 2>/dev/null)
if [ -n "$pid" ] && [ -d /proc/$pid ]; then
  echo "owners=$(ps -o user= -p $pid --ppid $pid | sort -u | tr '\\n' ' ')"
  pids="$pid|$(pgrep -d '|' -P $pid)"
  echo "listen=$(ss -Hltnp | grep -E "pid=($pids)," | awk '{{print $4}}' | sort -u | tr '\\n' ' ')"
fi
for f in {" ".join(sorted(secrets))}; do echo "secret.$f=$(stat -c '%U:%G %a' $f 2>/dev/null)"; done
echo "data_dir=$(stat -c '%U:%G %a' {layout.data} 2>/dev/null)"
if out=$(nginx -t 2>&1); then echo nginx_test=ok; else echo "nginx_test=$(echo "$out" | grep -m1 emerg)"; fi
if [ -e {layout.current} ]; then
  out=$({check} 2>&1); echo "django_status=$?"
  echo "django_warnings=$(echo "$out" | grep -oE '^[^ ]*: \\(security\\.W[0-9]+\\)' | grep -oE 'W[0-9]+' | tr '\\n' ' ')"
  echo "django_error=$(echo "$out" | grep -m1 -E 'ERROR|Error' )"
fi
true"""


def _fail_if(problem: str):
    def verdict(h: HostRun) -> bool:
        if problem:
            raise StepFailed(problem)
        return False

    return verdict


def findings(h: HostRun) -> dict[str, str]:
    """Each check's problem ('' when fine), from the host's facts."""
    f, layout = h.facts, Layout.of(h.settings)
    owners = f.get("owners", "").split()
    listening = f.get("listen", "").split()
    public = [a for a in listening if not a.startswith(("127.", "[::1]", "localhost"))]
    secrets = {k.removeprefix("secret."): v for k, v in f.items() if k.startswith("secret.")}
    exposed = [f"{path} ({meta or 'missing'})" for path, meta in sorted(secrets.items())
               if meta != f"{layout.app}:{layout.app} 600" and (meta or path == layout.secret_key)]  # fmt: skip
    django = f.get("django_status", "")
    return {
        "host key trusted": "",  # connected: the key matched known_hosts (or accept-new recorded it)
        "app user not root": (
            f"app user {layout.app} has uid 0"
            if f.get("app_uid") == "0"
            else f"gunicorn runs as {', '.join(o for o in owners if o != layout.app)}"
            if set(owners) - {layout.app}
            else "gunicorn is not running"
            if not owners
            else ""
        ),  # fmt: skip
        "gunicorn on loopback only": f"gunicorn listens on {', '.join(public)}" if public else "",
        "secret files private": f"not app-only (600): {', '.join(exposed)}" if exposed else "",
        "data directory private": ""
        if f.get("data_dir") == f"{layout.app}:{layout.app} 700"
        else (f"{layout.data} is {f.get('data_dir') or 'missing'}; want {layout.app}:{layout.app} 700"),  # fmt: skip
        "nginx -t": "" if f.get("nginx_test") == "ok" else f.get("nginx_test", "nginx -t failed"),
        "django check --deploy": (
            "" if django in ("", "0") else f"manage.py check --deploy failed: {f.get('django_error') or django}"
        ),
    }


def check(h: HostRun) -> None:
    h.facts = facts.parse(h.run(_script(h)))
    warnings = h.facts.get("django_warnings", "").strip()
    problems = findings(h)
    h.result.data = {name: problem or "ok" for name, problem in problems.items()} | {
        "django warnings": warnings or "none"
    }
    for name, problem in problems.items():
        with contextlib.suppress(StepFailed):  # recorded; the other checks still run
            h.step(name, _fail_if(problem))
    if warnings:
        say(h.host, f"django check --deploy warnings: {warnings} (run manage.py check --deploy for details)")
