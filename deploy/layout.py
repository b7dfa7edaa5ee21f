"""Where things live on a host: one place for every path fabstack manages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deploy.settings import Settings


@dataclass(frozen=True)
class Layout:
    app: str

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(settings.app_name)

    @property
    def root(self) -> str:
        return f"/srv/{self.app}"

    venv = property(lambda self: f"{self.root}/venv")
    releases = property(lambda self: f"{self.root}/releases")
    current = property(lambda self: f"{self.root}/current")
    # root's own records, in a root-owned directory: the app can write its run/ and data/
    # directories, so root never trusts a file there
    state = property(lambda self: f"{self.root}/state")
    passed = property(lambda self: f"{self.root}/state/passed-release")  # the release that last passed its check
    master_record = property(lambda self: f"{self.root}/state/master.pid")  # the master root started under nohup
    config = property(lambda self: f"{self.root}/config")
    gunicorn_conf = property(lambda self: f"{self.root}/config/gunicorn.conf.py")
    shared = property(lambda self: f"{self.root}/shared")
    media = property(lambda self: f"{self.root}/shared/media")
    # a farm's shared media: the app's GlusterFS volume, its brick on each app host (in
    # root's own directory), its mount unit (systemd names it after the path), and the
    # file at the volume's root that says it is mounted (nginx checks it)
    volume = property(lambda self: f"fabstack-{self.app}")
    brick = property(lambda self: f"/var/lib/fabstack/bricks/{self.app}")
    media_unit = property(lambda self: systemd_path_name(self.media) + ".mount")
    media_unit_file = property(lambda self: f"/etc/systemd/system/{self.media_unit}")
    media_marker = property(lambda self: f"{self.root}/shared/media/.fabstack-volume")
    data = property(lambda self: f"{self.root}/shared/data")
    secret_key = property(lambda self: f"{self.root}/shared/data/secret_key")
    # the key before the last `fab secret.rotate` (Django's SECRET_KEY_FALLBACKS)
    secret_key_fallback = property(lambda self: f"{self.root}/shared/data/secret_key_fallback")
    database = property(lambda self: f"{self.root}/shared/data/db.sqlite3")
    # gunicorn's sockets: the app's own directory, which only nginx (group www-data) may
    # enter, so no other local user (another app's) reaches gunicorn past nginx
    run = property(lambda self: f"{self.root}/run")
    socket = property(lambda self: f"{self.root}/run/gunicorn.sock")
    logs = property(lambda self: f"/var/log/{self.app}")
    # nginx's logs of the app's sites, in a directory of their own: rotated by fabstack's
    # rule (the distribution's rotates /var/log/nginx/*.log, never these)
    nginx_logs = property(lambda self: f"/var/log/nginx/{self.app}")
    # fabstack's log rotation: its own config and state, run hourly by a timer (or cron)
    logrotate_conf = property(lambda self: f"/etc/fabstack/{self.app}/logrotate.conf")
    # root's records of the app on the host: its claims, its log rotation, its secrets' copies
    records = property(lambda self: f"/etc/fabstack/{self.app}")
    # what this app holds on the host (names, bind, default server, what it owns), read by
    # the other apps' runs and by remove (deploy/manifest.py)
    claims = property(lambda self: f"/etc/fabstack/{self.app}/claims")
    logrotate_state = property(lambda self: f"/var/lib/logrotate/fabstack-{self.app}.status")
    logrotate_unit = property(lambda self: f"fabstack-{self.app}-logrotate")
    logrotate_cron = property(lambda self: f"/etc/cron.d/fabstack-{self.app}-logrotate")
    venv_marker = property(lambda self: f"{self.root}/venv/.fabstack-packages")
    requirements_marker = property(lambda self: f"{self.root}/venv/.fabstack-project-requirements")
    unit = property(lambda self: f"gunicorn-{self.app}.service")
    unit_file = property(lambda self: f"/etc/systemd/system/gunicorn-{self.app}.service")
    program = property(lambda self: f"gunicorn-{self.app}")
    program_file = property(lambda self: f"/etc/supervisor/conf.d/gunicorn-{self.app}.conf")
    # supervisord (root) opens its program's log: in its own root-owned directory, not the app's
    supervisor_log = property(lambda self: f"/var/log/supervisor/gunicorn-{self.app}.out")
    nginx_site = property(lambda self: f"/etc/nginx/sites-available/{self.app}.conf")
    nginx_link = property(lambda self: f"/etc/nginx/sites-enabled/{self.app}.conf")
    nginx_lb_site = property(lambda self: f"/etc/nginx/sites-available/{self.app}-lb.conf")
    nginx_lb_link = property(lambda self: f"/etc/nginx/sites-enabled/{self.app}-lb.conf")

    NGINX_DEFAULT = "/etc/nginx/sites-available/default"
    NGINX_DEFAULT_LINK = "/etc/nginx/sites-enabled/default"
    NGINX_DEFAULT_BACKUP = "/etc/nginx/sites-available/default.bak"
    # where root builds what other hosts of a kind get (a virtualenv, wheels): each build
    # in a new mktemp directory under this root-only one, never at a name under /tmp that
    # another user could have made first
    BUILDS = "/var/lib/fabstack/builds"
    # the deploy lock (deploy/lock.py) on the farm's lock host: root's directory, whose
    # flock a run holds, with the holder's record in it; and the audit log beside the logs
    lock_dir = property(lambda self: f"/var/lib/fabstack/{self.app}")
    audit_log = property(lambda self: f"/var/log/fabstack/{self.app}/audit.log")
    # fab maintenance on: the page the hosts that face the clients answer 503 with while
    # it exists (nginx tests for it at each request; the site's config never changes)
    maintenance_page = property(lambda self: f"/var/lib/fabstack/{self.app}/maintenance/index.html")
    APT_STAMP = "/var/lib/apt/periodic/update-success-stamp"
    # unattended security updates: apt's periodic switch, and fabstack's choice of updates
    AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
    APT_PROXY = "/etc/apt/apt.conf.d/95fabstack-proxy"  # the apt_proxy setting
    UNATTENDED_UPGRADES = "/etc/apt/apt.conf.d/52fabstack-unattended-upgrades"

    # the app's one SECRET_KEY for a farm of app hosts, on its key host (root's, 600)
    farm_key = property(lambda self: f"/etc/fabstack/{self.app}/secret_key")
    farm_key_fallback = property(lambda self: f"/etc/fabstack/{self.app}/secret_key_fallback")
    # root's copy of the app's database password on the db host (root:postgres 640)
    db_password_file = property(lambda self: f"/etc/fabstack/{self.app}/db_password")
    backups = property(lambda self: f"/var/backups/fabstack/{self.app}")  # root's copies of the app's data
    backup_unit = property(lambda self: f"fabstack-backup-{self.app}")  # its .service and .timer

    # background processes (the processes setting): their environment, root's file the
    # app can read; per process a systemd template unit or a supervisor program, named
    # with a dot (no app name, which may hold '-', can make another app's names match)
    app_env_file = property(lambda self: f"{self.root}/config/app.env")

    def bg_unit(self, name: str) -> str:
        return f"fabstack-{self.app}.{name}@"

    def bg_unit_file(self, name: str) -> str:
        return f"/etc/systemd/system/fabstack-{self.app}.{name}@.service"

    def bg_program(self, name: str) -> str:
        return f"fabstack-{self.app}.{name}"

    def bg_program_file(self, name: str) -> str:
        return f"/etc/supervisor/conf.d/fabstack-{self.app}.{name}.conf"

    # scheduled jobs (the schedule setting): systemd timers, or one cron file
    def job_unit(self, name: str) -> str:
        return f"fabstack-{self.app}.job-{name}"

    def logrotate_files(self) -> tuple[str, str]:
        unit = f"/etc/systemd/system/{self.logrotate_unit}"
        return f"{unit}.service", f"{unit}.timer"

    def job_files(self, name: str) -> tuple[str, str]:
        unit = f"/etc/systemd/system/{self.job_unit(name)}"
        return f"{unit}.service", f"{unit}.timer"

    cron_file = property(lambda self: f"/etc/cron.d/fabstack-{self.app}")
    job_runner = property(lambda self: f"{self.root}/config/run-job")  # cron's: one run at a time

    # Redis (redis: true) on the db host: fabstack's two files redis.conf includes, and
    # root's copy of the URL the app gets
    redis_conf = property(lambda self: f"/etc/redis/fabstack-{self.app}.conf")
    redis_auth = property(lambda self: f"/etc/redis/fabstack-{self.app}-auth.conf")
    redis_url_file = property(lambda self: f"/etc/fabstack/{self.app}/redis_url")
    REDIS_DEFAULT_OFF = "/etc/redis/fabstack-default-off.conf"  # the host's: Redis's default user off
    # its firewall on a farm's db host: an nftables table of the app's own, loaded by a unit
    firewall_file = property(lambda self: f"/etc/fabstack/{self.app}/firewall.nft")
    firewall_table = property(lambda self: f"fabstack_{self.app.replace('-', '_')}")
    firewall_unit = property(lambda self: f"fabstack-{self.app}-firewall.service")
    firewall_unit_file = property(lambda self: f"/etc/systemd/system/fabstack-{self.app}-firewall.service")

    # HTTPS: a certificate of your own (or a copy of the first lb's) in root's own directory;
    # one from ACME where certbot keeps it (its renewals replace the files behind live/)
    tls_certificate = property(lambda self: f"/etc/fabstack/{self.app}/tls/fullchain.pem")
    tls_key = property(lambda self: f"/etc/fabstack/{self.app}/tls/privkey.pem")
    acme_certificate = property(lambda self: f"/etc/letsencrypt/live/{self.app}/fullchain.pem")
    acme_key = property(lambda self: f"/etc/letsencrypt/live/{self.app}/privkey.pem")
    acme_ca = property(lambda self: f"/etc/fabstack/{self.app}/acme-ca.pem")  # trust for a private ACME server
    acme_hook = property(lambda self: f"/etc/letsencrypt/renewal-hooks/deploy/fabstack-{self.app}")
    certbot_dropin = property(lambda self: f"/etc/systemd/system/certbot.service.d/fabstack-{self.app}.conf")
    ACME_WEBROOT = "/var/www/fabstack-acme"  # nginx serves /.well-known/acme-challenge/ from here

    @staticmethod
    def pg_conf(version: str) -> str:
        """fabstack's part of PostgreSQL's config (Debian's postgresql.conf includes conf.d)."""
        return f"/etc/postgresql/{version}/main/conf.d/fabstack.conf"

    @staticmethod
    def pg_hba(version: str) -> str:
        return f"/etc/postgresql/{version}/main/pg_hba.conf"

    def values(self) -> dict[str, str]:
        """The paths the remote scripts read (deploy/remote/*.sh), by the names they use."""
        return {
            "APP": self.app, "ROOT": self.root, "VENV": self.venv, "VENV_MARKER": self.venv_marker,
            "REQUIREMENTS_MARKER": self.requirements_marker, "RELEASES": self.releases, "CURRENT": self.current,
            "STATE": self.state, "PASSED": self.passed, "RECORD": self.master_record, "CONFIG": self.gunicorn_conf,
            "DATA": self.data, "MEDIA": self.media, "LOGS": self.logs, "UNIT": self.unit, "UNIT_FILE": self.unit_file,
            "PROGRAM": self.program, "PROGRAM_FILE": self.program_file, "SUPERVISOR_LOG": self.supervisor_log,
            "NGINX_SITE": self.nginx_site, "NGINX_LINK": self.nginx_link, "LB_SITE": self.nginx_lb_site, "LB_LINK": self.nginx_lb_link, "NGINX_DEFAULT": self.NGINX_DEFAULT,
            "NGINX_DEFAULT_BACKUP": self.NGINX_DEFAULT_BACKUP, "APT_STAMP": self.APT_STAMP, "BUILDS": self.BUILDS,
            "DB_PASSWORD_FILE": self.db_password_file, "FARM_KEY": self.farm_key, "FARM_KEY_FALLBACK": self.farm_key_fallback, "DB_PATH": self.database, "BACKUPS": self.backups, "BACKUP_UNIT": self.backup_unit,
            "ACME_WEBROOT": self.ACME_WEBROOT, "REDIS_CONF": self.redis_conf, "REDIS_AUTH": self.redis_auth,
            "REDIS_URL_FILE": self.redis_url_file, "REDIS_DEFAULT_OFF": self.REDIS_DEFAULT_OFF, "FIREWALL_FILE": self.firewall_file,
            "FIREWALL_TABLE": self.firewall_table, "FIREWALL_UNIT": self.firewall_unit,
            "FIREWALL_UNIT_FILE": self.firewall_unit_file, "NGINX_LOGS": self.nginx_logs,
            "LOGROTATE_CONF": self.logrotate_conf, "LOGROTATE_STATE": self.logrotate_state,
            "LOGROTATE_UNIT": self.logrotate_unit, "VOLUME": self.volume, "BRICK": self.brick,
            "MEDIA_UNIT": self.media_unit, "MEDIA_UNIT_FILE": self.media_unit_file, "MEDIA_MARKER": self.media_marker,
            "LOCK_DIR": self.lock_dir, "AUDIT_LOG": self.audit_log, "MAINTENANCE_PAGE": self.maintenance_page,
        }  # fmt: skip

    def secret_files(self, names: Iterable[str]) -> list[str]:
        """Every secret file of the app: SECRET_KEY's, the key before the last rotation,
        and those of NAMES (the secrets setting); the facts and fab check read them all."""
        return [self.secret_key, self.secret_key_fallback, *(self.secret(n) for n in names if n != "SECRET_KEY")]

    def secret(self, name: str) -> str:
        """Where secret NAME lives on the host (SECRET_KEY: the secret_key file)."""
        return f"{self.data}/{name.lower()}"

    def directories(self) -> list[tuple[str, str, str, str]]:
        """(path, owner, group, mode) for every directory provision creates."""
        app = self.app
        return [
            (self.root, "root", "root", "755"),
            (self.releases, "root", "root", "755"),
            (self.config, "root", app, "750"),
            (self.state, "root", "root", "755"),
            (self.shared, "root", "root", "755"),
            (self.media, app, app, "755"),
            (self.data, app, app, "700"),
            (self.run, app, "www-data", "750"),
            (self.logs, app, "adm", "750"),
        ]


def systemd_path_name(path: str) -> str:
    """A path as systemd names its mount unit (systemd-escape --path): slashes become
    dashes, and every byte but [A-Za-z0-9:_.] is \\xNN (a leading dot too)."""
    out = []
    for i, byte in enumerate(path.strip("/").encode()):
        char = chr(byte)
        if char == "/":
            out.append("-")
        elif (char.isascii() and char.isalnum()) or char in ":_" or (char == "." and i > 0):
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out) or "-"
