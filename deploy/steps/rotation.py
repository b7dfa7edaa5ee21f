"""Log rotation: every log fabstack makes a host write (gunicorn's, nginx's of the app's
sites, nohup processes' and jobs') rotated by fabstack's own logrotate config, checked
every hour (a systemd timer, or cron where systemd does not run), so a size cap holds
within the hour and not only once a day as the distribution's daily run would."""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Command, Steps, step
from deploy.render import environment, render
from deploy.steps.files import ensure_file
from deploy.steps.gunicorn import wanted_manager

SIGNAL = '[ "${pid:-0}" -gt 0 ] 2> /dev/null && kill -USR1 "$pid" || true'


def reopen(h: HostContext) -> str:
    """The shell line that makes gunicorn reopen its logs (USR1 to its master), found
    through the process manager that runs it."""
    layout, manager = h.layout, wanted_manager(h)
    if manager == "systemd":
        find = f"pid=$(systemctl show -p MainPID --value {layout.unit})"
    elif manager == "supervisor":
        find = f"pid=$(supervisorctl pid {layout.program})"
    else:
        find = f"pid=$(cat {layout.master_record} 2> /dev/null)"
    return f"{find}; {SIGNAL}"


@step("log rotation")
def logs_rotated(h: HostContext) -> Steps:
    """fabstack's logrotate config, and what runs it every hour."""
    s, layout = h.settings, h.layout
    jinja = environment(s.templates_dir)
    systemd = h.facts.pid1 == "systemd"
    runner = f"{layout.logrotate_unit}.timer" if systemd else layout.logrotate_cron
    conf = render(
        jinja, "logrotate.conf.j2", app_name=s.app_name, runner=runner, app_logs=layout.logs if h.is_app else "",
        nginx_logs=layout.nginx_logs, keep=s.log_keep, max_size=s.log_max_size, reopen=reopen(h),
        audit_log=layout.audit_log,
    )  # fmt: skip
    yield from ensure_file(h, layout.logrotate_conf, conf)
    values = {"app_name": s.app_name, "conf": layout.logrotate_conf, "state": layout.logrotate_state}
    if systemd:
        service_file, timer_file = layout.logrotate_files()
        service = render(jinja, "logrotate.service.j2", unit=layout.logrotate_unit, **values)
        timer = render(jinja, "logrotate.timer.j2", app_name=s.app_name)
        changed = yield from ensure_file(h, service_file, service)
        changed = (yield from ensure_file(h, timer_file, timer)) or changed
        if changed or h.facts.logrotate_timer != "active":
            yield Command(h.shell([], "timers_enabled", f"{layout.logrotate_unit}.timer"))
        return
    yield from ensure_file(h, layout.logrotate_cron, render(jinja, "logrotate.cron.j2", **values))
    if not h.facts.cron_running:
        yield Command(h.shell([], "cron_started"))
        h.facts.cron_running = True
