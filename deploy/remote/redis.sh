# Redis for the app (redis: true) on the db host or the single host: the distribution's
# redis-server, with fabstack's settings in two files its redis.conf includes (the
# listen addresses; the password, made on this host once). Root keeps the URL the app
# uses in its own directory, for the app hosts (read into fab's memory) and for the app
# on this host.
#
# Set before use: APP, REDIS_CONF, REDIS_AUTH, REDIS_URL_FILE, REDIS_PORT, REDIS_DEFAULT_OFF.

# read_redis_facts: whether redis.conf includes fabstack's files, whether Redis answers,
# whether the app has an ACL user of its own (`redis_acl=yes`), and the checksums of
# root's files.
read_redis_facts() {
    [ -f /etc/redis/redis.conf ] || return 0
    grep -qxF "include $REDIS_AUTH" /etc/redis/redis.conf && echo "redis_included=yes"
    m=
    read -r m 2> /dev/null < "$REDIS_URL_FILE"
    [ -n "$m" ] && [ "$(sed -n "s/^user $APP on #[0-9a-f]* //p" "$REDIS_AUTH" 2> /dev/null)" = "$(redis_rules "${m##*/}")" ] &&
        echo "redis_acl=yes"
    if redis-cli -p "$REDIS_PORT" ping 2>&1 | grep -qE 'PONG|NOAUTH'; then echo "redis=online"; else echo "redis=down"; fi
    file_facts "$REDIS_CONF" "$REDIS_AUTH" "$REDIS_URL_FILE"
}

# redis_rules DB: what the app's Redis user may do, on its database number DB: keys under
# `APP:` (the settings fabstack generates give Celery that prefix, for its channels too),
# pub/sub channels under `APP:` (SUBSCRIBE and PUBLISH match the pattern; a PSUBSCRIBE's
# pattern must stand in the list as it is written, so Celery's own are: its workers'
# remote control and its events), every command but @admin and @dangerous (no CONFIG GET
# of a password, no ACL SETUSER, no CONFIG REWRITE).
redis_rules() {
    echo "~$APP:* resetchannels &$APP:* &$APP:/$1.celery.pidbox &$APP:/$1.celeryev/* &$APP:/$1.celeryev/worker.* &$APP:/$1.celeryev/task.* +@all -@admin -@dangerous"
}

# redis_setup: the app's own ACL user on the shared Redis (redis_rules), with a password
# of its own (made once, never on a command line; REDIS_AUTH holds its sha256 only,
# root:redis 640); root's copy of the app's URL; a database number of the app's own,
# the first that no other app's URL holds. A user from before today's rules keeps its
# password and database. Once no app on this Redis uses its default user (the shared
# password before), that user is turned off (REDIS_DEFAULT_OFF).
redis_setup() {
    install -d -o root -g root -m 750 "${REDIS_URL_FILE%/*}" || return 1
    hash=$(sed -n "s/^user $APP on #\([0-9a-f]*\) .*/\1/p" "$REDIS_AUTH" 2> /dev/null)
    if [ ! -s "$REDIS_URL_FILE" ] || [ -z "$hash" ]; then
        used=''
        for f in /etc/fabstack/*/redis_url; do
            [ -s "$f" ] && [ "$f" != "$REDIS_URL_FILE" ] && used="$used $(sed 's|.*/||' "$f")"
        done
        db=0
        while echo " $used " | grep -q " $db "; do db=$((db + 1)); done
        [ "$db" -lt 16 ] || { echo "Redis here has no free database for $APP (16 apps hold them)" >&2 && return 1; }
        password=$(python3 -c 'import secrets; print(secrets.token_hex(24))') || return 1
        hash=$(printf %s "$password" | sha256sum) || return 1
        hash=${hash%% *}
        (umask 077 && echo "redis://$APP:$password@127.0.0.1:$REDIS_PORT/$db" > "$REDIS_URL_FILE.new") &&
            mv -f "$REDIS_URL_FILE.new" "$REDIS_URL_FILE" || return 1
    fi
    url=$(cat "$REDIS_URL_FILE") || return 1
    (umask 077 && echo "user $APP on #$hash $(redis_rules "${url##*/}")" > "$REDIS_AUTH.new") &&
        chown root:redis "$REDIS_AUTH.new" && chmod 640 "$REDIS_AUTH.new" && mv -f "$REDIS_AUTH.new" "$REDIS_AUTH" ||
        return 1
    for f in "$REDIS_CONF" "$REDIS_AUTH"; do
        grep -qxF "include $f" /etc/redis/redis.conf || echo "include $f" >> /etc/redis/redis.conf || return 1
    done
    redis_default_off
}

# redis_default_off: Redis's default user off (no password, no command) once no fabstack
# app's file still gives it the old shared password.
redis_default_off() {
    for f in /etc/redis/fabstack-*-auth.conf; do
        if [ -f "$f" ] && grep -q '^requirepass ' "$f"; then return 0; fi
    done
    if [ ! -s "$REDIS_DEFAULT_OFF" ]; then
        (umask 027 && echo "user default off resetpass nocommands" > "$REDIS_DEFAULT_OFF") &&
            chown root:redis "$REDIS_DEFAULT_OFF" || return 1
    fi
    grep -qxF "include $REDIS_DEFAULT_OFF" /etc/redis/redis.conf ||
        echo "include $REDIS_DEFAULT_OFF" >> /etc/redis/redis.conf
}

# redis_running ACTION: Redis running its config: started when down, else ACTION
# (restart, or nothing); waits until it answers.
redis_running() {
    if [ -d /run/systemd/system ]; then
        if [ "$1" = restart ]; then systemctl restart redis-server; else systemctl start redis-server; fi
    elif [ "$1" = restart ] || ! redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1; then
        service redis-server stop > /dev/null 2>&1
        service redis-server start > /dev/null
    fi
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping 2>&1 | grep -qE 'PONG|NOAUTH' && return 0
        sleep 0.2
    done
    echo "redis-server does not answer on port $REDIS_PORT; see /var/log/redis/redis-server.log" >&2
    return 1
}

# read_redis_url: root's copy of the app's URL, for the app hosts (never printed).
read_redis_url() {
    cat "$REDIS_URL_FILE"
}

# app_redis_url PATH: the app's copy of the URL where the app runs on this host, written
# by the app user from root's copy.
app_redis_url() {
    put_app_file "$REDIS_URL_FILE" "$1" 600
}

# redis_remove: APP's keys deleted (its database number goes back to the pool: a queue
# and a cache, not data a later app should find; as APP's own user, which may not
# FLUSHDB), its two files out of redis.conf and gone (fab remove on the Redis host), and
# Redis restarted without them.
redis_remove() {
    [ -f /etc/redis/redis.conf ] || return 0
    if [ -s "$REDIS_URL_FILE" ]; then
        url=$(cat "$REDIS_URL_FILE")
        creds=${url#redis://}
        creds=${creds%%@*}
        user=${creds%%:*}
        db=${url##*/}
        if [ -n "$user" ]; then
            REDISCLI_AUTH=${creds#*:} redis-cli -p "$REDIS_PORT" --user "$user" -n "$db" --scan --pattern "$APP:*" |
                REDISCLI_AUTH=${creds#*:} xargs -r redis-cli -p "$REDIS_PORT" --user "$user" -n "$db" del > /dev/null ||
                return 1
        else # the shared password of before: its default user may empty the database
            REDISCLI_AUTH=${creds#:} redis-cli -p "$REDIS_PORT" -n "$db" flushdb > /dev/null || return 1
        fi
    fi
    grep -qxF "include $REDIS_AUTH" /etc/redis/redis.conf || grep -qxF "include $REDIS_CONF" /etc/redis/redis.conf ||
        return 0
    grep -vxF -e "include $REDIS_CONF" -e "include $REDIS_AUTH" /etc/redis/redis.conf > /etc/redis/redis.conf.new &&
        chown --reference=/etc/redis/redis.conf /etc/redis/redis.conf.new &&
        chmod --reference=/etc/redis/redis.conf /etc/redis/redis.conf.new &&
        mv -f /etc/redis/redis.conf.new /etc/redis/redis.conf || return 1
    rm -f "$REDIS_CONF" "$REDIS_AUTH"
    redis_running restart
}
