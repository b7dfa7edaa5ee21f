"""Read-only tasks: status, releases, logs. They change nothing and read each host in
one remote command; what they find goes into the host's result data (and so into
--json), and the human report is a table or host-prefixed lines.
"""

from __future__ import annotations

import shlex

from deploy import facts, output
from deploy.layout import Layout
from deploy.plans import gather
from deploy.runner import HostResult, HostRun, StepFailed, say
from deploy.steps import app, nginx, process
from deploy.steps.nginx import app_port

STATUS_COLUMNS = (
    "reachable", "nginx", "config", "app", "manager", "pid", "workers", "class", "release", "passed", "health",
    "upstream",
)  # fmt: skip


def status(h: HostRun) -> None:
    """One row per host; the step fails when something that should run does not."""
    layout = Layout.of(h.settings)
    roles = h.settings.inventory.roles_of(h.host)
    health_at = f"127.0.0.1:{app_port(h) if 'app' in roles else h.settings.listen_port}"
    h.facts = facts.parse(
        h.run(facts.script(layout, [layout.gunicorn_conf]) + "\n" + _status_script(h, health_at, "app" in roles))
    )
    f = h.facts
    row = {
        "reachable": "yes",
        "nginx": "running" if f.get("nginx_pid") else "stopped",
        "config": "ok" if f.get("nginx_test") == "ok" else "invalid",
        "app": "-",
        "release": f.get(f"link.{layout.current}", "").rsplit("/", 1)[-1] or "-",
        "passed": f.get("passed") or "-",
        "health": f.get("health", "-"),
    }
    if "lb" in roles and nginx.member(h):
        row["upstream"] = upstream_states(f.get("upstream", ""))
    if "app" in roles:
        row |= {
            "app": "running" if f.get("app_pid") else "stopped",
            "manager": process.running_manager(h) or "-",
            "pid": f.get("app_pid", "-"),
            "workers": f.get("workers", "-"),
            "class": f.get("worker_class", "-"),
            "uptime": f.get("uptime", "-"),
        }
    h.result.data = row
    problems = [f"{k} {row[k]}" for k in ("nginx", "config", "app") if row[k] in ("stopped", "invalid")]
    if row["health"] not in ("ok", "-"):
        problems.append(f"health check: {row['health']}")
    # a host from before the passed record has none: only a record that names another
    # release says the current one was never checked (a first release that failed has
    # its app stopped, which is a problem of its own)
    if "app" in roles and row["passed"] != "-" and row["release"] not in ("-", row["passed"]):
        problems.append(f"release {row['release']} has not passed its health check")

    def check(h: HostRun) -> bool:
        if problems:
            raise StepFailed("; ".join(problems))
        return False

    h.step("status", check, report=False)


def upstream_states(servers: str) -> dict[str, str]:
    """The lb's upstream, from its `server` lines: app host address -> up, down or backup."""
    states = {}
    for server in filter(None, (s.strip() for s in servers.split(","))):
        address, *flags = server.split()
        states[address.rsplit(":", 1)[0]] = "down" if "down" in flags else "backup" if "backup" in flags else "up"
    return states


def _upstream_summary(states: dict[str, str]) -> str:
    """`3 up` or `2 up, down: 10.0.0.12` for the status table."""
    up = sum(1 for state in states.values() if state != "down")
    down = [address for address, state in states.items() if state == "down"]
    return f"{up} up" + (f", down: {' '.join(down)}" if down else "")


def _status_script(h: HostRun, health_at: str, app_host: bool) -> str:
    layout = Layout.of(h.settings)
    health = process.health_command(h.settings, health_at)
    return f"""nginx -t >/dev/null 2>&1 && echo nginx_test=ok
health() {{ echo "health=$(r=$({health} 2>&1) && echo ok || echo "$r" | tail -n 1)"; }}
if alive; then
  echo "workers=$(pgrep -c -P $pid)"; echo "uptime=$(ps -o etimes= -p $pid | tr -d ' ')s"; health
elif {"false" if app_host else "true"}; then
  health  # a load balancer: the site through it
fi
echo "worker_class=$(sed -n 's/^worker_class *= *//p' {layout.gunicorn_conf} 2>/dev/null | tr -d '\"')"
echo "upstream=$(grep -E '^ *server [^{{]*;$' {layout.nginx_lb_site} 2>/dev/null | sed 's/^ *server //; s/;$//' | paste -sd ,)"
true"""


def status_table(results: list[HostResult]) -> None:
    """The status table (unreachable hosts included), then failures and summary lines."""
    columns = ("host", *STATUS_COLUMNS, "uptime")
    rows = []
    for r in results:
        row = {"host": r.host, **r.data} if r.data else {"host": r.host, "reachable": "no"}
        if isinstance(row.get("upstream"), dict):
            row["upstream"] = _upstream_summary(row["upstream"])
        rows.append([str(row.get(c, "-")) for c in columns])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = [output.paint("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)), "bold")]
    for r, row in zip(results, rows, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        lines.append(output.paint(line, "failed" if r.failed else "ok"))
    output.write("\n".join(lines))
    output.brief(results)


def releases(h: HostRun) -> None:
    """Release ids, newest first, the current one marked."""
    gather(h)
    current = h.facts.get(f"link.{Layout.of(h.settings).current}", "").rsplit("/", 1)[-1]
    ids = app.releases(h)
    h.result.data = {"releases": ids, "current": current}
    for rid in ids:
        say(h.host, f"{rid}{'  (current)' if rid == current else ''}")
    h.step("releases", lambda h: False, report=False)


def log_files(layout: Layout, app_logs: bool, nginx_logs: bool) -> tuple[list[str], list[str]]:
    """(the app's logs, root's logs): the first live in the app's directory and are only
    ever read as the app user, so a link planted there shows root nothing."""
    app_files, root_files = [], []
    if app_logs:
        app_files += [f"{layout.logs}/error.log", f"{layout.logs}/gunicorn.out"]
        root_files += [layout.supervisor_log]
    if nginx_logs:
        root_files += [f"/var/log/nginx/{layout.app}.error.log", f"/var/log/nginx/{layout.app}.access.log"]
    return app_files, root_files


def _existing(files: list[str], then: str) -> str:
    """Shell: `then` with the files of files that exist as its arguments (none: nothing)."""
    return f'set --; for f in {" ".join(files)}; do [ -e "$f" ] && set -- "$@" "$f"; done; [ $# -eq 0 ] || {then}'


def logs(lines: int, app_logs: bool, nginx_logs: bool, follow: bool = False):
    """The last lines of gunicorn's and/or nginx's logs, prefixed by host; with follow,
    then every new line until Ctrl-C."""

    def show(h: HostRun) -> None:
        layout = Layout.of(h.settings)
        app_files, root_files = log_files(layout, app_logs, nginx_logs)
        as_app = layout.as_app
        if follow:  # both tails end with the session: closing its terminal hangs them up
            tail = f'tail -n {lines} -F "$@"'
            app_tail = as_app(f"sh -c {shlex.quote(_existing(app_files, 'exec ' + tail))}") + " &" if app_files else ""
            h.stream(f"{app_tail}\n{_existing(root_files, tail)}\nwait")
            return
        show_each = f'for f; do [ -s "$f" ] && {{ echo "==> $f <=="; tail -n {lines} "$f"; }}; done'
        script = ""
        if app_files:
            script += as_app(f"sh -c {shlex.quote(show_each)} - {' '.join(app_files)}") + "; "
        script += f"set -- {' '.join(root_files)}; {show_each}"
        if app_logs:  # systemd's journal has what gunicorn printed before its own logging started
            script += (
                f"; [ -f {layout.unit_file} ] && echo '==> journalctl -u {layout.unit} <==' && "
                f"journalctl -u {layout.unit} -n {lines} --no-pager 2>/dev/null"
            )
        out = h.run(script + "; true")  # one round trip for every log
        h.result.data = {"logs": out}
        if out.strip():
            say(h.host, out.rstrip())
        h.step("logs", lambda h: False, report=False)

    return show
