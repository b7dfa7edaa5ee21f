"""Rendering: every file fabstack writes to a host comes from a Jinja2 template.

A user's templates_dir is searched first, so a file of the same name there replaces
ours; undefined variables are errors, never empty strings in a live config.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2
import jinja2.meta

from deploy.settings import TEMPLATES, SettingsError

OWN_TEMPLATES = TEMPLATES

# Every template fabstack renders, and the variables it is given: a user's template may
# use any of these and nothing else (checked before any host is contacted).
VARIABLES = {
    "gunicorn.conf.py.j2": (
        "app_name", "wsgi_module", "current", "bind", "workers", "worker_class", "threads", "worker_connections",
        "backlog", "timeout", "control_socket", "log_dir", "loglevel", "env",
    ),
    "nginx-site.conf.j2": (
        "app_name", "upstream", "servers", "listens", "allow", "server_name", "static_url", "static_root",
        "media_url", "media_root", "lb_idle_timeout", "app_idle_timeout", "tls", "acme",
    ),
    "nginx-lb.conf.j2": (
        "app_name", "upstream", "method_line", "servers", "keepalive", "listen_port", "default", "server_name",
        "lb_idle_timeout", "app_idle_timeout", "tls", "acme",
    ),
    # included by the two sites above (given their variables)
    "nginx-tls.conf.j2": ("tls",),
    "nginx-acme.conf.j2": ("acme",),
    "nginx-redirect.conf.j2": ("server_name", "acme", "tls"),
    "certbot-deploy-hook.sh.j2": ("app_name", "lineage"),
    "background.service.j2": ("app_name", "process", "current", "env_file", "exec_start", "stop_timeout", "unit"),
    "job.service.j2": ("app_name", "job", "current", "env_file", "exec_start", "unit"),
    "job.timer.j2": ("app_name", "job", "cron", "calendar", "unit"),
    "cron.j2": ("app_name", "runner", "jobs", "log_dir"),
    "run-job.sh.j2": ("app_name", "run_dir", "current", "env_file"),
    "background-program.conf.j2": (
        "app_name", "process", "program", "command", "current", "count", "environment", "stop_timeout",
    ),
    "certbot-service.conf.j2": ("app_name", "ca_bundle"),
    "fabstack_settings.py.j2": ("project_settings", "static_dir"),
    "postgresql.conf.j2": ("listen", "port"),
    "pg_hba.conf.j2": ("rules", "local_rules"),
    "redis.conf.j2": ("app_name", "address", "port"),
    "claims.j2": ("server_name", "bind", "default_server", "serves", "firewall", "owns"),
    "unattended-upgrades.conf.j2": ("reboot",),
    "apt-proxy.conf.j2": ("proxy",),
    "auto-upgrades.conf.j2": ("enabled",),
    "logrotate.conf.j2": ("app_name", "runner", "app_logs", "nginx_logs", "keep", "max_size", "reopen"),
    "logrotate.service.j2": ("app_name", "unit", "conf", "state"),
    "logrotate.timer.j2": ("app_name",),
    "logrotate.cron.j2": ("app_name", "conf", "state"),
    "firewall.nft.j2": ("app_name", "unit", "table", "by_role", "services"),
    "firewall.service.j2": ("app_name", "file", "table", "before"),
    "db-backup.service.j2": ("app_name", "backups", "keep", "port", "db_name"),
    "db-backup.timer.j2": ("app_name", "unit"),
    "gunicorn.service.j2": ("app_name", "venv", "config", "log_dir", "stop_timeout", "unit", "program", "stdout_log"),
    "supervisor-program.conf.j2": (
        "app_name", "venv", "config", "log_dir", "stop_timeout", "unit", "program", "stdout_log",
    ),
}  # fmt: skip


def check(templates_dir: str = "", every: bool = False) -> None:
    """Parse the templates of templates_dir (every: ours too) and refuse variables fabstack
    does not pass, so a broken user template stops the run before any host is contacted.

    Only a user's own files are read at each run: ours are checked by the test suite, and
    parsing all of them at every task had grown to a third of a no-op run (~0.18 s a task).
    """
    jinja = environment(templates_dir)
    for name, known in VARIABLES.items():
        if not every and not (templates_dir and (Path(templates_dir) / name).is_file()):
            continue
        try:
            assert jinja.loader is not None  # environment() always gives one
            source, filename, _ = jinja.loader.get_source(jinja, name)
            used = jinja2.meta.find_undeclared_variables(jinja.parse(source, name, filename))
        except jinja2.TemplateSyntaxError as exc:
            raise SettingsError(
                f"template {exc.filename or name} line {exc.lineno}: {exc.message}; fix the template"
            ) from None
        unknown = sorted(used - set(known))
        if unknown:
            raise SettingsError(
                f"template {filename}: {{{{ {unknown[0]} }}}} is not a variable fabstack passes; "
                f"use one of: {', '.join(known)}"
            )


@cache
def environment(templates_dir: str = "") -> jinja2.Environment:
    paths = [templates_dir, str(OWN_TEMPLATES)] if templates_dir else [str(OWN_TEMPLATES)]
    if templates_dir and not Path(templates_dir).is_dir():
        raise SettingsError(f"setting templates_dir={templates_dir!r}: no such directory")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(jinja: jinja2.Environment, name: str, **context) -> str:
    """Render template name; any template error becomes a one-line SettingsError."""
    assert set(context) == set(VARIABLES[name]), f"{name}: pass exactly {VARIABLES[name]}"
    try:
        return jinja.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise SettingsError(
            f"template {exc.filename or name} line {exc.lineno}: {exc.message}; fix the template"
        ) from None
    except jinja2.TemplateError as exc:
        raise SettingsError(f"template {name}: {exc}; fix the template or the setting it uses") from None
