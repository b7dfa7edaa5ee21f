"""A host as a step sees it: bound once per run to its settings, layout, roles and facts.

Steps read this and yield operations (deploy.ops); they never hold a connection. The
runner's HostRun extends it with one. A unit test builds one from settings and facts.
"""

from __future__ import annotations

from deploy import appenv, scripts
from deploy.facts import HostFacts
from deploy.layout import Layout
from deploy.ops import Handler
from deploy.scripts import Shell
from deploy.settings import Settings
from deploy.settings.background import Job, Process
from deploy.settings.inventory import Member

BAD_ANSWERS = 3  # answers that say no (a 500, a 404 at health_path) before a start counts as failed
REDIS_PORT = 6379
APT_WAIT = 300  # seconds apt may wait for another apt (unattended-upgrades) to finish


class HostContext:
    def __init__(self, host: str, settings: Settings, facts: HostFacts | None = None):
        self.host = host
        self.settings = settings
        self.layout = Layout.of(settings)
        self.member: Member | None = settings.inventory.find(host)  # None: a host given with -H
        roles = settings.inventory.roles_of(host)
        # a single host with database: postgresql runs its own PostgreSQL
        self.roles = roles + ("db",) if self.member is None and settings.database == "postgresql" else roles
        self.facts = facts or HostFacts()
        self.notified: list[Handler] = []

    @property
    def is_app(self) -> bool:
        return "app" in self.roles

    @property
    def behind_lbs(self) -> bool:
        """In the inventory: its site listens for the load balancers on app_port."""
        return self.member is not None

    @property
    def serves_lb(self) -> bool:
        """A load balancer of the inventory: its lb site proxies to the app hosts."""
        return "lb" in self.roles and self.behind_lbs

    @property
    def ends_tls(self) -> bool:
        """This host faces the clients (a load balancer, or the single host) and HTTPS is on."""
        return self.settings.site_tls is not None and "lb" in self.roles

    @property
    def gets_certificate(self) -> bool:
        """This host asks the ACME CA (the first lb, or the single host); the others get copies."""
        tls, member = self.settings.site_tls, self.member
        if not (self.ends_tls and tls and tls.acme):
            return False
        lbs = self.settings.inventory.with_role("lb")
        return member is None or bool(lbs) and lbs[0].host == member.host

    @property
    def tls_mode(self) -> str:
        """How this host comes by its certificate: acme (certbot here), files (uploaded), or ''."""
        return "acme" if self.gets_certificate else "files" if self.ends_tls else ""

    @property
    def tls_paths(self) -> tuple[str, str]:
        """The certificate chain and key nginx reads here ('' when this host ends no TLS)."""
        layout = self.layout
        if self.gets_certificate:
            return layout.acme_certificate, layout.acme_key
        return (layout.tls_certificate, layout.tls_key) if self.ends_tls else ("", "")

    @property
    def runs_postgresql(self) -> bool:
        """The app's PostgreSQL lives here: its db host (or the single host with database: postgresql)."""
        return "db" in self.roles and self.settings.postgresql

    @property
    def runs_redis(self) -> bool:
        """Redis lives here: the db host, or the single host (redis: true)."""
        return self.settings.redis and ("db" in self.roles or self.member is None)

    @property
    def redis_on_farm(self) -> bool:
        """Redis here listens on a farm's private address too: it needs guarding."""
        return self.runs_redis and self.member is not None

    @property
    def shares_media(self) -> bool:
        """An app host of a farm with shared_media: its media directory is the app's
        GlusterFS volume, with a brick (a copy) here."""
        return self.is_app and self.settings.farm and self.settings.shared_media

    @property
    def firewall_here(self) -> bool:
        """fabstack's firewall table lives here: every host with `firewall: true`, a
        farm's Redis host (Redis has no access rules of its own), and the app hosts that
        share media (glusterd's bricks answer any address the volume's own rule lets
        through; the app hosts alone may reach them)."""
        return self.settings.firewall or self.redis_on_farm or self.shares_media

    @property
    def background_here(self) -> list[Process]:
        """The background processes this host runs: those on every app host, and those on
        one host when this is the first app host (or the single host)."""
        if not self.is_app:
            return []
        return [p for p in self.settings.background if p.hosts == "all" or self.first_app_host]

    @property
    def bind(self) -> str:
        """Where gunicorn listens: the bind setting, else the app's unix socket, which
        only nginx may reach (a port on 127.0.0.1 is open to every local user, another
        app's included, who could forge the X-Forwarded-* headers gunicorn trusts)."""
        return self.settings.bind or f"unix:{self.layout.socket}"

    @property
    def first_app_host(self) -> bool:
        """The first app host of the inventory, or the single host."""
        apps = self.settings.inventory.with_role("app")
        return self.is_app and (self.member is None or (bool(apps) and apps[0].host == self.member.host))

    @property
    def jobs_here(self) -> list[Job]:
        """The scheduled jobs: on the first app host only."""
        return list(self.settings.jobs) if self.first_app_host else []

    @property
    def jobs_by_cron(self) -> bool:
        """The jobs run from cron here (a host without systemd), not from systemd timers."""
        return bool(self.jobs_here) and self.facts.pid1 != "systemd"

    @property
    def uses_cron(self) -> bool:
        """cron runs something here: the jobs, or the hourly log rotation of a web host,
        where systemd does not run."""
        return self.jobs_by_cron or (self.facts.pid1 != "systemd" and (self.is_app or "lb" in self.roles))

    @property
    def site_port(self) -> int:
        """Where this host's app site listens: listen_port alone, app_port behind load balancers."""
        return self.settings.app_port if self.behind_lbs else self.settings.listen_port

    def notify(self, handler: Handler) -> None:
        if handler not in self.notified:
            self.notified.append(handler)

    def settle(self, *handlers: Handler) -> None:
        """These handlers' work is done already (supervisor's update restarted the app)."""
        self.notified[:] = [n for n in self.notified if n not in handlers]

    def shell(self, files: list[str], function: str, *args: object, stdin: str = "") -> Shell:
        """A call of a function of deploy/remote/FILES, with every value it reads."""
        return scripts.call(files, function, *args, values=self.values, stdin=stdin)

    @property
    def values(self) -> dict[str, object]:
        """What the remote scripts read: the layout's paths and this host's settings (the
        app's environment depends on the facts: computed anew each time)."""
        s = self.settings
        names = [n for n in s.server_name.split() if n != "_" and "*" not in n]
        env = appenv.app_env(s, self.facts)
        return self.layout.values() | {
            "APP_ENV": "\n".join(f"{k}={v}" for k, v in env.items()),
            "APP_FILES": scripts.text("app_files.sh"),
            "BIND": self.bind,
            "HEALTH_PY": scripts.text("health.py"),
            "PRELOAD": "yes" if s.preload_app else "no",
            "PREPARE_PY": scripts.text("prepare_release.py"),
            "HEALTH_PATH": s.health_path,
            "HEALTH_HOST": names[0] if names else "localhost",
            "HEALTH_TIMEOUT": s.health_timeout,
            "HEALTH_STRICT": 1 if s.health_path else 0,
            "HEALTH_SCHEME": "https" if s.site_tls else "http",  # what nginx tells the app
            "HEALTH_RETRIES": s.health_retries,
            "LOCK_ALIVE": s.lock_timeout,  # the deploy lock's, on its host (deploy/lock.py)
            "BAD_ANSWERS": BAD_ANSWERS,
            "APT_WAIT": APT_WAIT,
            "WSGI_PACKAGE": s.wsgi_module.split(":")[0].split(".")[0],
            "DB_ROLE": "yes" if "db" in self.roles else "no",
            "DB_NAME": s.database_name,
            "DB_USER": s.database_user,
            "DB_PORT": s.db_port,
            "TLS_CERT": self.tls_paths[0],
            "TLS_KEY": self.tls_paths[1],
            "BACKGROUND": "yes" if self.is_app else "",
            "REDIS_ROLE": "yes" if self.runs_redis else "",
            "FIREWALL_ROLE": "yes" if self.firewall_here else "",
            "SITES": "yes" if self.is_app or self.serves_lb else "",
            "REDIS_PORT": REDIS_PORT,
            "MEDIA_ROLE": "yes" if self.shares_media else "",
            "MEDIA_PEERS": " ".join(s.inventory.addresses("app")),
            "MEDIA_SELF": self.member.address if self.member else "",
        }
