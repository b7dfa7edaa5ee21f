"""The rolling-deploy policy: app hosts behind load balancers change batch by batch,
each out of the upstream while it changes, and the upstream ends up holding exactly
the app hosts that answer their health check."""

from __future__ import annotations

import dataclasses

from invoke import Context

from deploy import plans
from deploy.cli import Run
from deploy.invocation import fail_if_any, run_reported, session_of
from deploy.release import Release
from deploy.results import HostResult
from deploy.runner import Plan
from deploy.settings import Settings


def rolling(c: Context, task: str, plan: Plan, settings: Settings, run: Run) -> bool:
    """Deploy (or roll back) app hosts behind load balancers batch by batch, each out of
    the upstream while it changes; then every app host that answers its health check is
    in the upstream and every one that does not is out, whatever an earlier run left.
    Returns False when this is not a rolling run (-H hosts, no lb, batch_size 0), so the
    caller runs on all hosts at once."""
    lbs = [m.host for m in settings.inventory.with_role("lb")]
    apps = [m.host for m in settings.inventory.with_role("app")]
    if c.config.get("fabstack_hosts") or not lbs or not settings.batch_size:
        return False
    session = session_of(c)
    # Look ahead (one facts read per host): only hosts whose run would change roll.
    preview = session.run_task(apps, plan, settings, c.config, dataclasses.replace(run, dry_run=True), quiet=True)
    fail_if_any(preview)
    changing = [r.host for r in preview if r.count("changed")]
    session.console.say(
        "rolling", f"{len(changing)} of {len(apps)} app host(s) to change, {settings.batch_size} at a time"
    )

    def phase(hosts: list[str], plan: Plan, name: str) -> list:
        return run_reported(c, task, hosts, plan, settings, run, phase=name)

    every = len(set(apps) | set(lbs))
    for start in range(0, len(changing), settings.batch_size):
        batch = changing[start : start + settings.batch_size]
        fail_if_any(phase(lbs, plans.lb_out(frozenset(batch)), "lb out"), out_of=every)
        fail_if_any(
            phase(batch, plan, "batch"),
            "; rollout stopped: the load balancers keep the failed host(s) out, the rest stay as they were",
            out_of=every,
        )
        fail_if_any(phase(lbs, plans.lb_out(frozenset()), "lb in"), out_of=every)
    if not changing:  # the look-ahead already read every host: report it, do not read again
        session.console.phase_done(preview)
        if run.verbose:
            session.console.summary(preview)
        session.console.record(task, settings.app_name, preview, dry_run=False, phase="look-ahead")
    health = phase(apps, plans.serving, "health")
    unhealthy = frozenset(r.host for r in health if r.failed)
    fail_if_any(phase(lbs, plans.lb_out(unhealthy), "upstream"), out_of=every)
    fail_if_any(health, "; the load balancers keep them out until they answer", out_of=every)
    return True


# the steps of a provision that give the app a new master (or stop it for a switch of
# process manager): a request in flight on that host then fails unless the lbs sent it
# elsewhere first
RESTARTS = ("gunicorn running", "process manager")


def rolling_restarts(
    c: Context, settings: Settings, run: Run, hosts: list[str], name: str
) -> tuple[list[str], list[HostResult]]:
    """provision's last phase behind load balancers: the app hosts whose provision would
    restart or reload gunicorn (a new environment, config or virtualenv) go batch by
    batch, each out of the upstream while it changes, after the other hosts; returns
    the hosts still to provision at once (all of them when nothing restarts, or this is
    not a rolling run: -H hosts, no lb, batch_size 0), and the results of those it did."""
    lbs = [m.host for m in settings.inventory.with_role("lb")]
    apps = [h for h in hosts if "app" in settings.inventory.roles_of(h)]
    if c.config.get("fabstack_hosts") or not lbs or not settings.batch_size or not apps:
        return hosts, []
    session = session_of(c)
    preview = session.run_task(
        apps, plans.provision, settings, c.config, dataclasses.replace(run, dry_run=True), quiet=True
    )
    # a host the look-ahead could not read goes with the others, where its failure is reported
    restarting = [
        r.host for r in preview if not r.failed and any(s.name in RESTARTS and s.status == "changed" for s in r.steps)
    ]
    if not restarting:
        return hosts, []
    every = len(set(hosts) | set(lbs))
    session.console.say(
        "rolling", f"{len(restarting)} of {len(apps)} app host(s) restart, {settings.batch_size} at a time"
    )
    others = [h for h in hosts if h not in restarting]
    # the others' failures (an unreachable host) are reported at the end, as in a provision
    # that does not roll: they stop no other host; a batch that fails stops the rollout
    done = run_reported(c, "provision", others, plans.provision, settings, run, phase=name) if others else []
    provisioned = list(done)
    for start in range(0, len(restarting), settings.batch_size):
        batch = restarting[start : start + settings.batch_size]
        for hosts_now, plan, phase in ((lbs, plans.lb_out(frozenset(batch)), "lb out"),
                                       (batch, plans.provision, "batch"), (lbs, plans.lb_out(frozenset()), "lb in")):  # fmt: skip
            results = run_reported(c, "provision", hosts_now, plan, settings, run, phase=phase)
            fail_if_any(results, out_of=every)
            provisioned += results if phase == "batch" else []
    fail_if_any(done, out_of=every)
    return [], provisioned


def migrate_once(c: Context, settings: Settings, release: Release, hosts: list[str], run: Run) -> None:
    """A deploy with a shared database: the release uploaded to every app host first
    (nothing switches), then the database migrated once, from the first of them, before
    any host serves the release. A failing migration stops the deploy there: every host
    stays on the release it serves."""
    apps = [h for h in hosts if "app" in settings.inventory.roles_of(h)]
    uploaded = run_reported(c, "deploy", apps, plans.deploy(release, upload_only=True), settings, run, "upload")
    fail_if_any(uploaded)
    if any(s.name == "release uploaded" and s.status == "changed" for r in uploaded for s in r.steps):
        fail_if_any(
            run_reported(c, "deploy", apps[:1], plans.migrate(release), settings, run, "migrate"),
            "; the migration failed: no host switched, every host serves the release it served",
        )
