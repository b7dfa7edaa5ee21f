"""The distribution packages fabstack installs: one place, read by the facts and by
the apt step."""

from __future__ import annotations

from collections.abc import Collection

LB = ("nginx", "python3", "logrotate")  # python3: the health check a load balancer runs
APP = ("nginx", "python3", "python3-venv", "logrotate")
DB = ("postgresql",)
REDIS = ("redis-server",)
FIREWALL = ("nftables",)  # Redis on a farm's db host: reachable by the app hosts only
TLS = ("openssl",)  # a host that ends TLS: its certificate read and checked
ACME = ("certbot",)  # the host that gets the certificate from an ACME CA
UPDATES = ("unattended-upgrades",)  # security updates by themselves (unattended_upgrades)
MEDIA = ("glusterfs-server",)  # a farm's shared media: a brick and a mount on every app host
CRON = ("cron",)  # scheduled jobs and log rotation on a host without systemd
BY_MANAGER = {"supervisor": ("supervisor",)}  # what a process manager brings
KNOWN = tuple(
    dict.fromkeys(
        [
            *APP,
            *LB,
            *DB,
            *REDIS,
            *FIREWALL,
            *UPDATES,
            *TLS,
            *ACME,
            *CRON,
            *MEDIA,
            *(p for extra in BY_MANAGER.values() for p in extra),
        ]
    )
)


def wanted(
    roles: Collection[str],
    manager: str,
    tls: str = "",
    redis: bool = False,
    cron: bool = False,
    firewall: bool = False,
    updates: bool = False,
    media: bool = False,
) -> tuple[str, ...]:
    """The packages a host with these roles needs, its app kept running by manager;
    tls: "acme" on the host that gets the certificate, "files" where one is put."""
    wanted: tuple[str, ...] = ()
    if "app" in roles:
        wanted += APP + BY_MANAGER.get(manager, ())
    elif "lb" in roles:
        wanted += LB
    if "db" in roles:
        wanted += DB
    if redis:
        wanted += REDIS
    if firewall:
        wanted += FIREWALL
    if updates:
        wanted += UPDATES
    if cron:
        wanted += CRON
    if media:
        wanted += MEDIA
    if tls:
        wanted += TLS + (ACME if tls == "acme" else ())
    return tuple(dict.fromkeys(wanted))
