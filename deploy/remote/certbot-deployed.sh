#!/bin/sh
# A program, not a library: installed on the ACME host as
# /usr/local/lib/fabstack/certbot-deployed and called by each app's certbot deploy hook
# with its certificate's lineage. After certbot renews that certificate (its timer, or
# fab tls.renew), nginx serves the new one. Never a reload with a config that fails
# nginx -t: the old certificate keeps being served, and certbot logs the error.
#
# certbot-deployed LINEAGE (certbot sets RENEWED_LINEAGE to the one it renewed)
set -u
[ "${RENEWED_LINEAGE:-}" = "$1" ] || exit 0
nginx -t -q || exit 1
if [ -d /run/systemd/system ]; then
    systemctl reload nginx
else
    service nginx reload
fi
