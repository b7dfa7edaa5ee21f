# `fab logs`: the app's logs live in its own directory and are only ever read as the app
# user, so a link planted there shows root nothing; root reads its own and nginx's.
#
# Set before use: APP, UNIT, UNIT_FILE.

# SHOW_EACH: for each file given that is not empty, a header and its last $0 lines.
# shellcheck disable=SC2016 # expanded by the shell that runs it
SHOW_EACH='for f; do [ -s "$f" ] && { echo "==> $f <=="; tail -n "$0" "$f"; }; done; true'

# show_logs LINES JOURNAL APP_FILES ROOT_FILES: the last LINES lines of each log; the
# file lists are space-separated; with JOURNAL yes, systemd's journal of the unit too
# (it has what gunicorn printed before its own logging started).
# app_here: fail, saying so, when the app is not on this host (a misspelt --app, a host
# of another app): no logs is not an empty log.
app_here() {
    if ! id "$APP" > /dev/null 2>&1 || [ ! -d "$ROOT" ]; then
        echo "app $APP is not on this host: run fab provision, or name another with --app" >&2
        return 1
    fi
}

show_logs() {
    app_here || return 1
    # shellcheck disable=SC2086 # space-separated paths without spaces
    {
        [ -n "$3" ] && as_app / sh -c "$SHOW_EACH" "$1" $3
        sh -c "$SHOW_EACH" "$1" $4
    }
    if [ "$2" = yes ] && [ -f "$UNIT_FILE" ]; then
        echo "==> journalctl -u $UNIT <=="
        journalctl -u "$UNIT" -n "$1" --no-pager 2>/dev/null
    fi
    true
}

# FOLLOW: tail -F the files given that exist ($0 lines first).
# shellcheck disable=SC2016 # expanded by the shell that runs it
FOLLOW='for f; do shift; [ -e "$f" ] && set -- "$@" "$f"; done; [ $# -eq 0 ] || exec tail -n "$0" -F "$@"'

# follow_logs LINES APP_FILES ROOT_FILES: every new line until the session ends (both
# tails end with it: closing its terminal hangs them up).
follow_logs() {
    app_here || return 1
    # shellcheck disable=SC2086 # space-separated paths without spaces
    {
        [ -n "$2" ] && as_app / sh -c "$FOLLOW" "$1" $2 &
        sh -c "$FOLLOW" "$1" $3
    }
    wait
}
