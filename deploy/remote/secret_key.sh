# Django's SECRET_KEY of an app that several app hosts serve: one for the whole farm, so
# a session, a password-reset link or a signed cookie made on one host is good on every
# other. It is made once on the farm's key host (its db host, else its first app host),
# in root's records, then read into fab's memory and given to every app host as the
# app's secret file (deploy/invocation.py), as the database password is.
#
# Set before use: FARM_KEY, FARM_KEY_FALLBACK.

# farm_secret_key MAKE: the farm's key on the first line of stdout (nothing when there
# is none yet), the key before the last rotation on the second (empty when none); with
# MAKE yes, the key made first when there is none (a dry run only reads).
farm_secret_key() {
    if [ "$1" = yes ] && [ ! -s "$FARM_KEY" ]; then
        install -d -o root -g root -m 750 "${FARM_KEY%/*}" || return 1
        new_root_secret "$FARM_KEY" || return 1
    fi
    if [ -s "$FARM_KEY" ]; then
        cat "$FARM_KEY"
        if [ -s "$FARM_KEY_FALLBACK" ]; then cat "$FARM_KEY_FALLBACK"; fi
    fi
}

# rotate_farm_key: the farm's key becomes its fallback (Django's SECRET_KEY_FALLBACKS:
# what it signed stays good), and a new key is made.
rotate_farm_key() {
    [ -s "$FARM_KEY" ] || { echo "no farm key at $FARM_KEY yet; run fab provision first" >&2 && return 1; }
    (umask 077 && cp "$FARM_KEY" "$FARM_KEY_FALLBACK.new") && mv -f "$FARM_KEY_FALLBACK.new" "$FARM_KEY_FALLBACK" &&
        new_root_secret "$FARM_KEY"
}

# new_root_secret PATH: a random secret at PATH, root's alone from its first byte.
new_root_secret() {
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > "$1.new") && mv -f "$1.new" "$1"
}

# rotate_secret_key KEY FALLBACK: the app's own key on a single host, rotated the same way
# by the app user, in the app's data directory.
rotate_secret_key() {
    app_file rotate_secret "$1" "$2"
}
