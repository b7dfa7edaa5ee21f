# Django's SECRET_KEY of an app that several app hosts serve: one for the whole farm, so
# a session, a password-reset link or a signed cookie made on one host is good on every
# other. It is made once on the farm's key host (its db host, else its first app host),
# in root's records, then read into fab's memory and given to every app host as the
# app's secret file (deploy/invocation.py), as the database password is.
#
# Set before use: FARM_KEY.

# farm_secret_key MAKE: the farm's key on stdout (nothing when there is none yet); with
# MAKE yes, made first when there is none (a dry run only reads).
farm_secret_key() {
    if [ "$1" = yes ] && [ ! -s "$FARM_KEY" ]; then
        install -d -o root -g root -m 750 "${FARM_KEY%/*}" || return 1
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > "$FARM_KEY.new") &&
            mv -f "$FARM_KEY.new" "$FARM_KEY" || return 1
    fi
    if [ -s "$FARM_KEY" ]; then cat "$FARM_KEY"; fi
}
