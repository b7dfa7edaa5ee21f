# What `fab status` adds to the facts: nginx's config test, the app's workers, uptime and
# health, gunicorn's worker class and the load balancer's upstream.
#
# Set before use: CONFIG (gunicorn's), LB_SITE (the load balancer's site), and what
# gunicorn.sh's health_check and alive read.

# status_health ADDRESS: `health=ok`, or the health check's last line.
status_health() {
    if r=$(health_check "$1" 2>&1); then r=ok; fi
    echo "health=$(echo "$r" | tail -n 1)"
}

# read_status ROLE ADDRESS: the status lines; an app host is checked when its app runs,
# a load balancer through itself.
# shellcheck disable=SC2154 # pid: set by alive (gunicorn.sh)
read_status() {
    nginx -t > /dev/null 2>&1 && echo nginx_test=ok
    if alive; then
        echo "workers=$(pgrep -c -P "$pid")"
        echo "uptime=$(ps -o etimes= -p "$pid" | tr -d ' ')s"
        status_health "$2"
    elif [ "$1" = lb ]; then
        status_health "$2"
    fi
    # what apt would upgrade now (from the lists it has; the security ones named), and
    # whether an installed update waits for a reboot
    pending=$(apt-get -s -o Debug::NoLocking=1 upgrade 2> /dev/null | grep '^Inst')
    echo "updates=$(printf '%s' "$pending" | grep -c .) $(printf '%s' "$pending" | grep -ci security)"
    [ -f /run/reboot-required ] && echo "reboot_required=yes"
    echo "worker_class=$(sed -n 's/^worker_class *= *//p' "$CONFIG" 2>/dev/null | tr -d '"')"
    echo "upstream=$(grep -E '^ *server [^{]*;$' "$LB_SITE" 2>/dev/null | sed 's/^ *server //; s/;$//' | paste -sd ,)"
    true
}
