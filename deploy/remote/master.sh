# The app's gunicorn master, as root finds it: from its process manager (systemd's
# MainPID, supervisor's pid), else from root's own record of the master it started
# under nohup. Never from a pidfile the app can write: a pid is trusted only when that
# process is a gunicorn running as the app user.
#
# Set before use: APP (the app user), UNIT and UNIT_FILE (systemd), PROGRAM and
# PROGRAM_FILE (supervisor), RECORD (root's pid file for nohup), CONFIG (gunicorn's).

# live PID: the process exists and is not a zombie.
live() {
    [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# is_master PID: PID is a gunicorn running as the app user.
is_master() {
    case $1 in '' | 0 | *[!0-9]*) return 1 ;; esac
    [ "$(stat -c %U "/proc/$1" 2>/dev/null)" = "$APP" ] &&
        tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q gunicorn
}

# alive: sets $pid to the master's pid and succeeds while it runs; else pid is empty.
# The last resort, for a master started before root kept its record, is the oldest of
# the app user's processes running this app's gunicorn config.
alive() {
    for pid in \
        "$([ -f "$UNIT_FILE" ] && systemctl show -p MainPID --value "$UNIT" 2>/dev/null)" \
        "$([ -f "$PROGRAM_FILE" ] && supervisorctl pid "$PROGRAM" 2>/dev/null)" \
        "$(cat "$RECORD" 2>/dev/null)" \
        "$(pgrep -o -u "$APP" -f -- "--config $CONFIG" 2>/dev/null)"; do
        if is_master "$pid"; then return 0; fi
    done
    pid=
    return 1
}
