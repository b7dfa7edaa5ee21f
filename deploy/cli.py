"""Glue between fab tasks and the library: settings, hosts, running, exit codes."""

from __future__ import annotations

import sys

from invoke import Context, Exit

from deploy import runner
from deploy import settings as settings_mod
from deploy.connection import check_host_string
from deploy.settings import Settings, SettingsError


def load_settings(path: str | None, **overrides) -> Settings:
    try:
        return settings_mod.load(path, overrides)
    except SettingsError as exc:
        raise Exit(f"fabstack: {exc}", code=2) from None


def hosts_of(c: Context) -> list[str]:
    raw = c.config.get("fabstack_hosts") or ""
    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    if not hosts:
        raise Exit("fabstack: no hosts given; use fab -H root@HOST TASK (several: -H a,b,c)", code=2)
    for host in hosts:
        try:
            check_host_string(host)
        except ValueError as exc:
            raise Exit(f"fabstack: {exc}", code=2) from None
    return hosts


def execute(c: Context, plan: runner.Plan, settings: Settings, dry_run: bool = False, verbose: bool = False) -> None:
    """Run plan on the task's hosts; exit non-zero naming the hosts that failed."""
    hosts = hosts_of(c)
    results = runner.run_task(hosts, plan, settings, c.config, dry_run=dry_run, verbose=verbose)
    failed = [r.host for r in results if r.failed]
    sys.stdout.flush()
    if failed:
        raise Exit(f"fabstack: failed on {len(failed)} of {len(results)} host(s): {', '.join(failed)}", code=1)
