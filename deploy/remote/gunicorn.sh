# The app's gunicorn master: found, started, stopped, reloaded and waited for, as root.
#
# Root finds the master from its process manager (systemd's MainPID, supervisor's pid),
# else from root's own record of the master it started under nohup. Never from a
# pidfile the app can write: a pid is trusted only when that process is a gunicorn
# running as the app user. Nothing is ever killed by name.
#
# Set before use (deploy/scripts.py): APP, VENV, CONFIG (gunicorn's), LOGS, STATE,
# RECORD (root's pid file for nohup), PASSED, UNIT and UNIT_FILE (systemd), PROGRAM and
# PROGRAM_FILE (supervisor), SUPERVISOR_LOG, BIND, HEALTH_PY (deploy/remote/health.py),
# HEALTH_PATH, HEALTH_HOST, HEALTH_TIMEOUT, HEALTH_STRICT, HEALTH_SCHEME, HEALTH_RETRIES, BAD_ANSWERS,
# PRELOAD (yes: the app's preload_app; a reload starts a new master).

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
        "$([ -f "$UNIT_FILE" ] && main_pid)" \
        "$([ -f "$PROGRAM_FILE" ] && supervisorctl pid "$PROGRAM" 2>/dev/null)" \
        "$(cat "$RECORD" 2>/dev/null)" \
        "$(pgrep -o -u "$APP" -f -- "--config $CONFIG" 2>/dev/null)"; do
        if is_master "$pid"; then return 0; fi
    done
    pid=
    return 1
}

# main_pid: the master systemd names as the unit's main process (0 when none runs).
main_pid() {
    systemctl show -p MainPID --value "$UNIT" 2>/dev/null
}

# record_master PID: root's record of the master it started under nohup, put in place at once.
record_master() {
    mkdir -p "$STATE" && echo "$1" > "$RECORD.new" && mv -f "$RECORD.new" "$RECORD"
}

# health_check ADDRESS: GET the health path from ADDRESS (deploy/remote/health.py):
# 0 healthy, 1 an answer that says no, 2 nothing answers.
health_check() {
    python3 -c "$HEALTH_PY" "$1" "${HEALTH_PATH:-/}" "$HEALTH_HOST" "$HEALTH_TIMEOUT" "$HEALTH_STRICT" "$HEALTH_SCHEME"
}

# app_logs_tail N: the last N lines of gunicorn's logs. The app's own log directory is
# read as the app user (root never opens a path the app could have linked elsewhere).
app_logs_tail() {
    {
        as_app / tail -q -n "$1" "$LOGS/error.log" "$LOGS/gunicorn.out"
        tail -q -n "$1" "$SUPERVISOR_LOG"
    } 2>/dev/null
}

# gave_up MODE: the app has exited for good. systemd restarted it (NRestarts passed
# $restarts, read right after the start) or marked it failed; supervisor backs off or
# gave up; otherwise the master root is waiting for ($master) died.
gave_up() {
    case $1 in
        systemd) systemctl is-failed -q "$UNIT" || [ "$(systemctl show -p NRestarts --value "$UNIT")" != "$restarts" ] ;;
        supervisor) supervisorctl status "$PROGRAM" 2>/dev/null | grep -qE 'BACKOFF|FATAL|EXITED' ;;
        reexec) ! live "$master" || { [ -n "$new" ] && ! live "$new"; } || [ "$asked" -ge 25 ] ;;
        *) [ -n "$master" ] && ! live "$master" ;;
    esac
}

# new_master: sets $new to the master the USR2 made: a child of $master born after it
# ($old lists those before) whose environment names $master as the master before it. A
# master still stopping a new master that failed, or made by the deploy before and not
# yet promoted (it promotes itself after the signal that wakes it), ignores USR2, so it
# is asked again every 0.4 s (5 s at most).
new_master() {
    [ -n "$new" ] && return 0
    for child in $(pgrep -P "$master"); do
        case " $old " in *" $child "*) continue ;; esac
        if tr '\0' '\n' < "/proc/$child/environ" 2>/dev/null | grep -qx "GUNICORN_PID=$master"; then
            new=$child
            return 0
        fi
    done
    asked=$((asked + 1))
    [ $((asked % 2)) -eq 0 ] && kill -USR2 "$master"
    return 1
}

# ready MODE: the manager itself says the app runs (supervisor leaves STARTING for
# RUNNING only after startsecs); after a reload, every old worker ($old) has gone.
ready() {
    case $1 in
        systemd) systemctl is-active -q "$UNIT" ;;
        supervisor) supervisorctl status "$PROGRAM" 2>/dev/null | grep -q RUNNING ;;
        reload)
            for w in $old; do live "$w" && return 1; done
            return 0
            ;;
        reexec) new_master && [ -n "$(pgrep -P "$new")" ] ;;
        *) true ;;
    esac
}

# wait_healthy WHAT MODE: poll every 0.2 s until the master answers its health check.
# Fail early when the app gave up, and after BAD_ANSWERS answers that say no: only
# silence (nothing listens yet) is worth waiting HEALTH_RETRIES polls for.
wait_healthy() {
    bad=0
    why=
    for _ in $(seq 1 "$HEALTH_RETRIES"); do
        if gave_up "$2"; then
            why=
            break
        fi
        if alive && ready "$2"; then
            answered_by=''  # after a USR2: the new master's workers only
            [ "$2" = reexec ] && answered_by=$new
            why=$(as_app / python3 -c "$HEALTH_PY" "$BIND" "${HEALTH_PATH:-/}" "$HEALTH_HOST" "$HEALTH_TIMEOUT" "$HEALTH_STRICT" "$HEALTH_SCHEME" ${answered_by:+"$answered_by"} 2>&1)
            case $? in
                0) return 0 ;;
                1)
                    bad=$((bad + 1))
                    [ "$bad" -ge "$BAD_ANSWERS" ] && break
                    ;;
            esac
        fi
        sleep 0.2
    done
    echo "last lines of gunicorn's logs:" >&2
    app_logs_tail 12 | tail -n 12 >&2
    echo "gunicorn $1 but does not answer: ${why:-its master exited}" >&2
    return 1
}

# start_app MANAGER: start gunicorn through MANAGER (nohup, systemd, supervisor) unless
# it runs, and wait until it answers.
start_app() {
    if alive; then return 0; fi
    rm -f "$RECORD"
    master=
    case $1 in
        nohup)
            # the master itself is $spawned; root records it in its own directory
            SPAWN_ENV='' spawn_as_app / "$LOGS/gunicorn.out" "$VENV/bin/gunicorn" --config "$CONFIG"
            # shellcheck disable=SC2154 # set by spawn_as_app (common.sh)
            master=$spawned
            record_master "$master"
            ;;
        systemd)
            # a manual start resets NRestarts (and reset-failed lifts the start limit an
            # earlier crash loop may have hit): the count right after it is the baseline
            systemctl reset-failed "$UNIT" 2> /dev/null
            systemctl start "$UNIT"
            restarts=$(systemctl show -p NRestarts --value "$UNIT")
            ;;
        supervisor) supervisorctl start "$PROGRAM" > /dev/null || true ;;
    esac
    wait_healthy started "$1"
}

# stop_app MANAGER: stop through MANAGER (nohup: TERM to the master), then confirm the
# master is gone (KILL after 30 s).
stop_app() {
    alive || {
        rm -f "$RECORD"
        return 0
    }
    case $1 in
        nohup) kill -TERM "$pid" ;;
        systemd) systemctl stop "$UNIT" ;;
        supervisor) supervisorctl stop "$PROGRAM" > /dev/null ;;
    esac
    gone_within "$pid" 30 || kill -KILL "$pid"
    rm -f "$RECORD"
}

# restart_app MANAGER: a new master (a new virtualenv, unit or bind needs one).
restart_app() {
    stop_app "$1" && start_app "$1"
}

# reload_app: HUP the master (it stays; every worker is replaced) and wait until every
# old worker has gone and the app answers. Fails (3) when no master runs.
reload_app() {
    alive || return 3
    [ "$PRELOAD" = yes ] && {
        reexec_app
        return
    }
    master=$pid
    old=$(pgrep -P "$master" | tr '\n' ' ')
    kill -HUP "$master"
    wait_healthy reloaded reload
}

# reexec_app: with preload_app the master holds the app's code, so a HUP would serve the
# release before. USR2 makes a new master beside it, which imports the app once and
# forks ready workers; once one of them answers the health check, the new master is the
# one systemd or root's record names, and the old master stops gracefully (its workers
# finish their requests). Unlike a HUP, which stops the old workers as it starts the
# new, some worker is ready at every moment. A new master that fails is stopped, and
# the old one serves on.
reexec_app() {
    master=$pid new='' asked=0
    # a master made by the deploy before is not promoted while the one before it is
    # still stopping (it ignores USR2 then): wait for that one to go (a second or two)
    parent=$(ps -o ppid= -p "$master" | tr -d ' ')
    is_master "$parent" && { gone_within "$parent" 30 || true; }
    old=$(pgrep -P "$master" | tr '\n' ' ')
    kill -USR2 "$master"
    if ! wait_healthy reloaded reexec; then
        [ -n "$new" ] && kill -TERM "$new" 2>/dev/null
        return 1
    fi
    if [ -f "$UNIT_FILE" ] && [ "$(main_pid)" = "$master" ]; then
        main_pid_is "$new" || {
            kill -TERM "$new"
            echo "systemd did not take gunicorn's new master $new as $UNIT's main process; the old one serves on" >&2
            return 1
        }
    else
        record_master "$new"
    fi
    kill -TERM "$master"
}

# main_pid_is PID: systemd takes PID as the unit's main process (MAINPID), told from a
# process root puts in the unit's own cgroup (NotifyAccess=all accepts only those). Told
# by the new master itself, systemd would lose the whole unit with it when it fails.
# The unit's cgroup is under /sys/fs/cgroup (cgroup v2), or under its unified and
# systemd hierarchies (a hybrid host): the helper joins it in each there is.
main_pid_is() {
    cgroup=$(systemctl show -p ControlGroup --value "$UNIT")
    for _ in 1 2 3 4 5; do
        python3 -c 'import os, socket, sys, time
for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
    if os.path.exists(root + sys.argv[1] + "/cgroup.procs"):
        with open(root + sys.argv[1] + "/cgroup.procs", "w") as procs:
            procs.write(str(os.getpid()))
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
    notify.connect("/run/systemd/notify")
    notify.sendall(b"MAINPID=" + sys.argv[2].encode())
time.sleep(0.1)  # systemd reads the sender cgroup while it lives' "$cgroup" "$1"
        [ "$(main_pid)" = "$1" ] && return 0
    done
    return 1
}

# serve_release TARGET MANAGER: `current` on TARGET, served: a graceful reload where the
# master runs (no request is dropped), else a start.
serve_release() {
    switch_current "$1" || return 1
    reload_app || start_app "$2"
}

# switch_current TARGET: the `current` link on TARGET, swapped atomically.
switch_current() {
    ln -sfn "$1" "$CURRENT.new" && mv -T "$CURRENT.new" "$CURRENT"
}

# health_passed ADDRESS ID: the health check from ADDRESS passes, then ID is recorded
# as the release that passed (one command: a deploy's last round trip).
health_passed() {
    health_check "$1" && record_passed "$2"
}

# record_passed ID: root's record of the release that last passed its health check.
record_passed() {
    mkdir -p "$STATE" && echo "$1" > "$PASSED.new" && mv -f "$PASSED.new" "$PASSED"
}

# start_supervisord: supervisord itself, when it does not run.
start_supervisord() {
    supervisorctl pid > /dev/null 2>&1 || service supervisor start > /dev/null
}

# supervisor_update: supervisord reads the program file; update adds (and so starts) a
# new program or restarts a changed one, then wait until it answers.
supervisor_update() {
    for _ in $(seq 50); do
        supervisorctl pid > /dev/null 2>&1 && break
        sleep 0.1
    done
    supervisorctl reread > /dev/null && supervisorctl update > /dev/null || return 1
    master=
    wait_healthy "started by supervisor" supervisor
}

# systemd_unit_changed: systemd reads the new unit file.
systemd_unit_changed() {
    systemctl daemon-reload
}

# enable_unit: the unit starts at boot.
enable_unit() {
    systemctl enable -q "$UNIT"
}

# remove_manager MANAGER: the app's unit or program file gone (another manager runs it).
remove_manager() {
    case $1 in
        systemd)
            systemctl disable -q --now "$UNIT"
            rm -f "$UNIT_FILE" && systemctl daemon-reload
            ;;
        supervisor)
            rm -f "$PROGRAM_FILE"
            supervisorctl update > /dev/null 2>&1
            true
            ;;
    esac
}
