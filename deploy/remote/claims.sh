# Several apps on one host: one app taken off, the others untouched.
#
# Set before use: the layout's values (APP, ROOT, DATA, LOGS, NGINX_LOGS, NGINX_SITE, NGINX_LINK, LB_SITE, LB_LINK,
# LOGROTATE_CONF, BACKUPS, AUDIT_LOG, MAINTENANCE_PAGE).

# remove_app PURGE UNITS PROGRAMS CRON FILES TABLES: APP off this host, its processes
# already stopped: its nginx sites (app, lb) (nginx -t without it first: a failing test
# puts it back and stops here), then exactly what the app owns (deploy/manifest.py: each
# list space-separated, every name APP's own, never a pattern over names): its systemd
# units (stopped, disabled; a template's instances with it), supervisor programs, cron
# files, files, nftables tables, its records in /etc/fabstack, its code and virtualenv.
# Its data (/srv/APP/shared: database, media, secrets), logs and backups stay, unless
# PURGE is yes: then they go too, with its user.
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
    set -f # the lists are names, split on spaces, never globbed
    units_present=
    for path in $5; do
        case $path in /etc/systemd/system/*) [ -e "$path" ] && units_present=yes ;; esac
    done
    if [ -n "$units_present" ] && [ "$(cat /proc/1/comm)" = systemd ]; then
        for unit in $2; do
            case $unit in
                *@.service) systemctl stop "${unit%.service}*.service" 2> /dev/null ;;
                *) systemctl stop "$unit" 2> /dev/null ;;
            esac
            systemctl disable "$unit" > /dev/null 2>&1
        done
    fi
    programs_present=
    for path in $3; do [ -e "$path" ] && programs_present=yes; done
    for path in $4 $5; do rm -f "$path"; done
    [ -z "$units_present" ] || [ "$(cat /proc/1/comm)" != systemd ] || systemctl daemon-reload
    [ -z "$programs_present" ] || supervisorctl update > /dev/null 2>&1 || true
    for table in $6; do
        if nft list table inet "$table" > /dev/null 2>&1; then nft delete table inet "$table" || return 1; fi
    done
    set +f
    rmdir "${MAINTENANCE_PAGE%/*}" 2> /dev/null # the maintenance page's directory, when empty
    rm -rf "${LOGROTATE_CONF%/*}" # /etc/fabstack/APP: its records
    for path in "$ROOT"/* "$ROOT"/.[!.]*; do
        [ -e "$path" ] || [ -L "$path" ] || continue
        [ "$path" = "${DATA%/*}" ] || rm -rf "$path" # all but shared/: data and media
    done
    if [ "$1" = yes ]; then
        rm -rf "$ROOT" "$LOGS" "$NGINX_LOGS" "$BACKUPS" "${AUDIT_LOG%/*}"
        if id "$APP" > /dev/null 2>&1; then userdel "$APP" || return; fi
    fi
}
