"""The inventory: hosts and their roles from the settings file, and the upstream block
the load balancers get from the app hosts.

Roles: `app` (gunicorn + Django behind the host's own nginx), `lb` (nginx with an
upstream of the app hosts) and `db` (PostgreSQL for the app hosts); a host may have
several. Without an inventory, hosts given with -H are single hosts: app and lb, one
nginx site straight to gunicorn (and db too with `database: postgresql`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deploy.connection import check_host_string
from deploy.settings.validators import host_address

ROLES = ("app", "lb", "db")
SINGLE = ("app", "lb")  # a host the inventory does not list
NO_BACKUP = ("ip_hash", "hash", "random")  # nginx refuses `backup` with these
HOST_KEYS = ("host", "roles", "address", "weight", "backup", "down", "max_fails", "fail_timeout", "max_conns")


class InventoryError(ValueError):
    """Bad inventory: the message names the entry and the fix."""


@dataclass(frozen=True)
class Member:
    host: str
    roles: tuple[str, ...]
    address: str
    weight: int = 1
    backup: bool = False
    down: bool = False
    max_fails: int | None = None
    fail_timeout: str | None = None
    max_conns: int | None = None

    def server_flags(self) -> str:
        flags = [f"weight={self.weight}"] if self.weight != 1 else []
        flags += [f"{name}={value}" for name in ("max_fails", "fail_timeout", "max_conns")
                  if (value := getattr(self, name)) is not None]  # fmt: skip
        flags += [name for name in ("backup", "down") if getattr(self, name)]
        return " ".join(flags)


@dataclass(frozen=True)
class Inventory:
    members: tuple[Member, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.members)

    def find(self, target: str) -> Member | None:
        """target's entry; None for a host given with -H that the inventory does not list."""
        return next((m for m in self.members if m.host == target), None)

    def roles_of(self, target: str) -> tuple[str, ...]:
        """A listed host has its roles; any other host is a single host: app and lb."""
        member = self.find(target)
        return member.roles if member else SINGLE

    def with_role(self, role: str) -> list[Member]:
        return [m for m in self.members if role in m.roles]

    def addresses(self, role: str) -> list[str]:
        """The addresses of the hosts with role, in the inventory's order."""
        return [m.address for m in self.with_role(role)]

    def app_clients(self) -> list[str]:
        """Where the app connects from, to PostgreSQL or Redis: each app host's address,
        or loopback on a single host (no inventory)."""
        return self.addresses("app") or ["127.0.0.1"]


def address_of(target: str) -> str:
    host = target.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.split(":")[0]


def parse(raw: list, method: str) -> Inventory:
    """Validate the `hosts` setting; raise InventoryError naming the bad entry."""
    members = [_member(i, entry) for i, entry in enumerate(raw)]
    _check_whole(members, method)
    return Inventory(tuple(members))


def _member(index: int, entry) -> Member:
    where = f"hosts[{index}]"
    if isinstance(entry, str):
        entry = {"host": entry}
    if not isinstance(entry, dict) or "host" not in entry:
        raise InventoryError(f"{where}: expected a mapping with at least `host: user@address`")
    unknown = sorted(set(entry) - set(HOST_KEYS))
    if unknown:
        raise InventoryError(f"{where}: unknown key {unknown[0]!r}; use: {', '.join(HOST_KEYS)}")
    host = str(entry["host"])
    try:
        check_host_string(host)
    except ValueError as exc:
        raise InventoryError(f"{where}: {exc}") from None
    roles = entry.get("roles", ["app"])
    if isinstance(roles, str):
        roles = [roles]
    if not roles or not set(roles) <= set(ROLES):
        raise InventoryError(f"{where} ({host}): roles={roles!r}; use a list of: app, lb, db")
    values = {key: entry[key] for key in HOST_KEYS[3:] if key in entry}
    _check_flags(where, host, values)
    if "fail_timeout" in values:
        values["fail_timeout"] = str(values["fail_timeout"])
    address = str(entry.get("address") or address_of(host))
    if host_address(address):  # it goes into pg_hba.conf, nginx's allow lines and the firewall's rules
        raise InventoryError(f"{where} ({host}): address={address!r}; {host_address(address)}")
    return Member(host=host, roles=tuple(r for r in ROLES if r in roles), address=address, **values)


def _check_flags(where: str, host: str, values: dict) -> None:
    for name in ("backup", "down"):
        if name in values and not isinstance(values[name], bool):
            raise InventoryError(f"{where} ({host}): {name}={values[name]!r}; use true or false")
    for name, low in (("weight", 1), ("max_fails", 0), ("max_conns", 0)):
        value = values.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InventoryError(f"{where} ({host}): {name}={value!r}; use a whole number >= {low}")
    timeout = values.get("fail_timeout", "10s")
    if not re.fullmatch(r"\d+(ms|s|m|h)?", str(timeout)):
        raise InventoryError(f"{where} ({host}): fail_timeout={timeout!r}; use seconds like 10 or 10s")


def _check_whole(members: list[Member], method: str) -> None:
    for attr in ("host", "address"):
        values = [getattr(m, attr) for m in members]
        duplicate = next((v for v in values if values.count(v) > 1), None)
        if duplicate:
            raise InventoryError(f"duplicate server {duplicate!r} in hosts; list each server once")
    if not members:
        return
    apps = [m for m in members if "app" in m.roles]
    if any("lb" in m.roles for m in members) and not apps:
        raise InventoryError("an lb host needs app hosts behind it: give at least one host roles: [app]")
    dbs = [m.host for m in members if "db" in m.roles]
    if len(dbs) > 1:
        raise InventoryError(
            f"two db hosts ({dbs[0]}, {dbs[1]}): fabstack runs one PostgreSQL; give one host roles: [db]"
        )
    if dbs and not apps:
        raise InventoryError("a db host needs app hosts: give at least one host roles: [app]")
    if method in NO_BACKUP:
        backups = [m.host for m in apps if m.backup]
        if backups:
            raise InventoryError(
                f"backup on {backups[0]} cannot be used with lb_method {method} (nginx refuses it); "
                "use round_robin or least_conn, or drop backup"
            )
