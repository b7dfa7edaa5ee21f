"""The settings' types: one validator per kind of value, each accepting exactly what the
value means and returning the fix for anything else ('' when the value is right). The
schema (deploy/settings/schema.py) names one per setting; the loader turns a fix into
the one-line error that names the key, exit 2, before any host is touched."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from deploy.settings.inventory import METHODS

WORKER_CLASSES = ("sync", "gevent", "gthread")
LOGLEVELS = ("debug", "info", "warning", "error", "critical")


class SettingsError(Exception):
    """Bad input: the message names the value and the fix, on one line."""


def port(value: int) -> str:
    return "" if 1 <= value <= 65535 else "use a port from 1 to 65535"


def at_least(low: int) -> Callable[[int], str]:
    return lambda value: "" if value >= low else f"use a number >= {low}"


def workers(value: int | str) -> str:
    if value == "auto" or (isinstance(value, int) and value >= 1):
        return ""
    return "use a number >= 1, or auto (2 x the host's cores + 1)"


def http_url(value: str) -> str:
    if value and not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:_-]+(:[0-9]{1,5})?/?", value):
        return f"{value!r} is not a proxy URL; use http://HOST:PORT"
    return ""


def clock(value: str) -> str:
    if value and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        return f"{value!r} is not a time; use HH:MM (24 hours, the host's clock), e.g. 03:30"
    return ""


def size(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[kMG]?", value):
        return f"{value!r} is not a size; use a number of bytes with k, M or G, e.g. 100M"
    return ""


def one_of(*choices: str) -> Callable[[str], str]:
    return lambda value: "" if value in choices else f"use one of: {', '.join(choices)}"


def networks(value: list) -> str:
    for item in value:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return f"{item!r} is not an address or network; use e.g. 203.0.113.7 or 203.0.113.0/24"
    return ""


def unix_name(value: str) -> str:
    return (
        ""
        if re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value)
        else "use lowercase letters, digits, '-' or '_' (a Unix user name)"
    )


def worker_class(value: str) -> str:
    if value == "meinheld" or value.startswith("egg:meinheld"):
        return "meinheld is unmaintained since 2020 and does not install beside current gevent; use gevent"
    return one_of(*WORKER_CLASSES)(value)


def wsgi(value: str) -> str:
    ok = re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value)
    return "" if ok else "use module.path:callable, e.g. mysite.wsgi:application"


def bind(value: str) -> str:
    if not value or value.startswith("unix:"):
        return ""
    host, _, number = value.rpartition(":")
    if not host or not number.isdigit() or port(int(number)):
        return "use HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path"
    if host in ("0.0.0.0", "::", "[::]", "*"):
        return "gunicorn must be reachable only through nginx: bind to 127.0.0.1:PORT"
    return ""


def server_name(value: str) -> str:
    return (
        "" if re.fullmatch(r"[\w.*~^$\\-]+( [\w.*~^$\\-]+)*", value) else "use domain names separated by spaces, or _"
    )


def url_prefix(value: str) -> str:
    return "" if re.fullmatch(r"/[\w./-]*/", value) else "use a path that starts and ends with '/', e.g. /static/"


def url_path(value: str) -> str:
    return "" if re.fullmatch(r"(/[\w./?=&-]*)?", value) else "use a path that starts with '/', e.g. /healthz"


def lb_method(value: str) -> str:
    if value == "fair":
        return ("fair needs the third-party upstream_fair module, which Debian's and Ubuntu's nginx lack; "
                "least_conn is the built-in equivalent: use lb_method: least_conn")  # fmt: skip
    if value == "url_hash":
        return "url_hash is `hash $request_uri consistent` in today's nginx: use lb_method: hash"
    return "" if value in METHODS else f"use one of: {', '.join(METHODS)}"


def requirement(value: str) -> str:
    return "" if re.fullmatch(r"[<>=!~,.\w* ]*", value) else "use a pip version specifier such as >=5.2,<6"


# What fabstack itself gives the app: the env setting may not replace it.
RESERVED_ENV = ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOWED_HOSTS", "DJANGO_DB_PATH", "DJANGO_MEDIA_ROOT",
                "DJANGO_MEDIA_URL", "DJANGO_STATIC_URL", "DJANGO_HTTPS", "DJANGO_HSTS_SECONDS", "FABSTACK_WORKER_CLASS",
                "PATH", "HOME")  # fmt: skip


def pg_name(value: str) -> str:
    if value in ("postgres", "template0", "template1", "root"):
        return f"{value} is PostgreSQL's own; leave it empty (the app_name) or choose another"
    return "" if value == "" or re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value) else "use lowercase letters, digits and _"


def env(value: dict) -> str:
    for name, item in value.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            return f"env name {name!r}: use letters, digits and _"
        if name in RESERVED_ENV or str(name).endswith("_FILE"):
            return f"env.{name}: fabstack sets it; choose another name"
        if not isinstance(item, str | int | float | bool) or "\n" in str(item) or "\0" in str(item):
            return f"env.{name}: use one line of text (a number or word is fine)"
    return ""


def secrets(value: dict) -> str:
    for name, source in value.items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(name)):
            return f"secret name {name!r}: use UPPER_CASE letters, digits and _"
        if not isinstance(source, str) or not source.startswith(("env:", "file:")) or len(source) < 5:
            return f"secrets.{name}: use env:VARIABLE or file:PATH (on the machine running fab)"
    return ""
