#!/bin/sh
# One host's part of bench/plain.sh: the guide's steps, run as root on the host with the
# project already at /tmp/plain-app.tgz.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get -q update >/dev/null
apt-get -q install -y --no-install-recommends nginx python3 python3-venv >/dev/null
python3 -m venv /srv/plain/venv
# gunicorn[gevent]: the gevent worker needs packaging, which gunicorn 27 lists only there
/srv/plain/venv/bin/pip install -q django "gunicorn[gevent]" gevent
mkdir -p /srv/plain/app
tar -xzf /tmp/plain-app.tgz -C /srv/plain/app
head -c 32 /dev/urandom | base64 > /srv/plain/secret
cat > /etc/nginx/sites-enabled/default <<'SITE'
server {
    listen 80 default_server;
    location /static/ { alias /srv/plain/app/static/; }
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
SITE
cd /srv/plain/app
# a rerun (the next change, deployed the guide's way): the old gunicorn stopped first
if pkill -f 'gunicorn .*sample.wsgi'; then
    for _ in $(seq 100); do pgrep -f 'gunicorn .*sample.wsgi' >/dev/null || break; sleep 0.1; done
fi
/srv/plain/venv/bin/gunicorn -w 3 -k gevent -b 127.0.0.1:8000 --daemon \
    -e DJANGO_SECRET_KEY_FILE=/srv/plain/secret -e DJANGO_ALLOWED_HOSTS='*' sample.wsgi:application
nginx -t -q
if pgrep -x nginx >/dev/null; then nginx -s reload; else nginx; fi
for _ in $(seq 100); do
    if curl -fsS -o /dev/null http://127.0.0.1/; then exit 0; fi
    sleep 0.1
done
echo "the site did not answer" >&2
exit 1
