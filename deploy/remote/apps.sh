# Several apps on one host (issue 24): one app taken off, the others untouched.
#
# Set before use: APP (nginx.sh's values for nginx_running).

# remove_app PURGE: APP off this host, its processes already stopped: its nginx site
# (nginx -t without it first: a failing test puts it back and stops here), its units,
# programs, scheduled jobs and log rotation, its records in /etc/fabstack, its code and
# virtualenv. Its data (/srv/APP/shared: database, media, secrets) and logs stay, unless
# PURGE is yes: then they go too, with its user. Nothing of another app is touched: every
# path here is APP's own.
remove_app() {
    site=/etc/nginx/sites-available/$APP.conf
    link=/etc/nginx/sites-enabled/$APP.conf
    if [ -L "$link" ]; then
        rm -f "$link"
        if ! out=$(nginx -t -q 2>&1); then
            ln -sfn "$site" "$link"
            echo "nginx -t fails without $APP's site, which stays: $(echo "$out" | grep -m1 emerg || echo "$out" | tail -n1)" >&2
            return 1
        fi
        nginx_running || return
    fi
    rm -f "$site"
    units=$(ls -d /etc/systemd/system/gunicorn-"$APP".service /etc/systemd/system/fabstack-"$APP".* \
        /etc/systemd/system/fabstack-"$APP"-logrotate.* 2>/dev/null)
    if [ -n "$units" ] && [ "$(cat /proc/1/comm)" = systemd ]; then
        systemctl stop "fabstack-$APP.*" "fabstack-$APP-logrotate.*" "gunicorn-$APP.service" 2>/dev/null
        for unit in $units; do systemctl disable "${unit##*/}" > /dev/null 2>&1; done
    fi
    # shellcheck disable=SC2086 # paths without spaces
    rm -f $units
    [ -z "$units" ] || [ "$(cat /proc/1/comm)" != systemd ] || systemctl daemon-reload
    programs=$(ls -d /etc/supervisor/conf.d/gunicorn-"$APP".conf /etc/supervisor/conf.d/fabstack-"$APP".*.conf 2>/dev/null)
    if [ -n "$programs" ]; then
        # shellcheck disable=SC2086 # paths without spaces
        rm -f $programs
        supervisorctl update > /dev/null 2>&1 || true
    fi
    rm -f "/etc/cron.d/fabstack-$APP" "/etc/cron.d/fabstack-$APP-logrotate" "/var/lib/logrotate/fabstack-$APP.status"
    rm -rf "/etc/fabstack/$APP"
    for path in "/srv/$APP"/* "/srv/$APP"/.[!.]*; do
        [ -e "$path" ] || [ -L "$path" ] || continue
        [ "$path" = "/srv/$APP/shared" ] || rm -rf "$path"
    done
    if [ "$1" = yes ]; then
        rm -rf "/srv/$APP" "/var/log/$APP" "/var/log/nginx/$APP"
        if id "$APP" > /dev/null 2>&1; then userdel "$APP" || return; fi
    fi
}
