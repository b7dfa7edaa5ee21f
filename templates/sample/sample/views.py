"""One page that tells which server, release and worker class answered."""

import os
import socket
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse

PAGE = """<!doctype html>
<html><head><title>fabstack sample</title>
<link rel="stylesheet" href="{static}site.css"></head>
<body><h1>It works: Django behind gunicorn behind nginx</h1>
<p>host: <b id="host">{host}</b></p>
<p>release: <b id="release">{release}</b></p>
<p>worker class: <b id="worker">{worker}</b></p>
</body></html>
"""


def index(request):
    body = PAGE.format(
        static=settings.STATIC_URL,
        host=socket.gethostname(),
        release=Path(settings.BASE_DIR).name,
        worker=os.environ.get("FABSTACK_WORKER_CLASS", "unknown"),
    )
    response = HttpResponse(body)
    response["X-Served-By"] = socket.gethostname()
    return response
