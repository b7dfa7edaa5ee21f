"""Settings: one YAML file, defaults, and validation that runs before any host is touched.

Every key is declared once in SCHEMA, with its type, default and meaning; docs/settings.md
is generated from it (a test fails when they differ), so the reference cannot drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import background, certificates
from deploy.background import BackgroundError, Job, Process
from deploy.certificates import Tls, TlsError
from deploy.ignore import LinkOutside, check_links
from deploy.inventory import METHODS, Inventory, InventoryError
from deploy.inventory import parse as parse_inventory

REPO = Path(__file__).resolve().parent.parent  # the checkout (docs/); an installed wheel has none
# templates/ ships inside the package (deploy/templates links to it in the checkout), so
# an installed wheel renders and deploys the sample without the checkout.
TEMPLATES = Path(__file__).parent / "templates"
SAMPLE_PROJECT = TEMPLATES / "sample"
GENERATED_SETTINGS = "fabstack_settings"
DB_PASSWORD = "DB_PASSWORD"  # the secret that holds the app's PostgreSQL password
REDIS_URL = "REDIS_URL"  # the secret that holds the app's Redis URL (redis: true)
WORKER_CLASSES = ("sync", "gevent", "gthread")
LOGLEVELS = ("debug", "info", "warning", "error", "critical")


class SettingsError(Exception):
    """Bad input: the message names the value and the fix, on one line."""


@dataclass(frozen=True)
class Key:
    name: str
    type: type | tuple
    default: Any
    help: str
    check: Callable[[Any], str] | None = None  # returns an error fix text, or ""


def _port(value: int) -> str:
    return "" if 1 <= value <= 65535 else "use a port from 1 to 65535"


def _at_least(low: int) -> Callable[[int], str]:
    return lambda value: "" if value >= low else f"use a number >= {low}"


def _workers(value: int | str) -> str:
    if value == "auto" or (isinstance(value, int) and value >= 1):
        return ""
    return "use a number >= 1, or auto (2 x the host's cores + 1)"


def _http_url(value: str) -> str:
    if value and not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:_-]+(:[0-9]{1,5})?/?", value):
        return f"{value!r} is not a proxy URL; use http://HOST:PORT"
    return ""


def _clock(value: str) -> str:
    if value and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        return f"{value!r} is not a time; use HH:MM (24 hours, the host's clock), e.g. 03:30"
    return ""


def _size(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[kMG]?", value):
        return f"{value!r} is not a size; use a number of bytes with k, M or G, e.g. 100M"
    return ""


def _one_of(*choices: str) -> Callable[[str], str]:
    return lambda value: "" if value in choices else f"use one of: {', '.join(choices)}"


def _networks(value: list) -> str:
    for item in value:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return f"{item!r} is not an address or network; use e.g. 203.0.113.7 or 203.0.113.0/24"
    return ""


def _unix_name(value: str) -> str:
    return (
        ""
        if re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value)
        else "use lowercase letters, digits, '-' or '_' (a Unix user name)"
    )


def _abs_path(value: str) -> str:
    return "" if value.startswith("/") and " " not in value else "use an absolute path without spaces"


def _worker_class(value: str) -> str:
    if value == "meinheld" or value.startswith("egg:meinheld"):
        return "meinheld is unmaintained since 2020 and does not install beside current gevent; use gevent"
    return _one_of(*WORKER_CLASSES)(value)


def _wsgi(value: str) -> str:
    ok = re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value)
    return "" if ok else "use module.path:callable, e.g. mysite.wsgi:application"


def _bind(value: str) -> str:
    if not value or value.startswith("unix:"):
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or _port(int(port)):
        return "use HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path"
    if host in ("0.0.0.0", "::", "[::]", "*"):
        return "gunicorn must be reachable only through nginx: bind to 127.0.0.1:PORT"
    return ""


def _server_name(value: str) -> str:
    return (
        "" if re.fullmatch(r"[\w.*~^$\\-]+( [\w.*~^$\\-]+)*", value) else "use domain names separated by spaces, or _"
    )


def _url_prefix(value: str) -> str:
    return "" if re.fullmatch(r"/[\w./-]*/", value) else "use a path that starts and ends with '/', e.g. /static/"


def _url_path(value: str) -> str:
    return "" if re.fullmatch(r"(/[\w./?=&-]*)?", value) else "use a path that starts with '/', e.g. /healthz"


def _lb_method(value: str) -> str:
    if value == "fair":
        return ("fair needs the third-party upstream_fair module, which Debian's and Ubuntu's nginx lack; "
                "least_conn is the built-in equivalent: use lb_method: least_conn")  # fmt: skip
    if value == "url_hash":
        return "url_hash is `hash $request_uri consistent` in today's nginx: use lb_method: hash"
    return "" if value in METHODS else f"use one of: {', '.join(METHODS)}"


def _requirement(value: str) -> str:
    return "" if re.fullmatch(r"[<>=!~,.\w* ]*", value) else "use a pip version specifier such as >=5.2,<6"


# What fabstack itself gives the app: the env setting may not replace it.
RESERVED_ENV = ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOWED_HOSTS", "DJANGO_DB_PATH", "DJANGO_MEDIA_ROOT",
                "DJANGO_MEDIA_URL", "DJANGO_STATIC_URL", "DJANGO_HTTPS", "DJANGO_HSTS_SECONDS", "FABSTACK_WORKER_CLASS",
                "PATH", "HOME")  # fmt: skip


def _pg_name(value: str) -> str:
    if value in ("postgres", "template0", "template1", "root"):
        return f"{value} is PostgreSQL's own; leave it empty (the app_name) or choose another"
    return "" if value == "" or re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value) else "use lowercase letters, digits and _"


def _env(value: dict) -> str:
    for name, item in value.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            return f"env name {name!r}: use letters, digits and _"
        if name in RESERVED_ENV or str(name).endswith("_FILE"):
            return f"env.{name}: fabstack sets it; choose another name"
        if not isinstance(item, str | int | float | bool) or "\n" in str(item) or "\0" in str(item):
            return f"env.{name}: use one line of text (a number or word is fine)"
    return ""


def _secrets(value: dict) -> str:
    for name, source in value.items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(name)):
            return f"secret name {name!r}: use UPPER_CASE letters, digits and _"
        if not isinstance(source, str) or not source.startswith(("env:", "file:")) or len(source) < 5:
            return f"secrets.{name}: use env:VARIABLE or file:PATH (on the machine running fab)"
    return ""


SCHEMA: tuple[Key, ...] = (
    Key("app_name", str, "django", "Name of the app: its system user, /srv/NAME and the nginx site.", _unix_name),
    Key(
        "project_path", str, "", "Local path of the Django project to deploy; empty deploys the bundled sample project."
    ),
    Key(
        "wsgi_module",
        str,
        "",
        "The WSGI callable gunicorn serves; empty: found from manage.py (PACKAGE.settings gives PACKAGE.wsgi:application).",
        _wsgi,
    ),  # fmt: skip
    Key("settings_module", str, "", "Your project's settings module; empty: the wsgi module's package + .settings."),
    Key(
        "production_settings",
        bool,
        True,
        "Serve with the settings module fabstack generates in each release (your settings, then SECRET_KEY, DEBUG off, "
        "ALLOWED_HOSTS, DATABASES, STATIC_ROOT, MEDIA_ROOT from the server); false: your settings module alone, "
        "reading the DJANGO_* environment fabstack sets.",
    ),  # fmt: skip
    Key(
        "env",
        dict,
        {},
        "Plain environment variables for the app, manage.py and fab manage (NAME: value); a changed value reloads the "
        "app. Secrets go in `secrets`.",
        _env,
    ),  # fmt: skip
    Key(
        "exclude",
        list,
        [],
        "Paths never put in a release, in .gitignore syntax (besides what git or .gitignore files ignore).",
    ),
    Key("server_name", str, "_", "nginx server_name: the site's domain names; _ answers any name.", _server_name),
    Key(
        "default_server",
        bool,
        True,
        "This app's site answers requests for names no site on the host claims (nginx's default_server); with "
        "several apps on one host, one of them (or none).",
    ),
    Key("listen_port", int, 80, "Port nginx listens on.", _port),
    Key(
        "bind",
        str,
        "",
        "Where gunicorn listens; loopback or a unix socket only. Empty: 127.0.0.1 and the first port from 8000 that "
        "no other app on the host holds (kept once chosen).",
        _bind,
    ),
    Key("workers", (int, str), "auto", "gunicorn worker processes, or auto: 2 x the host's cores + 1.", _workers),
    Key("worker_class", str, "gevent", "gunicorn worker class: sync, gevent or gthread.", _worker_class),
    Key(
        "process_manager",
        str,
        "auto",
        "What keeps gunicorn running: nohup, systemd, supervisor, or auto (systemd where it is PID 1, else nohup).",
        _one_of("auto", "nohup", "systemd", "supervisor"),
    ),  # fmt: skip
    Key("threads", int, 1, "Threads per worker (gthread only).", _at_least(1)),
    Key("worker_connections", int, 1000, "Simultaneous clients per gevent worker.", _at_least(1)),
    Key("backlog", int, 2048, "gunicorn listen backlog (pending connections).", _at_least(1)),
    Key("timeout", int, 30, "Seconds before a silent worker is killed and restarted.", _at_least(1)),
    Key("loglevel", str, "info", "gunicorn error log level.", _one_of(*LOGLEVELS)),
    Key(
        "django_version",
        str,
        ">=5.2,<7",
        "pip specifier for Django (pip picks the newest the host's Python runs).",
        _requirement,
    ),
    Key(
        "gunicorn_version", str, ">=25.1", "pip specifier for gunicorn (installed with its gevent extra).", _requirement
    ),
    Key("gevent_version", str, ">=24", "pip specifier for gevent.", _requirement),
    Key(
        "apt_cache_max_age",
        int,
        3600,
        "Seconds before apt package lists count as stale and apt-get update runs.",
        _at_least(0),
    ),
    Key(
        "allowed_hosts",
        list,
        [],
        "Django ALLOWED_HOSTS given to the app; empty: the names in server_name, or this host's and its load "
        "balancers' addresses when server_name is `_`.",
    ),  # fmt: skip
    Key(
        "static_url", str, "/static/", "URL prefix nginx serves from the release's collected static files.", _url_prefix
    ),
    Key("media_url", str, "/media/", "URL prefix nginx serves from the shared media directory.", _url_prefix),
    Key("static_dir", str, "staticfiles", "The project's STATIC_ROOT, relative to the project root."),
    Key(
        "keep_releases",
        int,
        5,
        "Releases kept on each host; the current one and the one before it always are.",
        _at_least(2),
    ),
    Key(
        "health_path",
        str,
        "",
        "Path whose answer must be 2xx/3xx after a start, reload or deploy; empty: `/`, where any answer below 500 "
        "counts (a project without a view at / answers 404, and runs).",
        _url_path,
    ),  # fmt: skip
    Key("hosts", list, [], "The inventory: hosts with roles (app, lb) and upstream flags; see docs/load-balancing.md."),
    Key(
        "lb_method",
        str,
        "round_robin",
        "Load-balancing method: round_robin, least_conn, ip_hash, hash or random.",
        _lb_method,
    ),
    Key("lb_hash_key", str, "$request_uri", "The key of lb_method hash (consistent hashing)."),
    Key("app_port", int, 8080, "Port the app hosts' nginx listens on for the load balancers (inventory only).", _port),
    Key(
        "batch_size",
        int,
        1,
        "Rolling deploy behind load balancers: app hosts changed at a time, each taken out of the upstream first; 0 deploys all at once.",
        _at_least(0),
    ),  # fmt: skip
    Key("keepalive", int, 16, "Idle keepalive connections from each load balancer to its app hosts.", _at_least(0)),
    Key("health_timeout", int, 3, "Seconds one health-check request may take.", _at_least(1)),
    Key(
        "health_retries",
        int,
        150,
        "Health-check attempts (0.2 s apart) after a start, reload or switch before it counts as failed.",
        _at_least(1),
    ),  # fmt: skip
    Key("known_hosts", list, [], "Extra known_hosts files to trust, besides ~/.ssh/known_hosts and the lab's."),
    Key(
        "accept_new_host_keys",
        bool,
        False,
        "Trust hosts seen for the first time and record their keys (ssh's accept-new); a changed key is always refused.",
    ),  # fmt: skip
    Key(
        "secrets",
        dict,
        {},
        "The app's secrets as NAME: env:VARIABLE or NAME: file:PATH, read on the machine running fab; each is "
        "stored on the host readable by the app user alone and its path given to the app as DJANGO_NAME_FILE. "
        "SECRET_KEY, when not listed, is generated on the host.",
        _secrets,
    ),  # fmt: skip
    Key(
        "database",
        str,
        "sqlite",
        "The app's database: sqlite (a file in each app host's shared data directory) or postgresql (on the "
        "inventory's db host, or on the host itself without an inventory); a db host in the inventory means postgresql.",
        _one_of("sqlite", "postgresql"),
    ),  # fmt: skip
    Key(
        "redis",
        bool,
        False,
        "Redis from the distribution on the db host (or the single host), for Celery or a cache: bound to the "
        "private address, with a password made there; the app gets its URL as the secret REDIS_URL "
        "(DJANGO_REDIS_URL_FILE; the generated settings set REDIS_URL and CELERY_BROKER_URL).",
    ),  # fmt: skip
    Key("db_name", str, "", "PostgreSQL database name; empty: the app_name.", _pg_name),
    Key("db_user", str, "", "PostgreSQL login role of the app; empty: the app_name.", _pg_name),
    Key("db_port", int, 5432, "Port PostgreSQL listens on.", _port),
    Key(
        "db_backup_keep", int, 7, "Daily on-host backups of the PostgreSQL database kept on the db host.", _at_least(1)
    ),
    Key(
        "tls",
        dict,
        {},
        "HTTPS: `email` (a certificate from ACME: `directory`, default Let's Encrypt; `directory_ca: file:PATH` to "
        "trust a private ACME server) or `certificate: file:PATH` and `key: file:PATH` (your own); `domains` "
        "(default: server_name), `hsts` (max-age seconds, default 0: off), `port` (443). Ends at the lb hosts, or "
        "the single host. See docs/https.md.",
    ),  # fmt: skip
    Key(
        "processes",
        dict,
        {},
        "Background processes run from the current release as the app user (NAME: command line, or NAME: "
        "{command, count, hosts: all|one, stop_timeout}); kept running by the process manager and restarted "
        "after each new release. See docs/processes.md.",
    ),  # fmt: skip
    Key(
        "schedule",
        dict,
        {},
        "Jobs run on a schedule on the first app host (NAME: {command, every: minute|hourly|daily|weekly|monthly "
        "or five cron fields}): systemd timers where systemd runs, else cron; never two runs of a job at once. "
        "See docs/processes.md.",
    ),  # fmt: skip
    Key(
        "log_keep",
        int,
        14,
        "Days of rotated logs kept (gunicorn's, nginx's of the app, workers' and jobs').",
        _at_least(1),
    ),  # fmt: skip
    Key(
        "log_max_size",
        str,
        "100M",
        "A log is rotated daily, and within the hour once it grows past this (k, M or G). See docs/operations.md.",
        _size,
    ),  # fmt: skip
    Key(
        "firewall",
        bool,
        False,
        "An nftables firewall by role on every host: SSH, the public ports on the hosts that serve the public, "
        "app_port from the lbs only, the database and Redis from the app hosts only, nothing else; tried first "
        "and rolled back by itself if fab cannot log in through it. See docs/operations.md.",
    ),  # fmt: skip
    Key(
        "ssh_from",
        list,
        [],
        "With firewall: the addresses or networks SSH is open to (empty: anywhere). Include your own.",
        _networks,
    ),  # fmt: skip
    Key(
        "apt_proxy",
        str,
        "",
        "An HTTP proxy (or caching mirror such as apt-cacher-ng) the hosts' apt goes through, for hosts with no "
        "other way out: http://HOST:PORT. See docs/builds.md.",
        _http_url,
    ),  # fmt: skip
    Key(
        "unattended_upgrades",
        bool,
        True,
        "The distribution's unattended-upgrades installs security updates (only those) by itself on every host.",
    ),  # fmt: skip
    Key(
        "unattended_reboot",
        str,
        "",
        "HH:MM: reboot at that time when a security update needs it; empty: never (fab status shows it).",
        _clock,
    ),  # fmt: skip
    Key(
        "min_free_disk_mb",
        int,
        1024,
        "fab check fails when the filesystem that holds the app has less free (MB); deploy refuses a release "
        "that would not fit, before it changes anything.",
        _at_least(0),
    ),  # fmt: skip
    Key("min_free_memory_mb", int, 64, "fab check fails when a host has less memory available (MB).", _at_least(0)),
    Key("templates_dir", str, "", "A directory whose templates override fabstack's own (same file names)."),
    Key("parallel", int, 10, "How many hosts a run works on at once.", _at_least(1)),
    Key("connect_timeout", int, 10, "Seconds to wait for a host's SSH connection.", _at_least(1)),
)
KEYS = {key.name: key for key in SCHEMA}


@dataclass(frozen=True)
class Settings:
    """Validated settings: one typed attribute per SCHEMA key (a test checks they match,
    and that every `settings.NAME` in deploy/ names one), so a misspelt setting fails
    the unit tests, not a run on a host."""

    app_name: str
    project_path: str
    wsgi_module: str
    settings_module: str
    production_settings: bool
    env: dict
    exclude: list
    server_name: str
    default_server: bool
    listen_port: int
    bind: str
    workers: int | str
    worker_class: str
    process_manager: str
    threads: int
    worker_connections: int
    backlog: int
    timeout: int
    loglevel: str
    django_version: str
    gunicorn_version: str
    gevent_version: str
    apt_cache_max_age: int
    allowed_hosts: list
    static_url: str
    media_url: str
    static_dir: str
    keep_releases: int
    health_path: str
    hosts: list
    lb_method: str
    lb_hash_key: str
    app_port: int
    batch_size: int
    keepalive: int
    health_timeout: int
    health_retries: int
    known_hosts: list
    accept_new_host_keys: bool
    secrets: dict
    database: str
    redis: bool
    db_name: str
    db_user: str
    db_port: int
    db_backup_keep: int
    tls: dict
    processes: dict
    schedule: dict
    log_keep: int
    log_max_size: str
    firewall: bool
    ssh_from: list
    apt_proxy: str
    unattended_upgrades: bool
    unattended_reboot: str
    min_free_disk_mb: int
    min_free_memory_mb: int
    templates_dir: str
    parallel: int
    connect_timeout: int
    source: str = "defaults"
    inventory: Inventory = field(default_factory=Inventory)
    secret_values: dict[str, str] = field(default_factory=dict, repr=False)  # never printed
    site_tls: Tls | None = None  # the tls setting parsed (None: plain HTTP)
    background: tuple[Process, ...] = ()  # the processes setting parsed
    jobs: tuple[Job, ...] = ()  # the schedule setting parsed

    @property
    def project(self) -> Path:
        return Path(self.project_path).expanduser() if self.project_path else SAMPLE_PROJECT

    @property
    def project_settings(self) -> str:
        """The project's own settings module."""
        return self.settings_module or self.wsgi_module.split(":")[0].rsplit(".", 1)[0] + ".settings"

    @property
    def django_settings(self) -> str:
        """DJANGO_SETTINGS_MODULE for every app process."""
        return GENERATED_SETTINGS if self.production_settings else self.project_settings

    @property
    def postgresql(self) -> bool:
        """The app's database is PostgreSQL (the setting, or a db host in the inventory)."""
        return self.database == "postgresql" or bool(self.inventory.with_role("db"))

    @property
    def database_name(self) -> str:
        return self.db_name or self.app_name.replace("-", "_")

    @property
    def database_user(self) -> str:
        return self.db_user or self.app_name.replace("-", "_")


def load(path: str | None = None, overrides: dict | None = None) -> Settings:
    """Read the settings file (if any), apply task-flag overrides, validate everything."""
    path = path or os.environ.get("FABSTACK_SETTINGS") or ("fabstack.yaml" if Path("fabstack.yaml").exists() else "")
    raw: dict = {}
    if path:
        raw = _read_yaml(Path(path))
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = value
    return validate(raw, source=path or "defaults")


def load_apps(path: str | None = None, overrides: dict | None = None, app: str = "") -> list[Settings]:
    """The settings of each app the file describes (`apps:`, docs/apps.md), or of its one
    app, in the file's order; only app NAME with --app NAME. Task-flag overrides apply to
    every app. Apps that would clash on a host (a name, a bind, the default server) are
    refused here, naming both, before any host is touched."""
    path = path or os.environ.get("FABSTACK_SETTINGS") or ("fabstack.yaml" if Path("fabstack.yaml").exists() else "")
    raw = _read_yaml(Path(path)) if path else {}
    if APPS not in raw:
        one = load(path, overrides)
        if app and app != one.app_name:
            where = path or "the defaults"
            raise SettingsError(
                f"--app {app!r} is not the app of {where} ({one.app_name!r}); give --app {one.app_name}"
            )
        return [one]
    described = _apps_of(raw, path)
    if app and app not in described:
        raise SettingsError(f"--app {app!r} is not in {path}; its apps: {', '.join(described)}")
    every = []
    for name, merged in described.items():
        for key, value in (overrides or {}).items():
            if value is not None:
                merged[key] = value
        every.append(validate(merged, source=f"{path} apps.{name}"))
    _refuse_clashes(every)
    return [s for s in every if not app or s.app_name == app]


APPS = "apps"


def _apps_of(raw: dict, path: str) -> dict[str, dict]:
    """Each app's raw settings: the file's top-level keys, then the app's own over them.
    The first app is the default server unless a key says otherwise (every app's
    default would be true, and only one may be)."""
    shared = {k: v for k, v in raw.items() if k != APPS}
    apps = raw[APPS]
    if not isinstance(apps, dict) or not apps:
        raise SettingsError(f"{path}: apps must map each app's name to its settings, e.g. apps: {{shop: {{...}}}}")
    if "app_name" in shared:
        raise SettingsError(f"{path}: app_name with apps: each app's name is its key under apps; drop app_name")
    described = {}
    for index, (name, own) in enumerate(apps.items()):
        own = own or {}
        if not isinstance(own, dict):
            raise SettingsError(f"{path}: apps.{name} must be a mapping of settings, got {type(own).__name__}")
        if own.get("app_name", name) != name:
            raise SettingsError(
                f"{path}: apps.{name}.app_name is {own['app_name']!r}; an app's name is its key, drop it"
            )
        merged = {**shared, **own, "app_name": str(name)}
        merged.setdefault("default_server", index == 0)
        described[str(name)] = merged
    return described


def _refuse_clashes(apps: list[Settings]) -> None:
    """Two apps of one file that would want the same thing on a host they share."""
    for i, a in enumerate(apps):
        for b in apps[i + 1 :]:
            if a.inventory.members and b.inventory.members and not _share_hosts(a, b):
                continue
            both = f"apps {a.app_name!r} and {b.app_name!r}"
            same = sorted(set(a.server_name.split()) & set(b.server_name.split()))
            if same:
                raise SettingsError(f"server_name {same[0]} is in {both}; give each app names of its own")
            if a.bind and a.bind == b.bind:
                raise SettingsError(
                    f"bind {a.bind} is in {both}; give each its own, or leave bind unset for a free one"
                )
            if a.default_server and b.default_server:
                raise SettingsError(f"{both} both have default_server: true; a host has one, set it on one of them")


def _share_hosts(a: Settings, b: Settings) -> bool:
    addresses = {m.address for m in a.inventory.members}
    return any(m.address in addresses for m in b.inventory.members)


def _read_yaml(path: Path) -> dict:
    import yaml  # lazy: fab start-up should not pay for it when there is no file

    if not path.exists():
        raise SettingsError(f"settings file {path} does not exist; create it or drop --settings")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SettingsError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


# what people write for a key, from other tools and habits
ALIASES = {"domain": "server_name", "domains": "server_name", "hostname": "server_name", "port": "listen_port"}


def suggestion(name: str, known: list[str]) -> str:
    """The key name was probably meant as: spelled with dashes or another case
    (`server-name`), singular for plural (`worker` -> `workers`, before `worker_class`),
    a known alias, else the closest by edit distance (`wrokers`); "" when none is close."""
    plain = name.strip().lower().replace("-", "_").replace(" ", "_")
    for guess in (plain, plain + "s", plain.removesuffix("s"), ALIASES.get(plain, "")):
        if guess in known:
            return guess
    close = difflib.get_close_matches(plain, known, n=1, cutoff=0.75)
    if close:
        return close[0]
    prefixed = [k for k in known if k.split("_")[0] == plain.split("_")[0]]
    return prefixed[0] if prefixed else ""


def validate(raw: dict, source: str = "defaults") -> Settings:
    values = {key.name: key.default for key in SCHEMA}
    for name, value in raw.items():
        key = KEYS.get(name)
        if key is None:
            close = suggestion(str(name), list(KEYS))
            hint = f" (did you mean {close}?)" if close else ""
            raise SettingsError(f"unknown setting {name!r} in {source}{hint}; see docs/settings.md")
        values[name] = _coerce(key, value)
    if not values["wsgi_module"]:
        values["wsgi_module"] = _find_wsgi_module(values["project_path"])
    try:
        inventory = parse_inventory(values["hosts"], values["lb_method"])
    except InventoryError as exc:
        raise SettingsError(f"inventory: {exc}") from None
    secret_values = read_secrets(values["secrets"])
    try:
        site_tls = certificates.parse(values["tls"], values["server_name"])
    except TlsError as exc:
        raise SettingsError(str(exc)) from None
    if values["database"] == "postgresql" or inventory.with_role("db"):
        if DB_PASSWORD in values["secrets"]:
            raise SettingsError(f"secrets.{DB_PASSWORD}: fabstack makes the database password on the db host; drop it")
        # its value is made on the db host and read from there by provision (never from here)
        values["secrets"] = {**values["secrets"], DB_PASSWORD: "db:"}
    if values["redis"]:
        if REDIS_URL in values["secrets"]:
            raise SettingsError(
                f"secrets.{REDIS_URL}: fabstack makes Redis's URL on the db host with redis: true; drop it"
            )
        if inventory.members and not inventory.with_role("db"):
            raise SettingsError("setting redis=true: Redis runs on the inventory's db host; give a host the db role")
        values["secrets"] = {**values["secrets"], REDIS_URL: "redis:"}
    settings = Settings(**values, source=source, inventory=inventory, secret_values=secret_values, site_tls=site_tls)
    _check_project(settings)
    try:
        return dataclasses.replace(
            settings,
            background=background.parse(values["processes"], settings.project),
            jobs=background.parse_schedule(values["schedule"], settings.project),
        )
    except BackgroundError as exc:
        raise SettingsError(str(exc)) from None


def read_secrets(spec: dict[str, str]) -> dict[str, str]:
    """Each secret's value from its environment variable or file on this machine. Errors
    name the secret and its source, never a value."""
    values = {}
    for name, source in spec.items():
        kind, _, where = source.partition(":")
        if kind == "env":
            value = os.environ.get(where, "").strip()
            if not value:
                raise SettingsError(
                    f"secrets.{name}: environment variable {where} is not set; export it or use file:PATH"
                )
        else:
            path = Path(where).expanduser()
            if not path.is_file():
                raise SettingsError(
                    f"secrets.{name}: file {where} does not exist; create it (chmod 600) or use env:VAR"
                )
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SettingsError(f"secrets.{name}: {where} is readable by others (mode {mode:o}); chmod 600 {where}")
            value = path.read_text().strip()
            if not value:
                raise SettingsError(f"secrets.{name}: file {where} is empty; put the secret in it")
        values[name] = value
    return values


def _coerce(key: Key, value: Any) -> Any:
    if int in (key.type if isinstance(key.type, tuple) else (key.type,)) and _is_int_text(value):
        value = int(value)
    if key.type is bool and value in ("true", "false"):
        value = value == "true"
    if key.type is list and isinstance(value, str):
        value = [item for item in value.split(",") if item]
    if (isinstance(value, bool) and key.type is not bool) or not isinstance(value, key.type):
        raise SettingsError(f"setting {key.name}={value!r}: expected {type_name(key)}, got {type(value).__name__}")
    if key.check:
        fix = key.check(value)
        if fix:
            raise SettingsError(f"setting {key.name}={value!r} is invalid: {fix}")
    return value


def _is_int_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def type_name(key: Key) -> str:
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    return " or ".join(t.__name__ for t in types)


def _find_wsgi_module(project_path: str) -> str:
    """PACKAGE.wsgi:application, PACKAGE from manage.py's DJANGO_SETTINGS_MODULE default
    (what `django-admin startproject` writes); '' when manage.py does not say."""
    project = Path(project_path).expanduser() if project_path else SAMPLE_PROJECT
    try:
        manage = (project / "manage.py").read_text(errors="replace")
    except OSError:
        return ""  # _check_project names the problem
    found = re.search(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)\.settings['"]""", manage)
    return f"{found[1]}.wsgi:application" if found else ""


def _check_project(settings: Settings) -> None:
    project = settings.project
    if not project.is_dir():
        raise SettingsError(
            f"setting project_path={str(project)!r}: no such directory; point it at your Django project"
        )
    if not (project / "manage.py").is_file():
        raise SettingsError(f"setting project_path={str(project)!r}: no manage.py there; point it at the project root")
    try:
        check_links(project, settings.static_dir, settings.exclude)
    except LinkOutside as exc:
        raise SettingsError(str(exc)) from None
    if not settings.wsgi_module:
        raise SettingsError(
            f"setting wsgi_module is empty and {project}/manage.py names no DJANGO_SETTINGS_MODULE; "
            "set wsgi_module to your project's module:callable, e.g. mysite.wsgi:application"
        )
    module = settings.wsgi_module.split(":")[0]
    as_path = project / Path(*module.split("."))
    if not (as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file()):
        raise SettingsError(
            f"setting wsgi_module={settings.wsgi_module!r}: {module} not found in {project}; "
            "set wsgi_module to your project's module:callable"
        )
