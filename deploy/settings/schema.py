"""The settings, each written once: a field of Settings with its default, its meaning
and its type's validator (deploy/settings/validators.py). SCHEMA (what the loader
checks), the unit tests and docs/settings.md (python -m deploy.docs) are derived from
these fields, so a setting cannot be declared in one place and missed in another."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.settings import validators as v
from deploy.settings.background import Job, Process
from deploy.settings.inventory import Inventory
from deploy.settings.tls import Tls
from deploy.settings.validators import LOGLEVELS

REPO = Path(__file__).resolve().parents[2]  # the checkout (docs/); an installed wheel has none
# templates/ ships inside the package (deploy/templates links to it in the checkout), so
# an installed wheel renders and deploys the sample without the checkout.
TEMPLATES = Path(__file__).parents[1] / "templates"
SAMPLE_PROJECT = TEMPLATES / "sample"
GENERATED_SETTINGS = "fabstack_settings"
DB_PASSWORD = "DB_PASSWORD"  # the secret that holds the app's PostgreSQL password
REDIS_URL = "REDIS_URL"  # the secret that holds the app's Redis URL (redis: true)


@dataclass(frozen=True)
class Key:
    """One setting as the loader and the docs see it (derived from its field)."""

    name: str
    type: type | tuple
    default: Any
    help: str
    check: Callable[[Any], str] | None = None  # returns an error fix text, or ""


def setting(default: Any, help: str, check: Callable[[Any], str] | None = None) -> Any:
    """A field of Settings that is a setting: its default, its meaning, its validator."""
    meta = {"help": help, "check": check}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Validated settings: one typed attribute per setting, declared once here (a test
    checks that every `settings.NAME` in deploy/ names one), so a misspelt setting fails
    the unit tests, not a run on a host. The attributes after connect_timeout are what
    the loader derives from the settings, not settings themselves."""

    app_name: str = setting("django", "Name of the app: its system user, /srv/NAME and the nginx site.", v.unix_name)
    project_path: str = setting(
        "", "Local path of the Django project to deploy; empty deploys the bundled sample project."
    )
    wsgi_module: str = setting(
        "",
        "The WSGI callable gunicorn serves; empty: PACKAGE.wsgi:application, PACKAGE the one that holds the settings module manage.py names (or the only one with a wsgi.py).",
        v.wsgi,
    )
    settings_module: str = setting(
        "",
        "Your project's settings module; empty: the default your wsgi.py (else manage.py) sets, and its `production` sibling when that default is a `dev`/`local` module of a settings package.",
        v.python_module,
    )
    production_settings: bool = setting(
        True,
        "Serve with the settings module fabstack generates in each release (your settings, then SECRET_KEY, DEBUG off, ALLOWED_HOSTS, DATABASES, STATIC_ROOT, MEDIA_ROOT from the server); false: your settings module alone, reading the DJANGO_* environment fabstack sets.",
    )
    requirements: str = setting(
        "",
        "The project's requirements file (its `-r` and `-c` includes followed inside the project); empty: requirements.txt, else pyproject.toml's [project] dependencies.",
        v.requirements_file,
    )
    system_packages: list = setting(
        [],
        "Debian packages every app host gets with apt before the project's requirements are built (build-essential, python3-dev, libpq-dev, libjpeg-dev ...).",
        v.debian_packages,
    )
    env: dict = setting(
        {},
        "Plain environment variables for the app, manage.py and fab manage (NAME: value); a changed value reloads the app. Secrets go in `secrets`.",
        v.env,
    )
    exclude: list = setting(
        [], "Paths never put in a release, in .gitignore syntax (besides what git or .gitignore files ignore)."
    )
    server_name: str = setting("_", "nginx server_name: the site's domain names; _ answers any name.", v.server_name)
    default_server: bool = setting(
        True,
        "This app's site answers requests for names no site on the host claims (nginx's default_server); with several apps on one host, one of them (or none).",
    )
    listen_port: int = setting(80, "Port nginx listens on.", v.port)
    bind: str = setting(
        "",
        "Where gunicorn listens; loopback or a unix socket only. Empty: the app's unix socket /srv/APP/run/gunicorn.sock, in a directory only the app and nginx may enter (a loopback port is open to every local user, other apps' included).",
        v.bind,
    )
    workers: int | str = setting("auto", "gunicorn worker processes, or auto: 2 x the host's cores + 1.", v.workers)
    worker_class: str = setting("gevent", "gunicorn worker class: sync, gevent or gthread.", v.worker_class)
    preload_app: bool = setting(
        False,
        "gunicorn's master imports the app once and forks ready workers; a deploy then starts a new master beside the old one (USR2) and stops the old one once the new one answers: faster, and no moment without a ready worker. Needs process_manager nohup or systemd (supervisor cannot follow a new master).",
    )
    process_manager: str = setting(
        "auto",
        "What keeps gunicorn running: nohup, systemd, supervisor, or auto (systemd where it is PID 1, else nohup).",
        v.one_of("auto", "nohup", "systemd", "supervisor"),
    )
    threads: int = setting(1, "Threads per worker (gthread only).", v.at_least(1))
    worker_connections: int = setting(1000, "Simultaneous clients per gevent worker.", v.at_least(1))
    backlog: int = setting(2048, "gunicorn listen backlog (pending connections).", v.at_least(1))
    timeout: int = setting(30, "Seconds before a silent worker is killed and restarted.", v.at_least(1))
    loglevel: str = setting("info", "gunicorn error log level.", v.one_of(*LOGLEVELS))
    django_version: str = setting(
        ">=5.2,<7", "pip specifier for Django (pip picks the newest the host's Python runs).", v.requirement
    )
    gunicorn_version: str = setting(
        ">=25.1", "pip specifier for gunicorn (installed with its gevent extra).", v.requirement
    )
    gevent_version: str = setting(">=24", "pip specifier for gevent.", v.requirement)
    apt_cache_max_age: int = setting(
        3600, "Seconds before apt package lists count as stale and apt-get update runs.", v.at_least(0)
    )
    allowed_hosts: list = setting(
        [],
        "Django ALLOWED_HOSTS given to the app; empty: the names in server_name, or this host's and its load balancers' addresses when server_name is `_`.",
        v.allowed_hosts,
    )
    static_url: str = setting(
        "/static/", "URL prefix nginx serves from the release's collected static files.", v.url_prefix
    )
    media_url: str = setting("/media/", "URL prefix nginx serves from the shared media directory.", v.url_prefix)
    shared_media: bool = setting(
        True,
        "On a farm (more than one app host): the media directory is one GlusterFS volume, a copy on every app host, mounted at the same path on each, so an upload is served by every host at once. false: each app host keeps its own (for a site that stores no uploads).",
    )
    static_dir: str = setting(
        "staticfiles", "The project's STATIC_ROOT, relative to the project root (no '..').", v.relative_path
    )
    keep_releases: int = setting(
        5, "Releases kept on each host; the current one and the one before it always are.", v.at_least(2)
    )
    health_path: str = setting(
        "",
        "Path whose answer must be 2xx/3xx after a start, reload or deploy; empty: `/`, where any answer below 500 counts (a project without a view at / answers 404, and runs).",
        v.url_path,
    )
    hosts: list = setting(
        [], "The inventory: hosts with roles (app, lb) and upstream flags; see docs/load-balancing.md."
    )
    lb_method: str = setting(
        "round_robin", "Load-balancing method: round_robin, least_conn, ip_hash, hash or random.", v.lb_method
    )
    lb_hash_key: str = setting(
        "$request_uri", "The key of lb_method hash (consistent hashing): nginx variables and plain text.", v.hash_key
    )
    app_port: int = setting(
        8080, "Port the app hosts' nginx listens on for the load balancers (inventory only).", v.port
    )
    batch_size: int = setting(
        1,
        "Rolling deploy behind load balancers: app hosts changed at a time, each taken out of the upstream first; 0 deploys all at once.",
        v.at_least(0),
    )
    keepalive: int = setting(16, "Idle keepalive connections from each load balancer to its app hosts.", v.at_least(0))
    health_timeout: int = setting(3, "Seconds one health-check request may take.", v.at_least(1))
    health_retries: int = setting(
        150,
        "Health-check attempts (0.2 s apart) after a start, reload or switch before it counts as failed.",
        v.at_least(1),
    )
    known_hosts: list = setting([], "Extra known_hosts files to trust, besides ~/.ssh/known_hosts and the lab's.")
    accept_new_host_keys: bool = setting(
        False,
        "Trust hosts seen for the first time and record their keys (ssh's accept-new); a changed key is always refused.",
    )
    secrets: dict = setting(
        {},
        "The app's secrets as NAME: env:VARIABLE, NAME: file:PATH or NAME: cmd:COMMAND (its output: `pass show shop/key`, `op read op://vault/item/field`, ...), read on the machine running fab, a command once per run; each is stored on the host readable by the app user alone and its path given to the app as DJANGO_NAME_FILE. SECRET_KEY, when not listed, is generated on the host.",
        v.secrets,
    )
    lock_timeout: int = setting(
        60,
        "Seconds the deploy lock outlives a run that stopped answering (its connection hung, its machine asleep); after that the next run takes it over, with a warning. A run that is alive says so every few seconds.",
        v.at_least(5),
    )
    maintenance_allow: list = setting(
        [],
        "Addresses or networks whose requests still reach the app while fab maintenance is on (your office, your VPN); the health check and the ACME challenge always pass.",
        v.networks,
    )
    hooks: dict = setting(
        {},
        "Scripts of the project run on the machine running fab around the tasks that change hosts, as NAME: path in the project: pre_deploy, post_deploy, pre_provision, post_provision, on_failure, post_rollback. A failing pre_ hook stops the run before any host changes; the run's facts are in FABSTACK_* variables (docs/operations.md).",
        v.hooks,
    )
    database: str = setting(
        "sqlite",
        "The app's database: sqlite (a file in each app host's shared data directory) or postgresql (on the inventory's db host, or on the host itself without an inventory); a db host in the inventory means postgresql.",
        v.one_of("sqlite", "postgresql"),
    )
    redis: bool = setting(
        False,
        "Redis from the distribution on the db host (or the single host), for Celery or a cache: bound to the private address, with a password made there; the app gets its URL as the secret REDIS_URL (DJANGO_REDIS_URL_FILE; the generated settings set REDIS_URL and CELERY_BROKER_URL).",
    )
    db_name: str = setting("", "PostgreSQL database name; empty: the app_name.", v.pg_name)
    db_user: str = setting("", "PostgreSQL login role of the app; empty: the app_name.", v.pg_name)
    db_port: int = setting(5432, "Port PostgreSQL listens on.", v.port)
    db_backup_keep: int = setting(
        7, "Daily on-host backups of the PostgreSQL database kept on the db host.", v.at_least(1)
    )
    tls: dict = setting(
        {},
        "HTTPS: `email` (a certificate from ACME: `directory`, default Let's Encrypt; `directory_ca: file:PATH` to trust a private ACME server) or `certificate: file:PATH` and `key: file:PATH` (your own); `domains` (default: server_name), `hsts` (max-age seconds, default 0: off), `port` (443). Ends at the lb hosts, or the single host. See docs/https.md.",
    )
    processes: dict = setting(
        {},
        "Background processes run from the current release as the app user (NAME: command line, or NAME: {command, count, hosts: all|one, stop_timeout}); kept running by the process manager and restarted after each new release. See docs/processes.md.",
    )
    schedule: dict = setting(
        {},
        "Jobs run on a schedule on the first app host (NAME: {command, every: minute|hourly|daily|weekly|monthly or five cron fields}): systemd timers where systemd runs, else cron; never two runs of a job at once. See docs/processes.md.",
    )
    log_keep: int = setting(
        14, "Days of rotated logs kept (gunicorn's, nginx's of the app, workers' and jobs').", v.at_least(1)
    )
    log_max_size: str = setting(
        "100M",
        "A log is rotated daily, and within the hour once it grows past this (k, M or G). See docs/operations.md.",
        v.size,
    )
    firewall: bool = setting(
        False,
        "An nftables firewall by role on every host: SSH, the public ports on the hosts that serve the public, app_port from the lbs only, the database and Redis from the app hosts only, nothing else; tried first and rolled back by itself if fab cannot log in through it. See docs/operations.md.",
    )
    ssh_from: list = setting(
        [], "With firewall: the addresses or networks SSH is open to (empty: anywhere). Include your own.", v.networks
    )
    apt_proxy: str = setting(
        "",
        "An HTTP proxy (or caching mirror such as apt-cacher-ng) the hosts' apt goes through, for hosts with no other way out: http://HOST:PORT. See docs/builds.md.",
        v.http_url,
    )
    unattended_upgrades: bool = setting(
        True, "The distribution's unattended-upgrades installs security updates (only those) by itself on every host."
    )
    unattended_reboot: str = setting(
        "", "HH:MM: reboot at that time when a security update needs it; empty: never (fab status shows it).", v.clock
    )
    journal_max_use: str = setting(
        "500M",
        "The most the systemd journal keeps on disk on every host (journald's SystemMaxUse), e.g. 200M or 1G, so a chatty app or a crash loop never fills the disk.",
        v.size,
    )
    min_free_disk_mb: int = setting(
        1024,
        "fab check fails when the filesystem that holds the app has less free (MB); deploy refuses a release that would not fit, before it changes anything.",
        v.at_least(0),
    )
    min_free_memory_mb: int = setting(64, "fab check fails when a host has less memory available (MB).", v.at_least(0))
    templates_dir: str = setting("", "A directory whose templates override fabstack's own (same file names).")
    parallel: int = setting(10, "How many hosts a run works on at once.", v.at_least(1))
    connect_timeout: int = setting(10, "Seconds to wait for a host's SSH connection.", v.at_least(1))
    source: str = "defaults"
    inventory: Inventory = field(default_factory=Inventory)
    secret_values: dict[str, str] = field(default_factory=dict, repr=False)  # never printed
    site_tls: Tls | None = None  # the tls setting parsed (None: plain HTTP)
    background: tuple[Process, ...] = ()  # the processes setting parsed
    jobs: tuple[Job, ...] = ()  # the schedule setting parsed
    project_note: str = ""  # one line when fabstack chose the project's settings module among several

    @property
    def settings_file(self) -> str:
        """The settings file's path relative to the project, when it lies in the project
        ('' otherwise): never part of a release, nor what makes one -dirty."""
        path = Path(self.source.split(" apps.")[0])
        if self.source == "defaults" or not path.is_file():
            return ""
        try:
            return str(path.resolve().relative_to(self.project.resolve()))
        except ValueError:
            return ""

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
    def farm(self) -> bool:
        """More than one app host: what a single host keeps for itself (its SECRET_KEY, its
        SQLite database) the app hosts of a farm must share."""
        return len(self.inventory.with_role("app")) > 1

    @property
    def database_name(self) -> str:
        return self.db_name or self.app_name.replace("-", "_")

    @property
    def database_user(self) -> str:
        return self.db_user or self.app_name.replace("-", "_")


def _runtime_type(hint: Any) -> type | tuple:
    """The type (or tuple of types) a value of the annotation must be an instance of."""
    if isinstance(hint, types.UnionType):
        return typing.get_args(hint)
    return typing.get_origin(hint) or hint


def _schema() -> tuple[Key, ...]:
    hints = typing.get_type_hints(Settings)
    keys = []
    for f in dataclasses.fields(Settings):
        if "help" in f.metadata:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
            keys.append(Key(f.name, _runtime_type(hints[f.name]), default, f.metadata["help"], f.metadata["check"]))
    return tuple(keys)


SCHEMA: tuple[Key, ...] = _schema()
KEYS = {key.name: key for key in SCHEMA}
