"""The distribution packages fabstack installs: one place, read by the facts and by
the apt step."""

from __future__ import annotations

LB = ("nginx", "python3")  # python3: the health check a load balancer runs
APP = ("nginx", "python3", "python3-venv")
DB = ("postgresql",)
BY_MANAGER = {"supervisor": ("supervisor",)}  # what a process manager brings
KNOWN = tuple(dict.fromkeys([*APP, *LB, *DB, *(p for extra in BY_MANAGER.values() for p in extra)]))


def wanted(roles: frozenset[str] | set[str], manager: str) -> tuple[str, ...]:
    """The packages a host with these roles needs, its app kept running by manager."""
    wanted: tuple[str, ...] = ()
    if "app" in roles:
        wanted += APP + BY_MANAGER.get(manager, ())
    elif "lb" in roles:
        wanted += LB
    if "db" in roles:
        wanted += DB
    return tuple(dict.fromkeys(wanted))
