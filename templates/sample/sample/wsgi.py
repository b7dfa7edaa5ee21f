"""WSGI entry point, served by gunicorn as sample.wsgi:application (as in the guide)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample.settings")
application = get_wsgi_application()
