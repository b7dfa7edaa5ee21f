# A new release made ready, in one Python process as the app user in the release's
# directory (Django starts once, not once per command): the wsgi module imported as
# gunicorn imports it (a broken app stops here, before the live site is touched; the
# commands below then see the settings the served app sees), the database migrated
# (MIGRATE yes: a database of this host's own), and the static files collected unless
# their inputs are those of the release it was made from, then compressed once (a
# NAME.gz beside each text file it makes smaller: nginx's gzip_static serves it, with
# no compression per request).
#
# Usage: python -c "$PREPARE_PY" WSGI_MODULE MIGRATE BASE_KEY
# Prints `fabstack-static-key=KEY` last: KEY hashes what collectstatic's output depends
# on (Django's version, the static storage and its options, STATIC_URL, STATIC_ROOT in
# the release, and every file the finders list, by name and content). When KEY is
# BASE_KEY it collects nothing: root links the base release's collected files instead
# (deploy/remote/release.sh).
import gzip
import hashlib
import importlib
import os
import sys

wsgi_module, migrate, base_key = sys.argv[1], sys.argv[2] == "yes", sys.argv[3]
sys.path.insert(0, os.getcwd())
importlib.import_module(wsgi_module)

import django  # noqa: E402 (the project's settings are loaded by its wsgi module)
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

if migrate:
    call_command("migrate", interactive=False, verbosity=0)


# What is compressed: text (a browser asks for it gzip), not images or fonts already
# compressed. Part of the static key: a release made before compression never lends
# its files to one made after.
COMPRESSED = (".css", ".js", ".mjs", ".map", ".json", ".svg", ".txt", ".html", ".xml", ".ico", ".ttf", ".otf", ".eot")


def compress(root: str) -> None:
    """NAME.gz beside each text file under root it makes smaller, with NAME's time (the
    Last-Modified nginx sends for either)."""
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(COMPRESSED):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                data = file.read()
            packed = gzip.compress(data, 9, mtime=0)
            if len(packed) < len(data):
                with open(path + ".gz", "wb") as file:
                    file.write(packed)
                stat = os.stat(path)
                os.utime(path + ".gz", ns=(stat.st_atime_ns, stat.st_mtime_ns))


def static_key() -> str:
    """What collectstatic's output depends on, hashed ('' without the staticfiles app)."""
    if not apps.is_installed("django.contrib.staticfiles"):
        return ""
    from django.contrib.staticfiles.finders import get_finders
    from django.contrib.staticfiles.storage import staticfiles_storage

    storage = type(staticfiles_storage)
    options = getattr(settings, "STORAGES", {}).get("staticfiles", {})
    key = hashlib.sha256(
        f"{django.get_version()}\n{storage.__module__}.{storage.__qualname__}\n{options!r}\n{settings.STATIC_URL}\n"
        f"{os.path.relpath(settings.STATIC_ROOT or '.')}\n{COMPRESSED}\n".encode()
    )
    ignore = apps.get_app_config("staticfiles").ignore_patterns
    found: dict[str, str] = {}
    for finder in get_finders():
        for path, source in finder.list(ignore):
            name = os.path.join(getattr(source, "prefix", None) or "", path)
            if name not in found:  # collectstatic copies the first one found
                with source.open(path) as file:
                    found[name] = hashlib.sha256(file.read()).hexdigest()
    for name in sorted(found):  # in name order: directories list in any order
        key.update(f"{name}\0{found[name]}\n".encode())
    return key.hexdigest()[:32]


key = static_key()
if not key or key != base_key:
    call_command("collectstatic", interactive=False, verbosity=0)
    if settings.STATIC_ROOT and os.path.isdir(settings.STATIC_ROOT):
        compress(str(settings.STATIC_ROOT))
print(f"fabstack-static-key={key}")
