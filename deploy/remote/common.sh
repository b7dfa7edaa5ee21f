# Helpers every remote script uses. Python sends them as a prelude: the layout's values
# as quoted assignments (deploy/scripts.py), these files, then one function call.
#
# Set before use: APP (the app user), APP_ENV (the app's environment, one NAME=VALUE
# per line; no secret values, only the paths of secret files).

# as_app DIR CMD...: CMD as the app user in DIR with a clean environment. Root hands
# anything inside a directory the app can write to this, never does it itself: the app
# could have put a symlink there (docs/security.md).
as_app() {
    as_app_dir=$1
    shift
    setpriv --reuid="$APP" --regid="$APP" --init-groups --reset-env env -C "$as_app_dir" "$@"
}

# app_run DIR CMD...: as_app, with the app's environment (gunicorn, manage.py).
app_run() {
    app_run_dir=$1
    shift
    # APP_ENV splits on newlines only; no value is a glob
    # shellcheck disable=SC2086
    (
        set -f
        IFS='
'
        as_app "$app_run_dir" $APP_ENV "$@"
    )
}

# manage ARG...: manage.py ARG... in the current release, as the app user with the app's
# environment (fab manage).
manage() {
    app_run "$CURRENT" "$VENV/bin/python" manage.py "$@"
}

# app_file FUNCTION ARG...: a function of app_files.sh (its text is $APP_FILES), run as
# the app user, so nothing the app planted in its own directories is followed by root.
app_file() {
    as_app / sh -c "$APP_FILES"'
"$@"' - "$@"
}

# install_file STAGED PATH OWNER GROUP MODE [CHECK ARG...]: STAGED becomes PATH
# atomically, with its owner and mode; with CHECK, only when `CHECK NEW ARG...` passes
# for the new file (what it prints goes to stderr, and the old file stays).
install_file() {
    install_new="$2.fabstack-new"
    install_path=$2
    # a directory of root's own that a package creates only on first use (certbot's hooks)
    [ -d "${2%/*}" ] || install -d -m 755 "${2%/*}" || return 1
    install -o "$3" -g "$4" -m "$5" "$1" "$install_new" || return 1
    shift 5
    if [ $# -gt 0 ]; then
        install_check=$1
        shift
        if ! "$install_check" "$install_new" "$@" >&2; then
            rm -f "$install_new"
            return 1
        fi
    fi
    mv -f "$install_new" "$install_path"
}

# put_app_file STAGED PATH MODE: STAGED becomes PATH in the app's own directories,
# written by the app user (an existing file someone else owns is handed to it first).
put_app_file() {
    owner=$(stat -c %U "$2" 2>/dev/null)
    if [ -n "$owner" ] && [ "$owner" != "$APP" ]; then chown -h "$APP:$APP" "$2" || return 1; fi
    app_file put_file "$2" "$3" < "$1"
}

# new_secret PATH: a random secret generated on the host by the app user (it never
# crosses the wire), unless PATH holds one already.
new_secret() {
    owner=$(stat -c %U "$1" 2>/dev/null)
    if [ -n "$owner" ] && [ "$owner" != "$APP" ]; then chown -h "$APP:$APP" "$1" || return 1; fi
    app_file new_secret "$1"
}

# install_dirs PATH:OWNER:GROUP:MODE...: each directory with its owner and mode.
install_dirs() {
    for spec; do
        d_mode=${spec##*:}
        spec=${spec%:*}
        d_group=${spec##*:}
        spec=${spec%:*}
        install -d -o "${spec##*:}" -g "$d_group" -m "$d_mode" "${spec%:*}" || return 1
    done
}

# live PID: PID is a running process (not a zombie).
live() {
    [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# gone_within PID SECONDS: wait until PID has exited; false if it still runs after SECONDS.
gone_within() {
    for _ in $(seq 1 $(($2 * 5))); do
        live "$1" || return 0
        sleep 0.2
    done
    ! live "$1"
}

# spawn_as_app DIR LOG ARGV...: ARGV under nohup in its own session (its pid is its
# process group) as the app user in DIR, with SPAWN_ENV (NAME=VALUE lines, may be empty)
# as its whole environment; sets $spawned to its pid (setsid, setpriv, env, sh and nohup
# all exec: a crash at start is seen at once). LOG is opened by the app user's shell,
# never by root's.
spawn_as_app() {
    spawn_dir=$1
    shift
    set -f
    spawn_ifs=$IFS
    IFS='
'
    # shellcheck disable=SC2086,SC2016 # SPAWN_ENV splits on newlines; expanded by the app's shell
    setsid setpriv --reuid="$APP" --regid="$APP" --init-groups --reset-env env -C "$spawn_dir" ${SPAWN_ENV:-} \
        sh -c 'log=$1; shift; exec nohup "$@" >> "$log" 2>&1' - "$@" < /dev/null > /dev/null 2>&1 &
    # shellcheck disable=SC2034 # read by the caller
    spawned=$!
    IFS=$spawn_ifs
    set +f
}

# timers_enabled TIMER...: systemd reads its units again; each timer runs, and starts at boot.
timers_enabled() {
    systemctl daemon-reload || return 1
    for timer; do systemctl enable -q --now "$timer" || return 1; done
}

# cron_started: the distribution's cron runs (a host without systemd: fabstack's jobs and
# its hourly log rotation).
cron_started() {
    pgrep -x cron > /dev/null || service cron start > /dev/null
}

# read_resources: free space (KB) on the filesystem that holds the app (or /) and where it
# is mounted, and the memory available (KB).
read_resources() {
    resources_on=/
    [ -d "$ROOT" ] && resources_on=$ROOT
    df -Pk "$resources_on" 2> /dev/null | awk 'NR == 2 { print "disk_free=" $4; print "disk_mount=" $6 }'
    awk '/^MemAvailable:/ { print "mem_available=" $2 }' /proc/meminfo
}

# root_dirs DIR...: each DIR made root's (mode 755) when missing, one level at a time;
# refused when one is a link or another user's (root never writes where another user
# could have made the path first): the lock's, the audit log's, the maintenance page's.
root_dirs() {
    for root_dir in "$@"; do
        if [ -L "$root_dir" ] || { [ -e "$root_dir" ] && [ "$(stat -c %u "$root_dir")" != 0 ]; }; then
            echo "$root_dir is not a directory of root's own; fabstack writes there only when it is" >&2
            return 1
        fi
        [ -d "$root_dir" ] || mkdir -m 755 "$root_dir" || return 1
    done
}
