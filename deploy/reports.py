"""Read-only tasks: status, releases, logs. They change nothing and read each host in
one remote command; what they find goes into the host's result data (and so into
--json), and the human report is a table or host-prefixed lines.
"""

from __future__ import annotations

import time
from typing import Any

from deploy import scripts
from deploy.console import Console
from deploy.facts import BackgroundFact, CertificateFact, HostFacts, JobFact, RecordsRead, StatusRead
from deploy.layout import Layout
from deploy.ops import Say, Step, Steps
from deploy.plans import refuse
from deploy.results import HostResult
from deploy.runner import HostRun, Plan
from deploy.settings.tls import WARN_DAYS
from deploy.steps import gunicorn
from deploy.steps.server import secret_sha256, venv_marker

STATUS_COLUMNS = (
    "site", "reachable", "nginx", "config", "app", "manager", "pid", "workers", "class", "release", "passed", "health",
    "upstream", "db", "certificate", "background", "disk", "memory", "updates", "venv", "key", "media", "maintenance",
)  # fmt: skip


def done(h: HostRun) -> Steps:
    """A read-only task's one step: it read what it needed, and changes nothing."""
    return
    yield


def status(h: HostRun) -> None:
    """One row per host; the step fails when something that should run does not."""
    role = "app" if h.is_app else "lb" if "lb" in h.roles else "db"
    port = h.site_port if h.is_app else h.settings.listen_port  # a load balancer: the site through it
    f = h.read_facts(also=("status.sh", [scripts.line("read_status", role, f"127.0.0.1:{port}")]))
    x = StatusRead.parse(f.extra)
    web = h.is_app or "lb" in h.roles  # a db host alone runs no nginx
    row: dict[str, Any] = {
        "site": h.settings.app_name,  # several apps on a host: a row each (docs/apps.md)
        "reachable": "yes",
        "nginx": ("running" if f.nginx_pid else "stopped") if web else "-",
        "config": ("ok" if x.nginx_test == "ok" else "invalid") if web else "-",
        "app": "-",
        "release": f.current_release or "-",
        "passed": f.passed or "-",
        "health": x.health,
        "disk": f"{_size_kb(f.disk_free)} free" if f.disk_free else "-",
        "memory": f"{_size_kb(f.mem_available)} free" if f.mem_available else "-",
        "updates": _updates(x.updates, x.reboot_required == "yes"),
    }
    if h.serves_lb:
        row["upstream"] = upstream_states(x.upstream)
    if h.is_app:
        row |= {
            "venv": f.venv_marker[:8] or "missing",
            # the SECRET_KEY's sha256, its first 8: the same on every app host of a farm
            "key": key.sha256[:8] if (key := f.file(h.layout.secret_key)) else "missing",
            "app": "running" if f.app_pid else "stopped",
            "manager": gunicorn.running_manager(h) or "-",
            "pid": f.app_pid or "-",
            "workers": x.workers,
            "class": x.worker_class,
            "uptime": x.uptime,
        }
    if "lb" in h.roles:  # a host that faces the clients: fab maintenance on answers 503 here
        row["maintenance"] = "on" if f.file(h.layout.maintenance_page) else "off"
    if h.shares_media:  # a farm's one media volume, mounted here (else nginx answers 503 here)
        row["media"] = "shared" if f.media_mount == "fuse.glusterfs" and f.media_marker else "not mounted"
    if "db" in h.roles:
        row["db"] = f"postgresql {f.pg_version} " + ("online" if f.pg_online else "down") if f.pg_version else "missing"
    if h.ends_tls:
        row["certificate"] = certificate_state(h, f.certificate)
    wanted = {p.name: p.count for p in h.background_here}
    shown = [_process(n, f.background.get(n), wanted.get(n, 0)) for n in sorted({*wanted, *f.background})]
    shown += [_job(name, job) for name, job in sorted(f.jobs.items())]
    if shown:
        row["background"] = ", ".join(shown)
    h.result.data = row
    problems = (
        [f"certificate {row['certificate']}"] if row.get("certificate", "").startswith(("missing", "expire")) else []
    )
    if web and not f.installed("nginx"):  # a fresh server: one problem, the fix, not "config invalid"
        row |= {"nginx": "not installed", "config": "-"} | ({"app": "-", "venv": "-"} if h.is_app else {})
        h.result.data = row
        h.step(refuse, "not provisioned: run fab provision", name="status", report=False)
        return
    if h.is_app and not f.app_uid:  # another app's host, a misspelt --app: not "stopped"
        h.step(refuse, f"app {h.settings.app_name} is not on this host: run fab provision, or name another with --app",
               name="status", report=False)  # fmt: skip
        return
    problems += [f"{k} {row[k]}" for k in ("nginx", "config", "app") if row[k] in ("stopped", "invalid")]
    problems += [f"db {row['db']}"] if "db" in row and not f.pg_online else []
    short = [name for name, count in wanted.items() if name not in f.background or f.background[name].running < count]
    stopped = [name for name, job in f.jobs.items() if job.state != "active"]
    problems += [f"background process {name} not running" for name in short]
    if (
        h.is_app
        and "SECRET_KEY" in h.settings.secret_values
        and row["key"] != secret_sha256(h.settings.secret_values["SECRET_KEY"])[:8]
    ):
        problems.append("its SECRET_KEY is not the farm's one key: run fab provision")
    if row.get("media") == "not mounted":
        problems.append("its shared media volume is not mounted (nginx answers 503 here): run fab provision")
    if h.is_app and f.venv_marker != venv_marker(h):
        problems.append(
            "its virtualenv is not the one the settings ask for (every app host's VENV is the same): run fab provision"
        )
    problems += [
        f"job {name}: its {'timer' if f.jobs[name].kind == 'systemd' else 'cron'} is not active" for name in stopped
    ]
    if row["health"] not in ("ok", "-"):
        problems.append(f"health check: {row['health']}")
    # a host from before the passed record has none: only a record that names another
    # release says the current one was never checked (a first release that failed has
    # its app stopped, which is a problem of its own)
    if h.is_app and row["passed"] != "-" and row["release"] not in ("-", row["passed"]):
        problems.append(f"release {row['release']} has not passed its health check")
    h.step(refuse if problems else done, *(["; ".join(problems)] if problems else []), name="status", report=False)


def _updates(counts: str, reboot: bool) -> str:
    """`3 pending (1 security)`, `none`, with `, reboot required` when one is."""
    total, security = (counts.split() + ["0", "0"])[:2] if counts else ("", "")
    shown = "-" if not total else "none" if total == "0" else f"{total} pending ({security} security)"
    return shown + (", reboot required" if reboot else "")


def _size_kb(kb: int) -> str:
    """`75.9G`, `812M`, `640K` from a size in KB."""
    for unit, size in (("G", 2**20), ("M", 2**10)):
        if kb >= size:
            return f"{kb / size:.1f}{unit}" if unit == "G" else f"{kb // size}{unit}"
    return f"{kb}K"


def _log_kind(facts: HostFacts, name: str) -> str:
    """Where a background process's or job's output is: its manager's (systemd, supervisor,
    nohup), its timer's journal (timer) or its cron log (cron); '' when the host has none."""
    if name in facts.background:
        return facts.background[name].manager
    job = facts.jobs.get(name)
    return ("timer" if job.kind == "systemd" else job.kind) if job else ""


def _process(name: str, found: BackgroundFact | None, wanted: int) -> str:
    """`worker 2/2 pid 812 813`: instances running / wanted, and their pids."""
    running, pids = (found.running, found.pids) if found else (0, ())
    return f"{name} {running}/{wanted}" + (" pid " + " ".join(map(str, pids)) if pids else "")


def _job(name: str, job: JobFact) -> str:
    """`tick timer active, last 20:41:00` (or `cron active`, `never`)."""
    how = "timer" if job.kind == "systemd" else job.kind
    return f"{name} {how} {job.state or 'unknown'}, last {_clock(job.last)}"


def _clock(when: str) -> str:
    """`20:41:00` from systemd's `Fri 2026-11-27 20:41:00 UTC` or the cron log's
    `2026-11-27T20:41:00Z`; `never` when empty."""
    parts = when.split()
    if len(parts) >= 3:
        return parts[2]
    if "T" in when:
        return when.split("T", 1)[1].rstrip("Z")
    return "never" if when in ("", "n/a") else when


def certificate_state(h: HostRun, cert: CertificateFact | None) -> str:
    """`until 2027-02-25`, or `expires in N days` within WARN_DAYS, `expired`, `missing`."""
    if cert is None or not cert.expires:
        return "missing"
    left = cert.days_left(h.facts.now)
    if left <= 0:
        return "expired"
    if left < WARN_DAYS:
        return f"expires in {left:.0f} days"
    return "until " + time.strftime("%Y-%m-%d", time.gmtime(cert.expires))


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


def status_table(console: Console, results: list[HostResult]) -> None:
    """The status table (unreachable hosts included), then failures and summary lines."""
    columns = ("host", *STATUS_COLUMNS, "uptime")
    rows: list[list[str]] = []
    for r in results:
        row: dict[str, Any] = {"host": r.host, **r.data} if r.data else {"host": r.host, "reachable": "no"}
        if isinstance(row.get("upstream"), dict):
            row["upstream"] = _upstream_summary(row["upstream"])
        rows.append([str(row.get(c, "-")) for c in columns])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = [console.paint("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)), "bold")]
    for r, cells in zip(results, rows, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip()
        lines.append(console.paint(line, "failed" if r.failed else "ok"))
    console.write("\n".join(lines))
    console.brief(results)


def releases(h: HostRun) -> None:
    """Release ids, newest first, each with the commit it came from (`-dirty` when the
    work tree had changes), the commit's time and subject; the current one marked."""
    f = h.read_facts(also=("release.sh", ["read_release_records"]))
    records, read = {}, RecordsRead.parse(f.extra)
    for rid in f.releases:
        commit, when, subject = (read.record.get(rid, "").split("\t") + ["-", "-", "-"])[:3]
        records[rid] = {"commit": commit or "-", "time": when or "-", "subject": subject or "-"}
    h.result.data = {"releases": f.releases, "current": f.current_release, "records": records}
    h.step(_list_releases, records, name="releases", report=False)


def _list_releases(h: HostRun, records: dict[str, dict[str, str]]) -> Steps:
    for rid, record in records.items():
        mark = "  (current)" if rid == h.facts.current_release else ""
        yield Say(f"{rid}  {record['commit']}  {record['time']}  {record['subject']}{mark}")


def log_files(layout: Layout, app_logs: bool, nginx_logs: bool) -> tuple[list[str], list[str]]:
    """(the app's logs, root's logs): the first live in the app's directory and are only
    ever read as the app user, so a link planted there shows root nothing."""
    app_files, root_files = [], []
    if app_logs:
        app_files += [f"{layout.logs}/error.log", f"{layout.logs}/gunicorn.out"]
        root_files += [layout.supervisor_log]
    if nginx_logs:
        root_files += [f"{layout.nginx_logs}/error.log", f"{layout.nginx_logs}/access.log"]
    return app_files, root_files


def logs(lines: int, app_logs: bool, nginx_logs: bool, follow: bool = False, process: str = "") -> Plan:
    """The last lines of gunicorn's and/or nginx's logs, prefixed by host; with follow,
    then every new line until Ctrl-C. With process, that background process's instead."""

    def show(h: HostRun) -> None:
        if process:
            h.read_facts()
            manager = _log_kind(h.facts, process)
            if not manager and any(job.name == process for job in h.settings.jobs) and not h.first_app_host:
                h.result.data = {"logs": ""}  # a job runs on the first app host alone: nothing to show here
                return
            if not manager:
                h.step(refuse, f"no background process or job {process} here; fab status lists them",
                       name="logs", report=False)  # fmt: skip
            out = h.run(h.shell(["background.sh"], "bg_tail", process, manager, lines))
            h.result.data = {"logs": out}
            h.step(_show, out, name="logs", report=False)
            return
        app_files, root_files = (" ".join(files) for files in log_files(h.layout, app_logs, nginx_logs))
        if follow:
            h.stream(h.shell(["logs.sh"], "follow_logs", lines, app_files, root_files))
            return
        journal = "yes" if app_logs else "no"
        out = h.run(h.shell(["logs.sh"], "show_logs", lines, journal, app_files, root_files))  # one round trip
        h.result.data = {"logs": out}
        h.step(_show, out, name="logs", report=False)

    return show


def _show(h: HostRun, out: str) -> Steps:
    if out.strip():
        yield Say(out.rstrip())


def steps_table(steps: dict[str, Step]) -> list[str]:
    """fab steps: a line per registered step, key, name and what it makes true."""
    width = max(len(key) for key in steps) + 2
    named = 30  # a longer name pushes its line's summary along
    return [f"{key:<{width}}{s.name + '  ':<{named}}{s.summary}" for key, s in steps.items()]
