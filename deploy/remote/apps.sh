# Several apps on one host (issue 24): one app taken off, the others untouched.
#
# Set before use: the layout's values (APP, ROOT, DATA, LOGS, NGINX_LOGS, NGINX_SITE, NGINX_LINK, LB_SITE, LB_LINK,
# UNIT_FILE, PROGRAM_FILE, LOGROTATE_UNIT, LOGROTATE_CONF, LOGROTATE_STATE, BACKUP_UNIT).

# remove_app PURGE: APP off this host, its processes already stopped: its nginx sites (app, lb)
# (nginx -t without it first: a failing test puts it back and stops here), its units,
# programs, scheduled jobs and log rotation, its records in /etc/fabstack, its code and
# virtualenv. Its data (/srv/APP/shared: database, media, secrets) and logs stay, unless
# PURGE is yes: then they go too, with its user. Nothing of another app is touched: every
# path here is APP's own.
remove_app() {
    for site in "$NGINX_SITE" "$LB_SITE"; do
        link=$NGINX_LINK
        [ "$site" = "$NGINX_SITE" ] || link=$LB_LINK
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
    done
    units=$(ls -d "$UNIT_FILE" /etc/systemd/system/fabstack-"$APP".* /etc/systemd/system/"$LOGROTATE_UNIT".* \
        /etc/systemd/system/"$BACKUP_UNIT".* 2>/dev/null)
    if [ -n "$units" ] && [ "$(cat /proc/1/comm)" = systemd ]; then
        systemctl stop "fabstack-$APP.*" "$LOGROTATE_UNIT.*" "$BACKUP_UNIT.*" "${UNIT_FILE##*/}" 2>/dev/null
        for unit in $units; do systemctl disable "${unit##*/}" > /dev/null 2>&1; done
    fi
    # shellcheck disable=SC2086 # paths without spaces
    rm -f $units
    [ -z "$units" ] || [ "$(cat /proc/1/comm)" != systemd ] || systemctl daemon-reload
    programs=$(ls -d "$PROGRAM_FILE" /etc/supervisor/conf.d/fabstack-"$APP".*.conf 2>/dev/null)
    if [ -n "$programs" ]; then
        # shellcheck disable=SC2086 # paths without spaces
        rm -f $programs
        supervisorctl update > /dev/null 2>&1 || true
    fi
    rm -f "/etc/cron.d/fabstack-$APP" "/etc/cron.d/$LOGROTATE_UNIT" "$LOGROTATE_STATE"
    rm -rf "${LOGROTATE_CONF%/*}" # /etc/fabstack/APP: its records
    for path in "$ROOT"/* "$ROOT"/.[!.]*; do
        [ -e "$path" ] || [ -L "$path" ] || continue
        [ "$path" = "${DATA%/*}" ] || rm -rf "$path" # all but shared/: data and media
    done
    if [ "$1" = yes ]; then
        rm -rf "$ROOT" "$LOGS" "$NGINX_LOGS"
        if id "$APP" > /dev/null 2>&1; then userdel "$APP" || return; fi
    fi
}
