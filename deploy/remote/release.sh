# Releases: the project unpacked and checked beside the live one, then named.
#
# Set before use: APP, VENV, RELEASES, APP_ENV (common.sh's app_run), PREPARE_PY
# (deploy/remote/prepare_release.py).

# In each release: the key of the static files' inputs they were collected from, then
# the directory they were collected to.
STATIC_KEY=.fabstack-static-key

# unpack_release ID ARCHIVE STATIC_DIR WSGI_MODULE STATIC_REGEX MIGRATE [BASE REMOVE]:
# releases/ID from the archive, made ready (deploy/remote/prepare_release.py: its wsgi
# module imported, so a broken app stops here before the live site is touched; migrated
# when MIGRATE is yes, a database of this host's own, a shared one being migrated once
# per deploy by migrate_release; static files collected), modes set, then named by a
# rename. A release that fails any check leaves nothing behind.
#
# With BASE, ARCHIVE holds only what differs from releases/BASE: the new release starts
# as hard links to BASE's files, less the names in REMOVE (NUL-separated: what changed,
# what is gone, and the bytecode of both), then the archive on top. Nothing is ever
# written through a link: every name that changes is removed first, Python replaces a
# bytecode file rather than rewriting it, and root's modes are the ones BASE has. When
# the static files' inputs are BASE's (the same key), BASE's collected files are linked
# rather than collected again.
#
# One unpack of a release at a time (flock): a run whose connection dropped leaves its
# commands running on the host, and a rerun's unpack removed the directory the first was
# still filling, or had it renamed away under its own import ("No module named
# 'fabstack_settings'"). The rerun waits for it, and is done if it finished the release.
unpack_release() {
    partial="$RELEASES/.$1.partial"
    static="$partial/$3"
    lock="$RELEASES/.$1.lock"
    base=${7:+$RELEASES/$7}
    exec 9> "$lock" && flock 9 || return
    if [ -d "$RELEASES/$1" ]; then
        rm -f "$lock"
        return 0
    fi
    {
        rm -rf "$partial" && release_start "$partial" "$base" "$3" "${8:-}" &&
            tar -xzf "$2" -C "$partial" --no-same-owner &&
            install -d -o "$APP" -g "$APP" -m 755 "$static" &&
            base_key=$(head -n 1 "$base/$STATIC_KEY" 2> /dev/null || true) &&
            out=$(app_run "$partial" "$VENV/bin/python" -c "$PREPARE_PY" "$4" "$6" "$base_key") &&
            key=$(printf '%s\n' "$out" | sed -n 's/^fabstack-static-key=//p') &&
            { printf '%s\n' "$out" | grep -v '^fabstack-static-key=' || true; } &&
            static_linked "$static" "$base/$3" "$key" "$base_key" &&
            printf '%s\n%s\n' "$key" "$3" > "$partial/$STATIC_KEY" &&
            { "$VENV/bin/python" -m compileall -q -x "$5" "$partial" > /dev/null || true; } &&
            release_modes "$partial" "$static" &&
            static_path_open "$partial" "$3" &&
            mv -T "$partial" "$RELEASES/$1" &&
            rm -f "$lock"
    } || {
        status=$?
        rm -rf "$partial" "$lock"
        return "$status"
    }
}

# release_start PARTIAL BASE STATIC_DIR REMOVE: an empty directory, or (with BASE) hard
# links to BASE's files but its collected static files (where BASE collected them, which
# a changed static_dir moves) and its static key, less the names in REMOVE.
release_start() {
    if [ -z "$2" ]; then
        mkdir -p "$1"
        return
    fi
    base_static=$(sed -n 2p "$2/$STATIC_KEY" 2> /dev/null)
    cp -al "$2" "$1" && rm -rf "${1:?}/$3" "${1:?}/${base_static:-$3}" "${1:?}/$STATIC_KEY" &&
        (cd "$1" && xargs -0 rm -rf -- < "$4")
}

# static_linked STATIC BASE_STATIC KEY BASE_KEY: with the base release's static key,
# its collected files (root's) linked in place of the empty directory the app left.
static_linked() {
    [ -n "$3" ] && [ "$3" = "$4" ] || return 0
    rm -rf "$1" && cp -al "$2" "$1"
}

# read_manifest ID: releases/ID's manifest (nothing for a release made before it had one).
read_manifest() {
    cat "$RELEASES/$1/.fabstack-files" 2> /dev/null || true
}

# migrate_release ID: the shared database migrated by releases/ID (once per deploy,
# before any host switches; what it applied goes to stdout).
migrate_release() {
    app_run "$RELEASES/$1" "$VENV/bin/python" manage.py migrate --noinput
}

# release_modes RELEASE STATIC: the code root:APP with no world bits (the app reads it,
# nobody else does, nobody but root writes it); the collected static files root's and
# world-readable (nginx serves them; the app collected them but cannot rewrite them),
# with no symlink the app may have left among them. chown -h, chmod -R and find -P never
# follow one. (Root compiled the code before, never inside the static files.)
release_modes() {
    chown -R -h "root:$APP" "$1" && chmod -R u+rwX,g+rX,g-w,o-rwx "$1" &&
        chown -R -h root:root "$2" && find "$2" -type l -delete && chmod -R u+rwX,go+rX,go-w "$2"
}

# static_path_open RELEASE STATIC_DIR: others (nginx's worker user) may pass through the
# directories down to the static files, and read nothing else of the release.
static_path_open() {
    path=$1
    dirs=$1
    rest=${2#/}
    rest=${rest%/}
    while case $rest in */*) true ;; *) false ;; esac do
        path="$path/${rest%%/*}"
        rest=${rest#*/}
        dirs="$dirs $path"
    done
    # shellcheck disable=SC2086 # paths without spaces (settings are validated)
    chmod o+x $dirs
}

# check_gunicorn_config CONFIG RELEASE WSGI_MODULE: gunicorn itself accepts CONFIG and
# loads the app from RELEASE with it, as the app user with the app's environment.
# gunicorn refuses a config whose `chdir` does not exist before --chdir overrides it:
# on a host that never served a release (no `current` yet) a copy naming RELEASE is
# checked instead, root's in root's config directory.
check_gunicorn_config() {
    checked=$1
    if [ ! -e "$CURRENT" ]; then
        checked=${1%/*}/.gunicorn-check.py
        install -o root -g "$APP" -m 640 /dev/null "$checked" &&
            sed "s|^chdir = .*|chdir = \"$2\"|" "$1" > "$checked" || return 1
    fi
    out=$(app_run "$2" "$VENV/bin/gunicorn" --check-config --config "$checked" --chdir "$2" 2>&1)
    status=$?
    [ "$checked" = "$1" ] || rm -f "$checked"
    if [ "$status" -ne 0 ]; then
        echo "$out" | tail -n 15
        echo "gunicorn rejected the new config (wsgi_module $3): $(echo "$out" | grep -v '^ ' | tail -n 1); the app keeps running on the old one (a new project? fab deploy tries the config with the release it uploads)"
        return 1
    fi
}

# remove_releases ID...: old releases gone.
remove_releases() {
    for id; do rm -rf "${RELEASES:?}/$id" || return; done
}

# read_release_records: `record.ID=COMMIT<tab>TIME<tab>SUBJECT` for each release that
# has a record (releases made before fabstack kept one have none).
read_release_records() {
    for record in "$RELEASES"/*/.fabstack-release; do
        [ -f "$record" ] || continue
        id=${record%/.fabstack-release}
        echo "record.${id##*/}=$(head -n 1 "$record")"
    done
}
