# The deploy lock: one run at a time changes an app's hosts. It lives on one host per
# farm (the first lb, else the first app host): LOCK_DIR, root's, holds the record of
# who holds it (KEY=VALUE lines: who, task, release, message, state, since, holder),
# and a run holds flock(2) on LOCK_DIR itself for as long as its connection lives, so a
# run that dies lets go of the flock at once and leaves its record to be named.
# AUDIT_LOG gets one line per run that changed hosts. A run that changed nothing leaves
# nothing: the directories go with the lock when they are empty.
#
# Set before use: LOCK_DIR, AUDIT_LOG, LOCK_ALIVE.

# lock_record: the holder's record, and this host's clock (now=), for "held for 2m".
lock_record() {
    cat "$LOCK_DIR/lock" 2> /dev/null
    echo "now=$(date +%s)"
}

# lock_busy: `busy` and the holder's record. A run that has just taken the flock writes
# its record a moment later: until a record held by hand or by a live holder is there
# (2 s at most), the refusal would name nobody, or the run before.
lock_busy() {
    for _ in $(seq 1 20); do
        grep -qx 'state=manual' "$LOCK_DIR/lock" 2> /dev/null && break
        lock_holder=$(sed -n 's/^holder=//p' "$LOCK_DIR/lock" 2> /dev/null)
        [ -n "$lock_holder" ] && kill -0 "$lock_holder" 2> /dev/null && break
        sleep 0.1
    done
    echo busy
    lock_record
}

# lock_write RECORD STATE: the record, put in place at once.
lock_write() {
    printf '%s\nstate=%s\nsince=%s\nholder=%s\n' "$1" "$2" "$(date +%s)" "$$" > "$LOCK_DIR/lock.new" &&
        mv -f "$LOCK_DIR/lock.new" "$LOCK_DIR/lock"
}

# audit LINE...: each line appended to the audit log, after this host's time (UTC).
audit() {
    audit_time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    root_dirs "${AUDIT_LOG%/*/*}" "${AUDIT_LOG%/*}" || return 1
    [ -f "$AUDIT_LOG" ] || install -m 640 -o root -g adm /dev/null "$AUDIT_LOG" || return 1
    for audit_line in "$@"; do
        printf '%s %s\n' "$audit_time" "$audit_line" >> "$AUDIT_LOG" || return 1
    done
}

# lock_take: the flock on LOCK_DIR (fd 9) and no record held by hand; else `busy` and
# the record (exit 3). A record with no flock held is a run's that ended without
# releasing it: `left` and the record, then taken over.
lock_take() {
    for lock_try in 1 2 3; do
        root_dirs "${LOCK_DIR%/*}" "$LOCK_DIR" || return
        exec 9< "$LOCK_DIR"
        if ! flock -n 9 || grep -qx 'state=manual' "$LOCK_DIR/lock" 2> /dev/null; then
            lock_busy
            return 3
        fi
        # the run before may have let go and removed the directory just after this one
        # opened it: a flock on a removed directory is no lock; take the new one
        [ -d "$LOCK_DIR" ] && break
        [ "$lock_try" -lt 3 ] || return 1
    done
    if [ -f "$LOCK_DIR/lock" ]; then
        echo left
        lock_record
    fi
}

# lock_hold RECORD: hold the lock for one run of fab (RECORD: its who=, task=,
# release= lines). Prints `held` once it does. Then reads its input: `alive` every few
# seconds while fab runs, then the line `release` and audit lines after it: the lines
# are audited, the record removed, `released` printed. An input that ends without
# `release` (fab was killed, its connection closed), or is silent for LOCK_ALIVE
# seconds (its connection hangs, its machine sleeps), leaves the record for the next
# run to name and take over.
lock_hold() {
    lock_take || return
    lock_write "$1" held || return 1
    echo held
    lock_word=alive
    while [ "$lock_word" = alive ]; do
        # read stops at the newline on a pipe (one byte at a time): nothing after it is lost
        # shellcheck disable=SC2016 # $word is the inner shell's
        lock_word=$(timeout "$LOCK_ALIVE" sh -c 'IFS= read -r word && printf "%s" "$word"') || return 0
    done
    [ "$lock_word" = release ] || return 0
    while IFS= read -r lock_line; do
        audit "$lock_line" || return 1
    done
    lock_let_go
    echo released
}

# lock_let_go: the record removed, and LOCK_DIR and its parent too when nothing else is
# in them: a run that changed nothing (a refused one) leaves no trace on the host.
lock_let_go() {
    rm -f "$LOCK_DIR/lock"
    rmdir "$LOCK_DIR" 2> /dev/null && rmdir "${LOCK_DIR%/*}" 2> /dev/null
    true
}

# lock_set RECORD LINE: the lock held by hand (fab lock) until lock_clear; LINE audited.
lock_set() {
    lock_take || return
    lock_write "$1" manual || return 1
    audit "$2" || return 1
    echo held
}

# lock_clear LINE: fab unlock: a lock held by hand, or left by a run that was killed,
# removed and LINE audited (`was` and the record first); `none` when there is none; a
# lock a running fab holds: `busy` and its record (exit 3): it ends with that run.
lock_clear() {
    if [ ! -f "$LOCK_DIR/lock" ]; then
        echo none
        return 0
    fi
    root_dirs "${LOCK_DIR%/*}" "$LOCK_DIR" || return
    exec 9< "$LOCK_DIR"
    if ! flock -n 9; then
        lock_busy
        return 3
    fi
    echo was
    lock_record
    audit "$1" || return 1
    lock_let_go
}

# audit_tail N: the last N lines of the audit log (none yet: nothing).
audit_tail() {
    [ ! -f "$AUDIT_LOG" ] || tail -n "$1" "$AUDIT_LOG"
}
