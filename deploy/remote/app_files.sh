# Files in the app's own directories (its data, media, logs) are written by the app user,
# never by root: the app could have planted a symlink at any path there, and root would
# follow it. These functions run as the app user (Layout.as_app).

# refuse_link PATH: fail, naming PATH, when it is a symlink.
refuse_link() {
    if [ -L "$1" ]; then
        echo "refused $1: it is a symlink (to $(readlink "$1")), and fabstack follows none in the app's directories; remove it and run again" >&2
        exit 1
    fi
}

# put_file PATH MODE: standard input to PATH, atomically, with MODE; written aside under
# a name of its own, so two hosts writing one file of a shared volume never meet.
put_file() {
    refuse_link "$1"
    umask 077
    new=$(mktemp "$1.fabstack-new.XXXXXX") || exit 1
    cat > "$new" && chmod "$2" "$new" && mv -f "$new" "$1"
}

# rotate_secret PATH FALLBACK: PATH's secret becomes FALLBACK, and PATH a new one.
rotate_secret() {
    refuse_link "$1"
    refuse_link "$2"
    umask 077
    [ -s "$1" ] || { echo "no secret at $1 yet; run fab provision first" >&2 && exit 1; }
    cat "$1" > "$2.fabstack-new" && mv -f "$2.fabstack-new" "$2" && random_secret "$1"
}

# random_secret PATH: a new random secret at PATH, written aside and moved in whole.
random_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > "$1.fabstack-new" && mv -f "$1.fabstack-new" "$1"
}

# new_secret PATH: a random secret at PATH unless it holds one already; mode 600.
new_secret() {
    refuse_link "$1"
    umask 077
    if [ ! -s "$1" ]; then random_secret "$1"; fi
    chmod 600 "$1"
}

# copy_in FROM INTO: FROM's files copied into INTO (a farm's new shared media volume),
# with their times and modes; a name INTO holds already is kept, never overwritten.
copy_in() {
    cp -a -n "$1/." "$2/"
}
