"""Facts: what a run knows about a host, read in one remote command and parsed into one
typed object (pyinfra's facts). Steps compare these with the wanted state and yield
operations only where something differs.

The read is deploy/remote/facts.sh; its key=value lines are parsed here, and nowhere
else: a step asks `facts.current_release` or `facts.file(path)`, never for a raw key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from deploy import packages, scripts
from deploy.layout import Layout
from deploy.scripts import Shell


@dataclass(frozen=True)
class FileFact:
    """A regular file on the host (a symlink never is one: it reads as missing)."""

    sha256: str
    owner: str = ""
    group: str = ""
    mode: str = ""

    def holds(self, content: str, owner: str = "root", group: str = "root", mode: str = "644") -> bool:
        """The file has exactly this content, owner, group and mode."""
        wanted = (hashlib.sha256(content.encode()).hexdigest(), owner, group, mode)
        return (self.sha256, self.owner, self.group, self.mode) == wanted

    def has_mode(self, owner: str, group: str, mode: str) -> bool:
        return (self.owner, self.group, self.mode) == (owner, group, mode)


@dataclass(frozen=True)
class BackgroundFact:
    """A background process on the host: its manager, how many instances run, their pids
    (unknown, empty, after a step started them)."""

    manager: str
    running: int = 0
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class JobFact:
    """A scheduled job on the host: run by systemd (a timer) or cron; the timer's state (or
    cron's), and when the job last started ('' for never)."""

    kind: str
    state: str = ""
    last: str = ""


@dataclass(frozen=True)
class CertificateFact:
    """The certificate nginx serves on a host that ends TLS."""

    expires: int  # epoch seconds (0: unreadable)
    key_matches: bool
    ocsp: bool  # it names an OCSP responder (so nginx can staple)
    sha256: str = ""
    names: tuple[str, ...] = ()

    def days_left(self, now: int) -> float:
        return (self.expires - now) / 86400


@dataclass(frozen=True)
class SiteFact:
    """Another nginx site enabled on the host: the ports it is the default server on,
    and its server names."""

    default_ports: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


@dataclass
class HostFacts:
    """One host as its facts read saw it. Steps update a field after they change what it
    describes (a stopped app has no pid), so later steps of the run see the new state."""

    os: str = ""
    arch: str = ""  # uname -m
    nproc: int = 1
    addresses: list[str] = field(default_factory=list)
    now: int = 0
    python: str = ""
    pid1: str = ""
    systemd: str = ""  # systemctl is-system-running, where systemd is PID 1
    unit_state: str = ""  # the app's systemd unit: is-active, when its file exists
    unit_enabled: str = ""
    supervisor_state: str = ""  # the app's supervisor program: its state, when its file exists
    supervisord_running: bool = field(default=False, metadata={"key": "supervisord_pid"})
    apt_stamp: int = 0
    app_uid: str = field(default="", metadata={"key": "user"})  # '' when the app user does not exist
    user_home: str = ""  # the app user's home and comment: fabstack's user has /srv/APP and its comment
    user_comment: str = ""
    packages: dict[str, str] = field(default_factory=dict, metadata={"key": "pkg"})  # name -> dpkg status
    # what each fabstack app on this host holds (its names, bind, default server): app -> key -> value
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    sites: dict[str, SiteFact] = field(default_factory=dict)  # other enabled nginx sites, by file name
    files: dict[str, FileFact] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict, metadata={"key": "dir"})  # path -> 'owner:group mode'
    links: dict[str, str] = field(default_factory=dict, metadata={"key": "link"})  # path -> target
    current: str = ""  # where the `current` link points ('' when there is none)
    default_backup: bool = False
    current_has_wsgi: bool = False  # the current release holds the wsgi module's package
    venv_version: str = ""
    venv_marker: str = ""
    requirements_marker: str = ""
    passed: str = ""  # the release that last passed its health check here
    releases: list[str] = field(default_factory=list)  # newest first
    app_pid: str = ""
    app_listen: list[str] = field(default_factory=list)
    app_preload: bool = False  # the running master was started with preload_app (its config says so)
    nginx_pid: str = ""
    pg_version: str = ""  # a db host: PostgreSQL's first cluster, when installed
    pg_port: int = 0
    pg_online: bool = False
    db_role_exists: bool = False  # the app's login role and database, when PostgreSQL runs
    db_exists: bool = False
    db_public_connect: bool = False  # every role may connect to the app's database (PostgreSQL's default)
    redis: str = ""  # a Redis host: online or down ('' when not installed)
    redis_included: bool = False  # redis.conf includes fabstack's files
    redis_acl: bool = False  # the app has a Redis ACL user of its own (not the shared default user)
    firewall: str = ""  # loaded when fabstack's nftables table is there
    glusterd: str = ""  # an app host sharing media: online or down
    media_brick: str = ""  # the brick directory's "owner:group mode" ('' missing): the volume root's
    media_volume: str = ""  # the app's GlusterFS volume: 1 started, 0 made, '' none
    media_bricks: list[str] = field(default_factory=list)  # the addresses of its bricks' hosts
    media_allow: str = ""  # the clients its auth.allow lets in
    media_mount: str = ""  # the type of what is mounted at the media directory ('' nothing)
    media_marker: bool = False  # the volume's marker file is seen at the media directory
    certificate: CertificateFact | None = None  # a host that ends TLS: the one it serves, if any
    background: dict[str, BackgroundFact] = field(default_factory=dict)  # process -> manager, pids
    jobs: dict[str, JobFact] = field(default_factory=dict)  # scheduled job -> how it runs, when it last ran
    cron_running: bool = False
    disk_free: int = 0  # KB free on the filesystem that holds the app (0: not read)
    disk_mount: str = ""  # where that filesystem is mounted
    mem_available: int = 0  # KB of memory available
    logrotate_timer: str = ""  # is-active of the app's logrotate timer
    backup_timer: str = ""  # is-active of the db host's daily backup timer
    db_port_taken_by: str = ""  # a program other than PostgreSQL on its port
    pg_hba_rules: str = ""  # the host rules of pg_hba.conf: "TYPE DB USER," each
    extra: dict[str, str] = field(default_factory=dict)  # what a read-only task read besides (StatusRead, CheckRead)

    @property
    def current_release(self) -> str:
        """The id of the release `current` points at ('' when none)."""
        return self.current.rsplit("/", 1)[-1] if self.current else ""

    @property
    def previous_release(self) -> str:
        """The newest release older than the current one ('' when there is none)."""
        ids, current = self.releases, self.current_release
        at = ids.index(current) + 1 if current in ids else len(ids)
        return ids[at] if at < len(ids) else ""

    def file(self, path: str) -> FileFact | None:
        return self.files.get(path)

    def link(self, path: str) -> str | None:
        """The target of the symlink at path; None when path is not a symlink."""
        return self.links.get(path)

    def installed(self, package: str) -> bool:
        return self.packages.get(package) == "installed"

    @property
    def provisioned(self) -> bool:
        """Provision ran to its end here: a virtualenv, the app user, nginx running."""
        return bool(self.venv_marker and self.app_uid and self.nginx_pid)

    @classmethod
    def parse(cls, output: str) -> HostFacts:
        """The key=value lines of facts.sh (and of status.sh or check.sh: their keys land
        in extra, for StatusRead and CheckRead). Every field of a plain type is read from
        the key of its name (or its metadata's key) by its type; the few of a richer kind
        have a reader of their own below."""
        raw = key_values(output)
        facts, used = typed(cls, raw)
        metas = {}
        for key, value in raw.items():
            kind, _, path = key.partition(".")
            if key in used:
                continue
            elif kind == "sha" and path:
                facts.files[path] = FileFact(value)
            elif kind == "meta" and path:
                metas[path] = value
            elif kind == "job" and path:
                kind, state, last = (value.split(" ", 2) + ["", ""])[:3]
                facts.jobs[path] = JobFact(kind, state, last.strip())
            elif kind == "bg" and path:
                manager, *pids = value.split()
                known = tuple(int(p) for p in pids if p.isdigit())
                facts.background[path] = BackgroundFact(manager, len(known), known)
            elif kind == "site" and path:
                ports, _, names = value.partition("|")
                defaults = tuple(p.rpartition(":")[2] for p in ports.split())
                facts.sites[path] = SiteFact(defaults, tuple(names.split()))
            elif kind == "claim" and "." in path:
                app, _, name = path.partition(".")
                facts.claims.setdefault(app, {})[name] = value
            elif key == "pg":
                version, port, status = (value.split() + ["", "", ""])[:3]
                facts.pg_version, facts.pg_port, facts.pg_online = version, int(port or 0), status == "online"
            elif key == "tls":
                expires, match, ocsp, sha = (value.split() + ["", "", "", ""])[:4]
                facts.certificate = CertificateFact(
                    int(expires) if expires.isdigit() else 0,
                    match == "yes",
                    ocsp == "yes",
                    sha,
                    tuple(raw.get("tls_names", "").split()),
                )
            elif key == "tls_names":
                pass  # read with tls
            elif key == "pg_objects":
                roles, databases, public = (value.split(",") + ["", "", ""])[:3]
                facts.db_role_exists, facts.db_exists = roles == "1", databases == "1"
                facts.db_public_connect = public == "1"
            else:
                facts.extra[key] = value
        for path, meta in metas.items():
            owner_group, _, mode = meta.partition(" ")
            owner, _, group = owner_group.partition(":")
            if path in facts.files:
                facts.files[path] = FileFact(facts.files[path].sha256, owner, group, mode)
        facts.nproc = facts.nproc or 1
        return facts


def key_values(output: str) -> dict[str, str]:
    raw: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key] = value.strip()
    return raw


T = TypeVar("T")


def typed(cls: type[T], raw: dict[str, str]) -> tuple[T, set[str]]:
    """An instance of the dataclass cls from raw, each field of a plain type (str, int,
    bool, list[str], str | None for a key that may be absent, dict[str, str] for the
    keys KEY.NAME) from its key; and the keys it took."""
    values: dict[str, Any] = {}
    used: set[str] = set()
    for f in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        key = f.metadata.get("key", f.name)
        if f.type == "dict[str, str]":
            prefix = key + "."
            found = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix) and len(k) > len(prefix)}
            values[f.name] = found
            used |= {prefix + k for k in found}
        elif key in raw and f.type in _READERS:
            values[f.name] = _READERS[str(f.type)](raw[key])
            used.add(key)
    return cls(**values), used


_READERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "str | None": str,
    "int": lambda value: int(value) if value.isdigit() else 0,
    "bool": bool,  # a flag: any value but the empty one
    "list[str]": str.split,
}


@dataclass(frozen=True)
class StatusRead:
    """What fab status reads besides the facts (deploy/remote/status.sh)."""

    nginx_test: str = ""
    health: str = "-"
    updates: str = ""
    reboot_required: str = ""
    upstream: str = ""
    workers: str = "-"
    worker_class: str = "-"
    uptime: str = "-"

    @classmethod
    def parse(cls, raw: dict[str, str]) -> StatusRead:
        return typed(cls, raw)[0]


@dataclass(frozen=True)
class RecordsRead:
    """What fab releases reads besides the facts (release.sh's read_release_records)."""

    record: dict[str, str] = field(default_factory=dict)  # release id -> "commit<TAB>when<TAB>subject"

    @classmethod
    def parse(cls, raw: dict[str, str]) -> RecordsRead:
        return typed(cls, raw)[0]


@dataclass(frozen=True)
class CheckRead:
    """What fab check reads besides the facts (deploy/remote/check.sh)."""

    nginx_test: str | None = None
    server_tokens: int = 0
    ssh_passwords: str | None = None  # None: sshd's settings could not be read
    ssh_root: str = ""
    db_reach: str | None = None  # None: not a host the database should be closed to
    owners: list[str] = field(default_factory=list)
    listen: list[str] = field(default_factory=list)
    app_uid: str = ""
    data_dir: str = ""
    django_status: str = ""
    django_error: str = ""
    django_warnings: str = ""
    pg_listen: list[str] = field(default_factory=list)
    pg_clients: list[str] = field(default_factory=list)
    found_units: list[str] = field(default_factory=list)
    found_programs: list[str] = field(default_factory=list)
    found_sites: list[str] = field(default_factory=list)
    found_cron: list[str] = field(default_factory=list)
    found_pg_rules: list[str] = field(default_factory=list)
    found_redis_users: list[str] = field(default_factory=list)
    key_sha: str = ""  # the SECRET_KEY file's sha256
    media_writable: bool = False  # the app may write its shared media directory
    secret: dict[str, str] = field(default_factory=dict)  # path -> "owner:group mode" ('' missing)
    owns: dict[str, str] = field(default_factory=dict)  # app -> its record's owns=

    @classmethod
    def parse(cls, raw: dict[str, str]) -> CheckRead:
        return typed(cls, raw)[0]


def read_command(
    layout: Layout, secret_files: list[str], values: dict[str, object], owned_files: list[str],
    host_files: list[str], also: tuple[str, list[str]] = ("", []), extra_packages: tuple[str, ...] = (),
) -> Shell:  # fmt: skip
    """The one command that reads a host: the files the app owns (its manifest) and the
    host's own that steps write (deploy.steps.host_files), the app's secret files (read
    as the app user), directories, links, packages (fabstack's, and extra_packages: the
    system_packages setting), processes; with also (a remote file and its call lines),
    what a read-only task reads besides."""
    files = [*owned_files, *host_files]
    lists = {
        "FACT_FILES": files,
        "APP_FACT_FILES": secret_files,
        "FACT_DIRS": [spec[0] for spec in layout.directories()],
        "FACT_LINKS": [layout.nginx_link, layout.nginx_lb_link, layout.NGINX_DEFAULT_LINK],
        "FACT_PACKAGES": list(dict.fromkeys([*packages.KNOWN, *extra_packages])),
    }
    files_also, lines_also = also
    return scripts.calls(
        ["facts.sh", *filter(None, [files_also])],
        ["read_facts", *lines_also],
        values | {k: " ".join(v) for k, v in lists.items()},
    )
