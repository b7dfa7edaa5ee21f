"""The settings' types: one validator per kind of value, each accepting exactly what the
value means and returning the fix for anything else ('' when the value is right). The
schema (deploy/settings/schema.py) names one per setting; the loader turns a fix into
the one-line error that names the key, exit 2, before any host is touched."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

METHODS = ("round_robin", "least_conn", "ip_hash", "hash", "random")  # nginx's load-balancing methods
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


# Names the app's user, /srv/NAME and /var/log/NAME may not take, on any host: the
# accounts of the programs fabstack runs beside the app and the directories of
# /var/log they write (an app named nginx was handed nginx's logs). Every other account
# a host has (news, a person's) is refused on the host (steps/server.py: app_account).
SYSTEM_NAMES = frozenset({
    "root", "daemon", "bin", "sys", "www-data", "nobody", "nogroup", "_apt", "messagebus", "sshd", "postgres",
    "postgresql", "redis", "nginx", "supervisor", "letsencrypt", "certbot", "apt", "journal", "installer",
    "private", "unattended-upgrades", "fabstack", "adm", "sudo",
})  # fmt: skip


def unix_name(value: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value):
        return "use lowercase letters, digits, '-' or '_' (a Unix user name)"
    if value in SYSTEM_NAMES or value.startswith("systemd-"):
        return f"{value} is the system's own (an account or a program's /var/log/{value}); choose your app's name"
    return ""


def worker_class(value: str) -> str:
    if value == "meinheld" or value.startswith("egg:meinheld"):
        return "meinheld is unmaintained since 2020 and does not install beside current gevent; use gevent"
    return one_of(*WORKER_CLASSES)(value)


def wsgi(value: str) -> str:
    ok = re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value)
    return "" if ok else "use module.path:callable, e.g. mysite.wsgi:application"


def bind(value: str) -> str:
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        ok = re.fullmatch(r"/[\w.-]+(/[\w.-]+)*", path) and ".." not in path.split("/")
        return "" if ok else "use unix:/an/absolute/path for a socket (letters, digits, . - _)"
    if not value:
        return ""
    host, _, number = value.rpartition(":")
    if not host or not number.isdigit() or port(int(number)):
        return "use HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path"
    if host in ("0.0.0.0", "::", "[::]", "*"):
        return "gunicorn must be reachable only through nginx: leave bind unset (its unix socket) or bind to 127.0.0.1:PORT"
    return ""


# The edges' types: every value below crosses into a file root writes (an nginx site,
# pg_hba.conf, a unit, the app's environment), so each accepts exactly its grammar.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME = re.compile(rf"{LABEL}(?:\.{LABEL})*\.?")


def control_character(value: object, where: str) -> str:
    """The key path (apps.x.processes.worker.command) of the first string in value, a
    key or an item, that holds a control character; '' when none does."""
    if isinstance(value, str):
        return where if CONTROL.search(value) else ""
    if isinstance(value, dict):
        for key, item in value.items():
            found = control_character(str(key), where) or control_character(item, f"{where}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = control_character(item, f"{where}[{index}]")
            if found:
                return found
    return ""


def is_dns_name(value: str) -> bool:
    """A host name as DNS spells it: labels of letters, digits and '-', at most 253 characters."""
    return len(value) <= 253 and bool(DNS_NAME.fullmatch(value))


def is_address(value: str) -> bool:
    """An IP address (v4 or v6), nothing else."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def host_address(value: str) -> str:
    """Where the other hosts reach a host: an IP address or a host name."""
    return "" if is_address(value) or is_dns_name(value) else "use an IP address or a host name, e.g. 10.0.0.5"


def server_name(value: str) -> str:
    """nginx's server_name: DNS names (a leading `*.` or `.`, a trailing `.*`), or _.
    No regex names: one is nginx syntax of its own (write it in your templates_dir)."""
    for name in value.split(" "):
        core = name.removeprefix("*.").removeprefix(".").removesuffix(".*")
        if name != "_" and not is_dns_name(core):
            return (
                f"{name!r} is not a domain name; use domain names separated by spaces (*.example.com and "
                ".example.com too), or _"
            )
    return ""


def allowed_hosts(value: list) -> str:
    """Django's ALLOWED_HOSTS: host names (a leading `.` for subdomains), addresses, or *."""
    for item in value:
        text = str(item)
        bare = text.removeprefix(".")
        ipv6 = text.startswith("[") and text.endswith("]") and is_address(text[1:-1])
        if not (text == "*" or is_dns_name(bare) or is_address(text) or ipv6):
            return f"{text!r} is not a host; use host names (.example.com for its subdomains), addresses or *"
    return ""


def relative_path(value: str) -> str:
    """A path inside the project: relative, no '.' or '..' part, no space."""
    parts = value.split("/")
    if not re.fullmatch(r"[\w.+@-]+(/[\w.+@-]+)*", value) or any(p in (".", "..") for p in parts):
        return "use a path relative to the project root, without '..', e.g. staticfiles"
    return ""


def requirements_file(value: str) -> str:
    """A requirements file inside the project, or empty (requirements.txt, else pyproject.toml)."""
    if value and relative_path(value):
        return "use a path relative to the project root, without '..', e.g. requirements/production.txt"
    return ""


def debian_packages(value: list) -> str:
    """Debian package names (lowercase letters, digits, + - .; two characters at least)."""
    bad = [p for p in value if not isinstance(p, str) or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p)]
    if bad:
        return f"{bad[0]!r} is not a Debian package name; use names like build-essential, libpq-dev"
    return ""


def python_module(value: str) -> str:
    """A dotted Python module name, or empty (the default)."""
    if value and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", value):
        return "use a dotted module name, e.g. mysite.settings.production"
    return ""


def hash_key(value: str) -> str:
    """An nginx hash key: nginx variables ($request_uri, $cookie_sessionid) and plain
    characters, nothing that ends the directive or the block."""
    if len(value) > 200 or not re.fullmatch(r"(\$[A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9_.:-])+", value):
        return "use nginx variables and letters, digits or . : - _, e.g. $request_uri or $cookie_sessionid"
    return ""


def url_prefix(value: str) -> str:
    parts = value.strip("/").split("/")
    if not re.fullmatch(r"/[\w./-]*/", value) or any(p in (".", "..") for p in parts) or "//" in value:
        return "use a path that starts and ends with '/', without '..', e.g. /static/"
    return ""


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
        if not isinstance(source, str) or not source.startswith(("env:", "file:", "cmd:")) or len(source) < 5:
            return f"secrets.{name}: use env:VARIABLE, file:PATH or cmd:COMMAND (on the machine running fab)"
    return ""


HOOKS = ("pre_deploy", "post_deploy", "pre_provision", "post_provision", "on_failure", "post_rollback")


def hooks(value: dict) -> str:
    for name, path in value.items():
        if name not in HOOKS:
            return f"hooks.{name}: not a hook; the hooks are {', '.join(HOOKS)}"
        if not isinstance(path, str) or not path or path.startswith(("/", "~")) or ".." in path.split("/"):
            return f"hooks.{name}: give the path of a script in the project, relative to it (e.g. bin/{name}.sh)"
    return ""
