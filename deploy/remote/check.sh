# What `fab check` reads. gunicorn's owners and listeners come from every process
# running this app's gunicorn config and every process of the app user, never from a pid
# the app could forge.
#
# Set before use: APP, CONFIG, CURRENT, DATA, VENV, APP_ENV.

# read_ssh_checks: whether sshd takes passwords, and how root may log in (sshd -T: the
# settings in force, drop-ins included).
read_ssh_checks() {
    sshd -T 2> /dev/null | awk '$1 == "passwordauthentication" { print "ssh_passwords=" $2 }
        $1 == "permitrootlogin" { print "ssh_root=" $2 }'
}

# read_nginx_checks: nginx's config test and whether it hides its version.
read_nginx_checks() {
    if out=$(nginx -t 2>&1); then echo nginx_test=ok; else echo "nginx_test=$(echo "$out" | grep -m1 emerg)"; fi
    echo "server_tokens=$(nginx -T 2>/dev/null | grep -cE '^[[:space:]]*server_tokens[[:space:]]+off;')"
}

# read_app_checks SECRET...: the app user, gunicorn's owners and listeners, the secret
# files' modes (read as the app user), the data directory, Django's check --deploy.
read_app_checks() {
    echo "app_uid=$(id -u "$APP" 2>/dev/null)"
    masters=$(pgrep -d, -f -- "[b]in/gunicorn --config $CONFIG") # [b]: not this script itself
    [ -n "$masters" ] && echo "owners=$(ps -o user= -p "$masters" | sort -u | tr '\n' ' ')"
    pids=$(pgrep -d '|' -u "$APP")
    [ -n "$pids" ] && echo "listen=$(ss -Hltnp | grep -E "pid=($pids)," | awk '{print $4}' | sort -u | tr '\n' ' ')"
    # shellcheck disable=SC2016 # expanded by the app user's shell
    as_app / sh -c 'for f; do echo "secret.$f=$(stat -c "%U:%G %a" "$f" 2>/dev/null)"; done' - "$@"
    echo "data_dir=$(stat -c '%U:%G %a' "$DATA" 2>/dev/null)"
    if [ -e "$CURRENT" ]; then
        out=$(app_run "$CURRENT" "$VENV/bin/python" manage.py check --deploy 2>&1)
        echo "django_status=$?"
        echo "django_warnings=$(echo "$out" | grep -oE '^[^ ]*: \(security\.W[0-9]+\)' | grep -oE 'W[0-9]+' | tr '\n' ' ')"
        echo "django_error=$(echo "$out" | grep -m1 -E 'ERROR|Error')"
    fi
    true
}

# read_key_sha PATH: the sha256 of the app's SECRET_KEY file, read as the app user (the
# farm's one-key check compares it).
read_key_sha() {
    # shellcheck disable=SC2016 # expanded by the app user's shell
    echo "key_sha=$(as_app / sh -c 'sha256sum < "$1" | cut -d" " -f1' - "$1" 2> /dev/null)"
}

# read_media_writable: `media_writable=yes` when the app user may write its media
# directory (asked of the kernel; nothing is written).
read_media_writable() {
    as_app / test -w "$MEDIA" && echo "media_writable=yes"
    true
}

# read_db_reach ADDRESS PORT USER DATABASE: `db_reach=` what PostgreSQL at ADDRESS does
# when this host knocks (deploy/remote/pg_probe.py, in $PG_PROBE_PY).
read_db_reach() {
    echo "db_reach=$(python3 -c "$PG_PROBE_PY" "$1" "$2" "$3" "$4" 2>/dev/null)"
}

# read_records: every app's record of what it owns (its claims' `owns=`, as
# `owns.APP=`), and what is named as fabstack names things on this host: units in
# /etc/systemd/system and supervisor programs named gunicorn-* or fabstack-*, the sites
# nginx has enabled, cron files named fabstack-*, pg_hba.conf's rules, the users Redis's
# config files define. fab check explains each by a record.
read_records() {
    for f in /etc/fabstack/*/claims; do
        [ -f "$f" ] || continue
        app=${f%/claims}
        sed -n "s|^owns=|owns.${app##*/}=|p" "$f"
    done
    echo "found_units=$(find /etc/systemd/system -maxdepth 1 \( -name 'gunicorn-*' -o -name 'fabstack-*' \) -printf '%f ' 2> /dev/null)"
    echo "found_programs=$(find /etc/supervisor/conf.d -maxdepth 1 \( -name 'gunicorn-*' -o -name 'fabstack-*' \) -printf '%f ' 2> /dev/null)"
    echo "found_sites=$(find /etc/nginx/sites-enabled -mindepth 1 -maxdepth 1 ! -name default -printf '%f ' 2> /dev/null)"
    echo "found_cron=$(find /etc/cron.d -maxdepth 1 -name 'fabstack-*' -printf '%f ' 2> /dev/null)"
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        [ -f "$hba" ] && echo "found_pg_rules=$(awk '$1 == "local" || $1 == "host" {printf "%s:%s ", $2, $3}' "$hba")"
    done
    if [ -d /etc/redis ]; then
        echo "found_redis_users=$(grep -hoE '^user [^ ]+' /etc/redis/*.conf 2> /dev/null | awk '{print $2}' | sort -u | tr '\n' ' ')"
    fi
    true
}
