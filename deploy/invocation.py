"""What one fab task does around its plan: settings and hosts checked before any host
is touched (exit 2), the plan run on every host, the results printed and recorded, and
an exit code that names the hosts that failed (exit 1)."""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import hashlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fabric import Connection
from invoke import Context, Exit

from deploy import checks, hooks, lock, manifest, plans, render
from deploy import settings as settings_mod
from deploy.cli import Run
from deploy.connection import ConnectError, check_host_string
from deploy.console import Console
from deploy.layout import Layout
from deploy.results import HostResult
from deploy.runner import Plan, Session
from deploy.settings import REDIS_URL, Settings, SettingsError
from deploy.settings.inventory import ROLES
from deploy.settings.validators import CONTROL
from deploy.steps import database, server
from deploy.steps.server import FALLBACK

Report = Callable[[Console, list[HostResult]], None]
SESSION = "fabstack_session"  # the invoke config key the executor puts the run's Session under


def set_signals() -> None:
    """`fab status | head` ends quietly, like any Unix tool, not with a traceback; and
    `kill -USR1 PID` prints every thread's stack to stderr, fab running on: how a run
    that hangs (a host that stopped answering) is found without stopping it."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def session_of(c: Context) -> Session:
    """The run's session (deploy.executor makes one per fab invocation)."""
    session = c.config.get(SESSION)
    if not isinstance(session, Session):  # a task called without fabstack's executor
        session = Session()
        c.config[SESSION] = session  # type: ignore[assignment]  # invoke's config holds any value
    return session


def load_apps(c: Context, path: str | None, app: str = "", **overrides) -> list[Settings]:
    """Each app's settings (one, or the file's `apps:`; only --app's with --app), validated,
    with every template parsed: bad input stops here (exit 2). A secret's command runs
    once per fab run (the session keeps its output for the run's next task)."""
    try:
        apps = settings_mod.load_apps(path, overrides, app, session_of(c).secret_commands)
        manifest.refuse_clashes(apps)
        for templates_dir in dict.fromkeys(s.templates_dir for s in apps):
            render.check(templates_dir)
        return apps
    except SettingsError as exc:
        raise Exit(f"fabstack: {exc}", code=2) from None


def one_app(apps: list[Settings], task: str) -> Settings:
    """The one app a task works on (manage, db.restore, remove): several need --app."""
    if len(apps) > 1:
        names = ", ".join(s.app_name for s in apps)
        raise Exit(f"fabstack: fab {task} works on one app; the settings have {names}: add --app NAME", code=2)
    return apps[0]


def on_limited_hosts(c: Context, apps: list[Settings], limit: str) -> list[Settings]:
    """The apps whose inventory has a host --limit names (apps of one file may have
    inventories of their own); all of them when none has, for hosts_of to say so."""
    wanted = {x.strip() for x in limit.split(",") if x.strip()}
    if len(apps) < 2 or not wanted or c.config.get("fabstack_hosts"):
        return apps
    kept = [s for s in apps if any({m.host, m.address} & wanted for m in s.inventory.members)]
    return kept or apps


def each_app(
    c: Context, apps: list[Settings], run: Callable[[Settings], object], limit: str = "", changes: Changes | None = None
) -> None:  # fmt: skip
    """run for each app, one after the other (with --limit, the apps on those hosts).
    With several, each app's part is headed by its name and has its own summary; the
    first app that fails stops the task (exit 1, naming it and the apps not run), so
    nothing is done on top of a failure. A task that changes hosts (changes) runs each
    app's part holding its lock, and leaves a line in its audit log."""
    apps = on_limited_hosts(c, apps, limit)
    if changes is not None:
        guarded, run = run, lambda s: guard(c, s, changes, guarded)
    if len(apps) == 1:
        run(apps[0])
        return
    console = session_of(c).console
    for index, settings in enumerate(apps):
        console.task_summary()
        console.write(console.paint(f"app {settings.app_name}", "bold"))
        try:
            run(settings)
        except Exit as exc:
            if not exc.code:
                raise
            left = [s.app_name for s in apps[index + 1 :]]
            rest = f"; not run for {', '.join(left)}" if left else ""
            message = str(exc.message or "").removeprefix("fabstack: ")
            raise Exit(f"fabstack: app {settings.app_name}: {message}{rest}", code=exc.code) from None
        finally:
            console.task_summary()


@dataclasses.dataclass(frozen=True)
class Changes:
    """A task that changes hosts, as its lock and audit line name it: the task's name,
    the run's flags (a dry run changes nothing: no lock), and the release it puts in
    place, when it knows it before it starts (deploy's)."""

    task: str
    run: Run
    release: Callable[[Settings], str] | None = None


def guard(c: Context, settings: Settings, changes: Changes, body: Callable[[Settings], object]) -> None:
    """body for one app, holding the app's lock (deploy.lock), between the hooks the
    settings give (deploy.hooks); then the audit line of what body changed, sent with the
    lock's release. A dry run takes no lock and runs no hook."""
    if changes.run.dry_run:
        body(settings)
        return
    session = session_of(c)
    hold = session.holds.get(settings.app_name)
    if hold is None:
        hold = take_lock(c, settings, changes)
        session.holds[settings.app_name] = hold
    task = changes.task
    facts = {
        "app": settings.app_name, "task": task, "who": lock.who(),
        "hosts": ",".join(hosts_of(c, settings, changes.run.role, changes.run.limit)),
        "release": changes.release(settings) if changes.release else "",
    }  # fmt: skip
    started = len(session.console.runs)

    def ours() -> list[dict]:  # the --json records of this app's part so far (dry look-aheads left out)
        return [r for r in session.console.runs[started:] if r["app"] == settings.app_name and not r["dry_run"]]

    try:
        hook(settings, f"pre_{task}", facts, "no host was changed")
        body(settings)
    except Exit as exc:
        error = str(exc.message or "").removeprefix("fabstack: ") if exc.code else ""
        if error:
            with contextlib.suppress(Exit):  # reported; the run's own failure is what fab exits with
                hook(settings, "on_failure", {**facts, **moved(ours()), "result": "failed", "error": error}, "")
        raise
    finally:
        line = lock.audit_line(task, ours())
        if line:
            hold.audit.append(line)
    after = {**facts, **moved(ours()), "result": "ok"}
    hook(settings, f"post_{task}", after, f"{task} is done on its hosts; nothing is rolled back")


def moved(runs: list[dict]) -> dict[str, str]:
    """The release the runs put in place and the one before it (hook facts), if any."""
    for r in runs:
        for h in r["hosts"]:
            if "release" in h["data"]:
                return {"release": h["data"]["release"], "previous_release": h["data"].get("previous", "")}
    return {}


def hook(settings: Settings, name: str, facts: dict[str, str], after: str) -> None:
    """The hook name, when the settings give one: exit 1 when it fails, saying `after`."""
    if name not in settings.hooks:
        return
    try:
        hooks.run(settings, name, facts)
    except hooks.HookFailed as failed:
        raise Exit(f"fabstack: {failed}{'; ' + after if after else ''}", code=1) from None
    except OSError as exc:
        raise Exit(f"fabstack: the {name} hook {settings.hooks[name]} could not run: {exc.strerror}", code=1) from None


def take_lock(c: Context, settings: Settings, changes: Changes) -> lock.Hold:
    """The app's lock for this run: exit 1 naming who holds it, or why it cannot be had."""
    host, conn = lock_connection(c, settings)
    session = session_of(c)
    release = changes.release(settings) if changes.release else ""
    try:
        hold = lock.take(conn, settings, changes.task, release)
    except lock.LockBusy as busy:
        raise Exit(
            f"fabstack: app {settings.app_name} is locked on {host} by {busy.holder.describe()}; "
            f"{'fab unlock releases it' if busy.holder.fields.get('state') == 'manual' else 'try again when that run ends'}",
            code=1,
        ) from None
    except lock.SudoRejected as exc:  # said as a host's failure is: the run's output names it
        session.console.say(host, f"failed: {exc}")
        raise Exit(f"fabstack: could not take app {settings.app_name}'s deploy lock on {host}: {exc}", code=1) from None
    except (lock.LockFailed, OSError) as exc:
        raise Exit(f"fabstack: could not take app {settings.app_name}'s deploy lock on {host}: {exc}", code=1) from None
    if hold.left:
        session.console.write(
            f"fabstack: warning: took over app {settings.app_name}'s lock on {host}, left by "
            f"{hold.left.describe()}: that run ended without releasing it"
        )
    return hold


def lock_connection(c: Context, settings: Settings) -> tuple[str, Connection]:
    """The app's lock host and a connection to it (exit 1 when it cannot be reached)."""
    host = lock.lock_host(settings, hosts_of(c, settings))
    try:
        return host, session_of(c).connection(host, c.config, settings)
    except (ConnectError, OSError) as exc:
        raise Exit(
            f"fabstack: could not reach {host}, where app {settings.app_name}'s lock lives: {exc}", code=1
        ) from None


def lock_by_hand(c: Context, settings: Settings, message: str) -> None:
    """fab lock: every run that changes the app's hosts refused until fab unlock."""
    host, conn = lock_connection(c, settings)
    try:
        left = lock.hold_by_hand(conn, settings, message)
    except lock.LockBusy as busy:
        raise Exit(
            f"fabstack: app {settings.app_name} is locked already on {host} by {busy.holder.describe()}", code=1
        ) from None
    except lock.LockFailed as exc:
        raise Exit(f"fabstack: could not lock app {settings.app_name} on {host}: {exc}", code=1) from None
    console = session_of(c).console
    if left:
        console.write(
            f"fabstack: warning: took over a lock left by {left.describe()}: that run ended without releasing it"
        )
    console.write(f"app {settings.app_name} locked on {host}: runs that change its hosts are refused until fab unlock")


def unlock(c: Context, settings: Settings) -> None:
    """fab unlock: a lock held by hand, or left by a run that was killed, let go."""
    host, conn = lock_connection(c, settings)
    try:
        was = lock.unlock(conn, settings)
    except lock.LockBusy as busy:
        raise Exit(
            f"fabstack: app {settings.app_name}'s lock on {host} is held by a running fab, {busy.holder.describe()}; "
            "it is let go when that run ends",
            code=1,
        ) from None
    except lock.LockFailed as exc:
        raise Exit(f"fabstack: could not unlock app {settings.app_name} on {host}: {exc}", code=1) from None
    said = f"unlocked on {host} (held by {was.describe()})" if was else f"was not locked on {host}"
    session_of(c).console.write(f"app {settings.app_name} {said}")


def show_audit(c: Context, settings: Settings, lines: int) -> None:
    """fab audit: the last lines of the app's audit log, from its lock host."""
    host, conn = lock_connection(c, settings)
    try:
        found = lock.audit_tail(conn, settings, lines)
    except lock.LockFailed as exc:
        raise Exit(f"fabstack: could not read app {settings.app_name}'s audit log on {host}: {exc}", code=1) from None
    console = session_of(c).console
    for line in found or [f"no runs recorded yet in {host}:{Layout.of(settings).audit_log}"]:
        console.write(line)


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
            raise Exit(f"fabstack: --role {role!r} is not a role; use app, lb or db", code=2)
        hosts = [m.host for m in settings.inventory.members if not role or role in m.roles]
        wanted = {x.strip() for x in limit.split(",") if x.strip()}
        if wanted:
            known = {m.host for m in settings.inventory.members} | {m.address for m in settings.inventory.members}
            if wanted - known:
                listed = ", ".join(m.host for m in settings.inventory.members)
                raise Exit(
                    f"fabstack: --limit {sorted(wanted - known)[0]!r} is not in the inventory; its hosts: {listed}",
                    code=2,
                )
            hosts = [m.host for m in settings.inventory.members if m.host in hosts and {m.host, m.address} & wanted]
    if not hosts:
        raise Exit(
            "fabstack: no hosts given; use fab -H root@HOST TASK (several: -H a,b,c) or list hosts in the settings",
            code=2,
        )
    return hosts


def fail_if_any(results: list[HostResult], why: str = "", out_of: int = 0) -> None:
    """Exit 1 naming the hosts that failed, if any did, out of the task's hosts (out_of,
    when a phase ran on some of them)."""
    failed = list(dict.fromkeys(r.host for r in results if r.failed))  # a host once, however many apps
    sys.stdout.flush()
    if failed:
        total = max(out_of, len({r.host for r in results}))
        raise Exit(f"fabstack: failed on {len(failed)} of {total} host(s): {', '.join(failed)}{why}", code=1)


def run_reported(
    c: Context, task: str, hosts: list[str], plan: Plan, settings: Settings, run: Run, phase: str = "",
    report: Report | None = None,
) -> list[HostResult]:  # fmt: skip
    """Run plan on hosts, print the report (default: the summary table), record the
    results for --json, and return them. One phase of several (phase given) is kept for
    the task's one summary at its end; its own table only with --verbose."""
    session = session_of(c)
    results = session.run_task(hosts, plan, settings, c.config, run)
    phased = bool(phase) or session.console.in_phases  # the last part of a task that ran phases too
    if phased:
        session.console.phase_done(results)
    if run.verbose or not phased:
        (report or Console.summary)(session.console, results)
    session.console.record(task, settings.app_name, results, run.dry_run, phase)
    return results


def execute(
    c: Context, task: str, plan: Plan, settings: Settings, run: Run, report: Report | None = None
) -> list[HostResult]:  # fmt: skip
    """Run plan on the task's hosts; exit non-zero naming the hosts that failed."""
    hosts = hosts_of(c, settings, run.role, run.limit)
    results = run_reported(c, task, hosts, plan, settings, run, report=report)
    fail_if_any(results)
    return results


def execute_in_one_report(
    c: Context, task: str, apps: list[Settings], plan: Plan, report: Report, run: Run
) -> list[HostResult]:  # fmt: skip
    """A read-only task over every app, reported once: status's table with a row per app
    per host (an app's part alone would hide the others' rows on the same host)."""
    results: list[HostResult] = []
    for settings in on_limited_hosts(c, apps, run.limit):
        hosts = hosts_of(c, settings, run.role, run.limit)
        results += run_reported(c, task, hosts, plan, settings, run, report=_report_later)
    order = {host: index for index, host in reversed(list(enumerate(r.host for r in results)))}
    results.sort(key=lambda r: order[r.host])  # each host's apps together, hosts in their order
    report(session_of(c).console, results)
    fail_if_any(results)
    return results


def _report_later(console: Console, results: list[HostResult]) -> None:
    """A report left to the caller (execute_in_one_report prints all apps' at once)."""


def run_manage(c: Context, settings: Settings, args: str, run: Run) -> None:
    """fab manage -- ARGS on the first app host (or the one -H names); exit with its code."""
    if not args.strip():
        raise Exit("fabstack: give manage.py's arguments after --, e.g. fab manage -- createsuperuser", code=2)
    hosts = hosts_of(c, settings, role="app")
    if len(hosts) > 1 and c.config.get("fabstack_hosts"):
        raise Exit(f"fabstack: fab manage runs on one host; -H gave {len(hosts)}", code=2)
    session = session_of(c)
    (result,) = session.run_task(hosts[:1], plans.manage(args, sys.stdin.isatty()), settings, c.config, run)
    session.console.record("manage", settings.app_name, [result], dry_run=False)
    if result.failed:
        session.console.brief([result])
        fail_if_any([result])
    code = result.data.get("exit_code", 1)
    if code:
        raise Exit(code=code)


def say_notes(c: Context, settings: Settings) -> None:
    """The lines provision and deploy say before they start: the settings module fabstack
    chose among the project's, SQLite on a farm."""
    for line in (settings.project_note, checks.sqlite_on_a_farm(settings)):
        if line:
            session_of(c).console.write(line)


# provision's last phase behind load balancers (deploy.rollout.rolling_restarts): given
# the hosts and the phase's name, it provisions those that roll and returns the rest,
# and the results of those it provisioned
Roll = Callable[[Settings, list[str], str], tuple[list[str], list[HostResult]]]


def provision(c: Context, settings: Settings, run: Run, roll: Roll | None = None) -> None:
    """fab provision, in phases where one host makes what others need: a db host first
    (PostgreSQL, the app's role, its password made there; the password is then read into
    memory and uploaded to each app host over SFTP); with an ACME certificate and several
    lbs, the first lb next (certbot there), its certificate then copied to the others."""
    hosts = hosts_of(c, settings, run.role, run.limit)
    dry_run = run.dry_run
    say_notes(c, settings)

    def phase(on: list[str], plan: Plan, with_settings: Settings, name: str, dry: bool = dry_run) -> list[HostResult]:
        done = run_reported(c, "provision", on, plan, with_settings, dataclasses.replace(run, dry_run=dry), name)
        fail_if_any(done, out_of=len(hosts))  # a phase's failure counts the task's hosts
        return done

    dbs = [m.host for m in settings.inventory.with_role("db")]
    first = [h for h in hosts if h in dbs] if any(h not in dbs for h in hosts) else []
    if first:
        phase(first, plans.provision, settings, "db")
    rest = [h for h in hosts if h not in first]
    if dbs and not dry_run and any(h not in dbs for h in rest):  # a dry run may have nothing to read yet
        settings = with_shared_secrets(c, settings, dbs[0], run)
    keeper = farm_key_host(settings)
    if keeper and "SECRET_KEY" not in settings.secret_values and any(h in app_hosts(settings) for h in rest):
        settings = with_farm_key(c, settings, keeper, run)
    name = "app" if first else ""
    issuer, copies = acme_lbs(settings)
    here = [h for h in copies if h in rest]
    if here:
        # the other lbs first, so the CA may knock on any of them (they pass the challenge
        # on to the first lb), then the first lb, then copies where they differ from its
        lbs = [*here, *([issuer] if issuer in rest else [])]
        done = phase(here, plans.provision, settings, "lb")
        if issuer in rest:
            done += phase([issuer], plans.provision, settings, "tls")
        served = {r.host: r.data.get("certificate_sha256", "") for r in done}
        stale = [h for h in here if not served.get(issuer) or served[h] != served[issuer]]
        if stale and not dry_run:
            phase(stale, plans.certificate_copy, with_certificate_copy(c, settings, issuer, run), "copy", False)
        rest, name = [h for h in rest if h not in lbs], "app"
    provisioned: list[HostResult] = []
    if rest and roll and not dry_run:
        rest, provisioned = roll(settings, rest, name)
    if rest:
        provisioned += phase(rest, plans.provision, settings, name)
    unmounted = [r.host for r in provisioned if r.data.get("media_mounted") is False]
    if unmounted:  # the farm's shared media: the volume, once glusterd runs on every app host
        phase(app_hosts(settings)[:1], plans.media_volume, settings, "media volume")
        phase(unmounted, plans.media_mounted, settings, "media mount")


def with_shared_secrets(c: Context, settings: Settings, db: str, run: Run) -> Settings:
    """settings holding what the db host made for the app hosts: the database password,
    Redis's URL (its address made the db host's private one)."""
    read = _read_secret(c, settings, db, plans.shared_secrets, "the database password and Redis URL", run)
    values = dict(line.split("=", 1) for line in read.splitlines() if "=" in line)
    if REDIS_URL in values:
        address = settings.inventory.with_role("db")[0].address
        values[REDIS_URL] = values[REDIS_URL].replace("@127.0.0.1:", f"@{address}:", 1)
    if any(not value for value in values.values()):
        raise Exit(f"fabstack: {db} has no database password or Redis URL yet; run fab provision on it first", code=1)
    return dataclasses.replace(settings, secret_values={**settings.secret_values, **values})


def app_hosts(settings: Settings) -> list[str]:
    return [m.host for m in settings.inventory.with_role("app")]


def farm_key_host(settings: Settings) -> str:
    """Where a farm keeps its one SECRET_KEY: its db host, else its first app host; ''
    with one app host, whose own key is the site's."""
    keepers = settings.inventory.with_role("db") or settings.inventory.with_role("app")
    return keepers[0].host if settings.farm else ""


def with_farm_key(c: Context, settings: Settings, keeper: str, run: Run) -> Settings:
    """settings holding the farm's one SECRET_KEY, made on keeper the first time (a dry
    run only reads it: before the first provision each host shows its own)."""
    read = _read_secret(c, settings, keeper, plans.farm_key(not run.dry_run), "the farm's secret key", run, run.dry_run)
    key, _, fallback = read.partition("\n")
    if not key:
        return settings
    keys = {"SECRET_KEY": key, **({FALLBACK: fallback.strip()} if fallback.strip() else {})}
    return dataclasses.replace(settings, secret_values={**settings.secret_values, **keys})


def with_farm_key_read(c: Context, settings: Settings, run: Run) -> Settings:
    """settings holding the farm's one SECRET_KEY as it is now, for fab check and status
    (read, never made); settings as they are for one app host, a key of your own, or a
    key host that cannot be read."""
    keeper = farm_key_host(settings)
    if not keeper or "SECRET_KEY" in settings.secret_values:
        return settings
    try:
        return with_farm_key(c, settings, keeper, dataclasses.replace(run, dry_run=True))
    except Exit:  # the key host down: its own row says so, and the app hosts' keys go uncompared
        return settings


def rotate_secret_key(c: Context, settings: Settings, run: Run) -> None:
    """fab secret.rotate: a new SECRET_KEY, the old one kept as Django's fallback so the
    sessions and links it signed stay good. A farm's on its key host, then every app
    host gets both; a single host's by its app user there. Each app reloads gracefully."""
    keeper = farm_key_host(settings)
    if not keeper:
        execute(c, "secret.rotate", plans.secret_key_applied(server.rotate_key), settings, run)
        return
    rotate = plans.one_step(server.rotate_farm_key)
    if run.dry_run:  # what a rotation would do: the key host's step, listed
        run_reported(c, "secret.rotate", [keeper], rotate, settings, run)
        return
    fail_if_any(run_reported(c, "secret.rotate", [keeper], rotate, settings, run, "key"))
    settings = with_farm_key(c, settings, keeper, run)
    execute(c, "secret.rotate", plans.secret_key_applied(server.secret_key), settings, run)


def refuse_rotation(settings: Settings) -> None:
    """A key the settings give is the user's to change: exit 2 before any host is asked."""
    if "SECRET_KEY" in settings.secret_values:
        raise Exit(
            "fabstack: SECRET_KEY comes from your secrets: setting; put a new value there (fab secret.rotate "
            "rotates the keys fabstack makes)",
            code=2,
        )


def refuse_renewal(settings: Settings) -> None:
    """tls.renew with no ACME certificate: exit 2 before any host is asked."""
    if settings.site_tls is None or not settings.site_tls.acme:
        raise Exit("fabstack: tls.renew renews ACME certificates; set tls.email (docs/https.md)", code=2)


def acme_lbs(settings: Settings) -> tuple[str, list[str]]:
    """With an ACME certificate and several lbs: the lb that asks certbot, and the others."""
    lbs = [m.host for m in settings.inventory.with_role("lb")]
    if not (settings.site_tls and settings.site_tls.acme and len(lbs) > 1):
        return "", []
    return lbs[0], lbs[1:]


def with_certificate_copy(c: Context, settings: Settings, issuer: str, run: Run) -> Settings:
    """settings holding the ACME host's certificate and key (read into memory only)."""
    pair = _read_secret(c, settings, issuer, plans.certificate_pair, "the certificate", run)
    chain, _, key = pair.partition("--- key ---\n")
    if "BEGIN" not in chain or "BEGIN" not in key or settings.site_tls is None:
        raise Exit(f"fabstack: {issuer} has no certificate to copy yet; run fab provision on it first", code=1)
    copy = dataclasses.replace(settings.site_tls, certificate=chain, key=key)
    return dataclasses.replace(settings, site_tls=copy)


def _read_secret(
    c: Context, settings: Settings, host: str, plan: Plan, what: str, run: Run, may_be_empty: bool = False
) -> str:
    """What plan reads on host into this run's memory (a real read, in a dry run too);
    exit 1 naming host when it cannot (or reads nothing, unless may_be_empty)."""
    session = session_of(c)
    (read,) = session.run_task([host], plan, settings, c.config, dataclasses.replace(run, dry_run=False), quiet=True)
    value = session.secrets.pop(host, "")
    if read.failed or not (value.strip() or may_be_empty):
        raise Exit(
            f"fabstack: could not read {what} on {host} ({read.error or 'none there'}); run fab provision on it first",
            code=1,
        )
    return value


def tls_renew(c: Context, settings: Settings, force: bool, run: Run) -> None:
    """fab tls.renew: certbot renews on the ACME host when due (--force: now); the other
    lbs get the new certificate. The task refused settings without ACME (refuse_renewal)."""
    issuer, copies = acme_lbs(settings)
    hosts = [issuer] if issuer else hosts_of(c, settings, role="lb")
    fail_if_any(run_reported(c, "tls.renew", hosts, plans.tls_renew(force), settings, run, phase="renew"))
    if copies and not run.dry_run:
        settings = with_certificate_copy(c, settings, issuer, run)
        fail_if_any(run_reported(c, "tls.renew", copies, plans.certificate_copy, settings, run, phase="copy"))


def refuse_removal(settings: Settings, yes: bool, purge: bool, run: Run) -> None:
    """fab remove without --yes (and not a dry run): exit 2 before any host is asked."""
    if not yes and not run.dry_run:
        what = "its code, units, site and records (its data and logs stay)" if not purge else "everything of it"
        raise Exit(
            f"fabstack: fab remove takes app {settings.app_name!r} off the host(s): {what}; add --yes to do it", code=2
        )


def remove(c: Context, settings: Settings, purge: bool, run: Run) -> None:
    """fab remove --app NAME --yes: the app off its hosts (refuse_removal asked for --yes)."""
    execute(c, "remove", plans.remove(purge), settings, run)


def data_host(c: Context, settings: Settings) -> str:
    """The host that holds the app's data: the db host, else the first app host (with
    SQLite and several app hosts, each holds its own; this is the first one's)."""
    dbs = settings.inventory.with_role("db")
    return dbs[0].host if dbs else hosts_of(c, settings, role="app")[0]


def backup(c: Context, settings: Settings, to: str, run: Run) -> Path:
    """fab db.backup: a copy of the app's data on its host and in `to` here, checked; and
    of its uploads (media), from the first app host, beside it (NAME.media.tar.gz)."""
    kind = "dump" if settings.postgresql else "sqlite3"
    name = f"{settings.app_name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{kind}"
    local = Path(to) / name
    host, uploads = data_host(c, settings), hosts_of(c, settings, role="app")[0]
    data = run_reported(
        c, "db.backup", [host], plans.one_step(database.backup, name, str(local)), settings, run, "data"
    )
    fail_if_any(data)
    media = plans.one_step(database.media_backup, media_of(name), media_of(str(local)))
    fail_if_any(run_reported(c, "db.backup", [uploads], media, settings, run, "media"))
    return local


def media_of(backup: str) -> str:
    """The uploads' backup beside the data's: APP-TIME.media.tar.gz."""
    return f"{backup.rsplit('.', 1)[0]}.media.tar.gz"


def refuse_message(message: str) -> None:
    """A --message (the lock's, the maintenance page's) that is not one plain line of at
    most 500 characters: exit 2 before any host is asked."""
    if CONTROL.search(message) or len(message) > 500:
        raise Exit("fabstack: --message is one line of at most 500 characters, with no control characters", code=2)


def refuse_restore(path: str, yes: bool) -> None:
    """db.restore of no file, or without --yes: exit 2 before any host is asked."""
    if not Path(path).is_file():
        raise Exit(f"fabstack: no backup file {path}; fab db.backups lists them", code=2)
    if not yes:
        raise Exit(f"fabstack: db.restore replaces the app's data with {path}; add --yes to do it", code=2)


def restore(c: Context, settings: Settings, path: str, run: Run) -> None:
    """fab db.restore FILE --yes: the app stopped on every app host, the data replaced
    (and the uploads, from the media backup beside FILE, when there is one), the app
    started again (also when the restore fails)."""
    apps = hosts_of(c, settings, role="app")
    media = media_of(path)
    fail_if_any(run_reported(c, "db.restore", apps, plans.app_control("stop"), settings, run, phase="stop"))
    try:
        restore = plans.one_step(database.restore, path)
        restored = run_reported(c, "db.restore", [data_host(c, settings)], restore, settings, run, phase="restore")
        if Path(media).is_file() and not any(r.failed for r in restored):
            uploads = plans.one_step(database.media_restore, media)
            restored += run_reported(c, "db.restore", apps[:1], uploads, settings, run, phase="media")
    finally:
        fail_if_any(run_reported(c, "db.restore", apps, plans.app_control("start"), settings, run, phase="start"))
    fail_if_any(restored)


def list_backups(c: Context, settings: Settings, where: str) -> None:
    """fab db.backups: the backups here, newest first, with size and sha256."""
    found = sorted(Path(where).glob(f"{settings.app_name}-*"), key=lambda p: p.name, reverse=True)
    console = session_of(c).console
    for path in found:
        if path.suffix in (".dump", ".sqlite3") or path.name.endswith(".media.tar.gz"):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            console.write(f"{path}  {path.stat().st_size} bytes  sha256 {sha}")
    if not found:
        console.write(f"no backups of {settings.app_name} in {where}; fab db.backup makes one")
