"""The app's environment: what gunicorn and manage.py see (names and paths, never a
secret's value), and the names Django accepts in a Host header."""

from __future__ import annotations

from deploy.facts import HostFacts
from deploy.layout import Layout
from deploy.settings import Settings


def allowed_hosts(settings: Settings, facts: HostFacts) -> list[str]:
    """Django's ALLOWED_HOSTS: the allowed_hosts setting if given, else the site's names
    from server_name (`*.example.com` as Django's `.example.com`); a `_` server_name (any
    name) gives this host's addresses and its load balancers'. Never `*`, unless set:
    a forged Host header then gets 400, not a password-reset link to the forger's site."""
    s = settings
    if s.allowed_hosts:
        return list(dict.fromkeys([*s.allowed_hosts, "localhost"]))
    names = [n.replace("*.", ".", 1) for n in s.server_name.split() if n != "_"]
    if not names or "_" in s.server_name.split():
        lbs = [m.address for m in s.inventory.with_role("lb")]
        addresses = [f"[{a}]" if ":" in a else a for a in [*facts.addresses, *lbs]]
        names += [*addresses, "127.0.0.1", "[::1]"]
    return list(dict.fromkeys([*names, "localhost"]))


def app_env(settings: Settings, facts: HostFacts) -> dict[str, str]:
    """The environment of every app process (gunicorn, manage.py, fab manage): what
    fabstack sets, then the env setting; no secret values, only their files' paths."""
    s, layout = settings, Layout.of(settings)
    return {
        "DJANGO_SETTINGS_MODULE": s.django_settings,
        "DJANGO_SECRET_KEY_FILE": layout.secret_key,
        "DJANGO_SECRET_KEY_FALLBACK_FILE": layout.secret_key_fallback,
        "DJANGO_ALLOWED_HOSTS": ",".join(allowed_hosts(s, facts)),
        "DJANGO_DB_PATH": layout.database,
        "DJANGO_MEDIA_ROOT": layout.media,
        "DJANGO_MEDIA_URL": s.media_url,
        "DJANGO_STATIC_URL": s.static_url,
        "FABSTACK_WORKER_CLASS": s.worker_class,
        **{f"DJANGO_{name}_FILE": layout.secret(name) for name in s.secrets},
        **(_postgresql(settings) if s.postgresql else {}),
        **({"DJANGO_HTTPS": "1", "DJANGO_HSTS_SECONDS": str(s.site_tls.hsts)} if s.site_tls else {}),
        **{name: str(value) for name, value in s.env.items()},
    }


def _postgresql(settings: Settings) -> dict[str, str]:
    """Where the app's PostgreSQL is (the password: DJANGO_DB_PASSWORD_FILE, a secret)."""
    dbs = settings.inventory.with_role("db")
    return {
        "DJANGO_DB_ENGINE": "postgresql",
        "DJANGO_DB_HOST": dbs[0].address if dbs else "127.0.0.1",
        "DJANGO_DB_PORT": str(settings.db_port),
        "DJANGO_DB_NAME": settings.database_name,
        "DJANGO_DB_USER": settings.database_user,
    }
