# nginx: a site installed only when `nginx -t` accepts it, and control that never
# starts or reloads a config that fails the test.
#
# Set before use: NGINX_DEFAULT, NGINX_DEFAULT_BACKUP (the guide's default.bak).

# private_logs: the app's nginx logs (its site's and its lb site's) readable by root and
# adm only from their first line, as logrotate's `create 0640 www-data adm` makes them
# after: nginx would create them 644, open to every other app's user until the first
# rotation. NGINX_LOGS is root's alone, so nothing there is another user's link.
private_logs() {
    for log in access.log error.log lb-access.log lb-error.log; do
        if [ -f "$NGINX_LOGS/$log" ]; then
            chgrp adm "$NGINX_LOGS/$log" && chmod 640 "$NGINX_LOGS/$log" || return 1
        else
            install -o www-data -g adm -m 640 /dev/null "$NGINX_LOGS/$log" || return 1
        fi
    done
}

# apply_site STAGED SITE LINK [REMOVE...]: STAGED becomes SITE, enabled by LINK, with the
# links in REMOVE gone; then nginx -t. When the test fails, every file and link is put
# back as it was and the step fails with nginx's own message.
apply_site() {
    site=$2
    link=$3
    if [ -e "$NGINX_DEFAULT" ] && [ ! -e "$NGINX_DEFAULT_BACKUP" ]; then
        cp -p "$NGINX_DEFAULT" "$NGINX_DEFAULT_BACKUP" || return 1
    fi
    rm -f "$site.fabstack-prev"
    if [ -e "$site" ]; then cp -p "$site" "$site.fabstack-prev" || return 1; fi
    install -d -o root -g adm -m 755 "$NGINX_LOGS" || return 1 # as /var/log/nginx: workers reopen in it
    private_logs || return 1
    had_link=$(readlink "$link" || true)
    install -o root -g root -m 644 "$1" "$site" || return 1
    shift 3
    removed=
    for other; do
        target=$(readlink "$other" || true)
        if [ -n "$target" ]; then removed="$removed $other=$target"; fi
    done
    if [ "$had_link" != "$site" ]; then ln -sfn "$site" "$link" || return 1; fi
    rm -f "$@"
    if ! out=$(nginx -t -q 2>&1); then
        if [ -e "$site.fabstack-prev" ]; then mv -f "$site.fabstack-prev" "$site"; else rm -f "$site"; fi
        if [ "$had_link" = "$site" ]; then
            :
        elif [ -n "$had_link" ]; then
            ln -sfn "$had_link" "$link"
        else
            rm -f "$link"
        fi
        for pair in $removed; do ln -sfn "${pair#*=}" "${pair%%=*}"; done
        echo "nginx -t rejected the new site, previous config restored: $(echo "$out" | grep -m1 emerg || echo "$out" | tail -n1)" >&2
        return 1
    fi
    rm -f "$site.fabstack-prev"
}

# old_workers_busy: one of the workers in $old still accepts connections (a worker
# that is gone or "shutting down" accepts nothing).
old_workers_busy() {
    for w in $old; do
        case $(tr '\0' ' ' < "/proc/$w/cmdline" 2>/dev/null) in
            '' | *"shutting down"*) ;;
            *) return 0 ;;
        esac
    done
    return 1
}

# nginx_running: nginx runs the config on disk: started if down, else reloaded. Decided
# here, not from facts: apt may have started nginx since they were read. A reload is
# asynchronous: for a moment the old workers still accept connections with the old
# config, so done means every old worker is gone or shutting down (at most 10 s).
nginx_running() {
    nginx -t -q || return 1
    if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
        old=$(pgrep -P "$(cat /run/nginx.pid)" | tr '\n' ' ')
        service nginx reload || return 1
        for _ in $(seq 200); do
            old_workers_busy || return 0
            sleep 0.05
        done
    else
        service nginx start
    fi
}

# nginx_test_for ACTION: nginx -t passes; else ACTION is refused, with nginx's message.
nginx_test_for() {
    if ! out=$(nginx -t -q 2>&1); then
        echo "$out" >&2
        echo "nginx $1 refused: $(echo "$out" | grep -m1 emerg || echo "$out" | tail -n1)" >&2
        return 1
    fi
}

# nginx_control ACTION: the guide's `service nginx ACTION`; start, reload and restart are
# refused when the config test fails.
nginx_control() {
    case $1 in
        configtest) nginx -t ;;
        stop) service nginx stop ;;
        *) nginx_test_for "$1" && service nginx "$1" ;;
    esac
}
