"""Glue between fab tasks and the library: settings, hosts, running, exit codes."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from invoke import Context, Exit

from deploy import output, plans, render, runner
from deploy import settings as settings_mod
from deploy.connection import check_host_string
from deploy.inventory import ROLES
from deploy.settings import Settings, SettingsError

# `fab status | head` should end quietly, like any Unix tool, not with a traceback.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def load_settings(path: str | None, **overrides) -> Settings:
    """Settings, validated, with every template parsed: bad input stops here (exit 2)."""
    try:
        settings = settings_mod.load(path, overrides)
        render.check(settings.templates_dir)
        return settings
    except SettingsError as exc:
        raise Exit(f"fabstack: {exc}", code=2) from None


def hosts_of(c: Context, settings: Settings, role: str = "", limit: str = "") -> list[str]:
    """-H hosts if given, else the inventory's, narrowed by --role and --limit."""
    raw = c.config.get("fabstack_hosts") or ""
    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    for host in hosts:
        try:
            check_host_string(host)
        except ValueError as exc:
            raise Exit(f"fabstack: {exc}", code=2) from None
    if not hosts:
        if role and role not in ROLES:
            raise Exit(f"fabstack: --role {role!r} is not a role; use app or lb", code=2)
        hosts = [m.host for m in settings.inventory.members if not role or role in m.roles]
        wanted = {x.strip() for x in limit.split(",") if x.strip()}
        if wanted:
            known = {m.host for m in settings.inventory.members} | {m.address for m in settings.inventory.members}
            if wanted - known:
                raise Exit(f"fabstack: --limit {sorted(wanted - known)[0]!r} is not in the inventory", code=2)
            hosts = [m.host for m in settings.inventory.members if m.host in hosts and {m.host, m.address} & wanted]
    if not hosts:
        raise Exit(
            "fabstack: no hosts given; use fab -H root@HOST TASK (several: -H a,b,c) or list hosts in the settings",
            code=2,
        )
    return hosts


def _fail(results: list[runner.HostResult], why: str = "") -> None:
    failed = [r.host for r in results if r.failed]
    sys.stdout.flush()
    if failed:
        raise Exit(f"fabstack: failed on {len(failed)} of {len(results)} host(s): {', '.join(failed)}{why}", code=1)


def rolling(c: Context, task: str, plan: runner.Plan, settings: Settings, verbose: bool = False) -> bool:
    """Deploy (or roll back) app hosts behind load balancers batch by batch, each out of
    the upstream while it changes; then every app host that answers its health check is
    in the upstream and every one that does not is out, whatever an earlier run left.
    Returns False when this is not a rolling run (-H hosts, no lb, batch_size 0), so the
    caller runs on all hosts at once."""
    lbs = [m.host for m in settings.inventory.with_role("lb")]
    apps = [m.host for m in settings.inventory.with_role("app")]
    if c.config.get("fabstack_hosts") or not lbs or not settings.batch_size:
        return False
    # Look ahead (one facts read per host): only hosts whose run would change roll.
    preview = runner.run_task(task, apps, plan, settings, c.config, dry_run=True, quiet=True)
    _fail(preview)
    changing = [r.host for r in preview if r.count("changed")]
    runner.say("rolling", f"{len(changing)} of {len(apps)} app host(s) to change, {settings.batch_size} at a time")
    for start in range(0, len(changing), settings.batch_size):
        batch = changing[start : start + settings.batch_size]
        out, back = plans.lb_out(frozenset(batch)), plans.lb_out(frozenset())
        _fail(runner.run_task(task, lbs, out, settings, c.config, verbose=verbose, phase="lb out"))
        results = runner.run_task(task, batch, plan, settings, c.config, verbose=verbose, phase="batch")
        _fail(results, "; rollout stopped: the load balancers keep the failed host(s) out, the rest stay as they were")
        _fail(runner.run_task(task, lbs, back, settings, c.config, verbose=verbose, phase="lb in"))
    if not changing:  # the look-ahead already read every host: report it, do not read again
        output.summary(preview)
        output.record(task, preview, dry_run=False, phase="look-ahead")
    health = runner.run_task(task, apps, plans.serving, settings, c.config, verbose=verbose, phase="health")
    unhealthy = frozenset(r.host for r in health if r.failed)
    _fail(runner.run_task(task, lbs, plans.lb_out(unhealthy), settings, c.config, verbose=verbose, phase="upstream"))
    _fail(health, "; the load balancers keep them out until they answer")
    return True


def execute(
    c: Context, task: str, plan: runner.Plan, settings: Settings, dry_run: bool = False, verbose: bool = False,
    role: str = "", limit: str = "", report: Callable[[list[runner.HostResult]], None] | None = None,
) -> list[runner.HostResult]:  # fmt: skip
    """Run plan on the task's hosts; exit non-zero naming the hosts that failed."""
    hosts = hosts_of(c, settings, role, limit)
    results = runner.run_task(task, hosts, plan, settings, c.config, dry_run=dry_run, verbose=verbose, report=report)
    _fail(results)
    return results
