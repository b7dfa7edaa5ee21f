"""Settings for the sample site. Paths and secrets come from the environment fabstack
sets (gunicorn's raw_env and the deploy commands), so the same code runs in any release."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

_key_file = os.environ.get("DJANGO_SECRET_KEY_FILE", "")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
if _key_file:
    SECRET_KEY = Path(_key_file).read_text().strip()
elif DEBUG:
    SECRET_KEY = "insecure-local-development-only"
else:
    raise RuntimeError("set DJANGO_SECRET_KEY_FILE (fabstack does) or DJANGO_DEBUG=1 for local use")

ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.staticfiles"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "sample.urls"
WSGI_APPLICATION = "sample.wsgi.application"
TEMPLATES = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = os.environ.get("DJANGO_STATIC_URL", "/static/")
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = os.environ.get("DJANGO_MEDIA_URL", "/media/")
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))
# nginx terminates the client connection and passes the scheme on.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
