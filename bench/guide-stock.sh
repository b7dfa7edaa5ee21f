#!/bin/sh
# The guide's site for a stock Django project (startproject: the admin and its static
# files), the yardstick of bench/run.py --kinds serve. Run as root on a host bench/plain.sh
# set up (nginx, the virtualenv), with the project at /tmp/stock-app.tgz.
#
# Usage: sh -s PACKAGE < bench/guide-stock.sh (PACKAGE: the project's settings package)
set -eu
package=$1
if pkill -f 'gunicorn '; then
    for _ in $(seq 100); do pgrep -f 'gunicorn ' >/dev/null || break; sleep 0.1; done
fi
rm -rf /srv/plain/stock
mkdir -p /srv/plain/stock
tar -xzf /tmp/stock-app.tgz -C /srv/plain/stock
cd /srv/plain/stock
# what a person following the guide edits: DEBUG off, the host names, where static goes
cat > guide_settings.py <<SETTINGS
from $package.settings import *
DEBUG = False
ALLOWED_HOSTS = ["*"]
STATIC_ROOT = "/srv/plain/stock/static"
SETTINGS
export DJANGO_SETTINGS_MODULE=guide_settings
/srv/plain/venv/bin/python manage.py collectstatic --noinput -v 0
cat > /etc/nginx/sites-enabled/default <<'SITE'
server {
    listen 80 default_server;
    location /static/ { alias /srv/plain/stock/static/; }
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
SITE
nohup /srv/plain/venv/bin/gunicorn -w 4 -k gevent -b 127.0.0.1:8000 "$package.wsgi:application" \
    > /srv/plain/gunicorn.log 2>&1 &
nginx -t -q
nginx -s reload
for _ in $(seq 100); do
    if curl -fsS -o /dev/null http://127.0.0.1/admin/login/; then exit 0; fi
    sleep 0.1
done
echo "the stock site did not answer" >&2
exit 1
