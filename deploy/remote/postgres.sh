# PostgreSQL on the db host: its cluster, the app's role and database, the password.
#
# Set before use: APP, DB_PASSWORD_FILE (root's copy: root:postgres 640), DB_PORT,
# DB_NAME, DB_USER, BACKUPS, BACKUP_UNIT. read_db_facts runs inside the facts read (facts.sh's file_facts).

# read_db_facts: `pg=VERSION PORT STATUS` of the first cluster, the checksums of its
# config files fabstack writes, and whether the app's role and database exist and every
# role may connect to that database (`pg_objects=ROLES,DATABASES,PUBLIC` counts) when it runs.
# shellcheck disable=SC2046 # pg_lsclusters' columns, split on purpose
read_db_facts() {
    taken=$(ss -Hltnp "( sport = :$DB_PORT )" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)".*/\1/p' | grep -vx postgres | head -n 1)
    [ -n "$taken" ] && echo "db_port_taken_by=$taken"
    set -- $(pg_lsclusters -h 2>/dev/null | head -n 1)
    [ $# -ge 4 ] || return 0
    echo "pg=$1 $3 $4"
    file_facts "/etc/postgresql/$1/main/conf.d/fabstack.conf" "/etc/postgresql/$1/main/pg_hba.conf" "$DB_PASSWORD_FILE" \
        "/etc/systemd/system/$BACKUP_UNIT.service" "/etc/systemd/system/$BACKUP_UNIT.timer"
    # every app's access rules (several apps may share this db host): DB USER ADDRESS,...
    echo "pg_hba_rules=$(awk '$1 == "host" {printf "%s %s %s,", $2, $3, $4}' "/etc/postgresql/$1/main/pg_hba.conf" 2>/dev/null)"
    [ -f "/etc/systemd/system/$BACKUP_UNIT.timer" ] &&
        echo "backup_timer=$(systemctl is-active "$BACKUP_UNIT.timer" 2>/dev/null)"
    [ "$4" = online ] || return 0
    echo "pg_objects=$(runuser -u postgres -- psql -p "$3" -tAq -v u="$DB_USER" -v d="$DB_NAME" 2>/dev/null <<'SQL'
SELECT (SELECT count(*) FROM pg_roles WHERE rolname = :'u') || ',' || (SELECT count(*) FROM pg_database WHERE datname = :'d')
    || ',' || (SELECT count(*) FROM pg_database WHERE datname = :'d' AND has_database_privilege('public', oid, 'CONNECT'));
SQL
)"
}

# ensure_database: the app's password (made on this host, once), its login role with
# that password, and its database owned by it, which no other role may connect to
# (PostgreSQL lets PUBLIC connect to every database: another app's role could). The password reaches psql through
# psql's own backquote (postgres reads the file): never a command line or a log.
ensure_database() {
    if [ ! -s "$DB_PASSWORD_FILE" ]; then
        install -d -o root -g postgres -m 750 "$(dirname "$DB_PASSWORD_FILE")" || return 1
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$DB_PASSWORD_FILE.new") &&
            chown root:postgres "$DB_PASSWORD_FILE.new" && chmod 640 "$DB_PASSWORD_FILE.new" &&
            mv -f "$DB_PASSWORD_FILE.new" "$DB_PASSWORD_FILE" || return 1
    fi
    runuser -u postgres -- psql -p "$DB_PORT" -q -v ON_ERROR_STOP=1 -v u="$DB_USER" -v d="$DB_NAME" \
        -v pwfile="$DB_PASSWORD_FILE" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'u') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u')\gexec
\set pw `cat :'pwfile'`
ALTER ROLE :"u" WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d')\gexec
REVOKE CONNECT, TEMPORARY ON DATABASE :"d" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"d" TO :"u";
SQL
}

# read_db_password: root's copy of the password, for the app hosts (read into memory by
# fab, uploaded to each app host over SFTP; never printed).
read_db_password() {
    cat "$DB_PASSWORD_FILE"
}

# app_db_password PATH: the app's copy of the password on the db host itself (app and
# db on one host): written by the app user from root's copy.
app_db_password() {
    put_app_file "$DB_PASSWORD_FILE" "$1" 600
}

# postgres_running ACTION: PostgreSQL running its config: started when down, else
# ACTION (reload, restart or nothing).
# shellcheck disable=SC2046 # pg_lsclusters' columns, split on purpose
postgres_running() {
    set -- "$1" $(pg_lsclusters -h 2>/dev/null | head -n 1)
    if [ "$5" != online ]; then
        pg_ctlcluster "$2" "$3" start
    elif [ "$1" != none ]; then
        pg_ctlcluster "$2" "$3" "$1"
    fi
}

# read_db_checks: the addresses PostgreSQL listens on (`pg_listen=`) and the addresses
# its pg_hba.conf lets in over TCP to the app's database (`pg_clients=`), for fab check.
read_db_checks() {
    echo "pg_listen=$(ss -Hltn "( sport = :$DB_PORT )" 2>/dev/null | awk '{print $4}' | sort -u | tr '\n' ' ')"
    echo "pg_clients=$(cat /etc/postgresql/*/main/pg_hba.conf 2>/dev/null |
        awk -v d="$DB_NAME" '$1 ~ /^host/ && ($2 == d || $2 == "all") {print $4}' | sort -u | tr '\n' ' ')"
}

# SQLITE_COPY: the app user's shell copies SQLite database $0 to $1 with SQLite's online
# backup (consistent while the app writes).
SQLITE_COPY='python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))"'
# shellcheck disable=SC2016 # expanded by the app user's shell
SQLITE_OUT='t=$(mktemp) && '"$SQLITE_COPY"' "$0" "$t" && cat "$t"; s=$?; rm -f "$t"; exit $s'
# shellcheck disable=SC2016 # expanded by the app user's shell
SQLITE_IN='t=$(mktemp) && cat > "$t" && '"$SQLITE_COPY"' "$t" "$0"; s=$?; rm -f "$t"; exit $s'

# backup_database KIND NAME: a consistent copy of the app's data, kept on the host as
# $BACKUPS/NAME (root's, 600): KIND postgresql, pg_dump's custom format from the db
# host; KIND sqlite, SQLite's online backup, made and streamed by the app user (root
# never opens the app's files). Prints `sha256 size` of the copy.
backup_database() {
    umask 077
    mkdir -p "$BACKUPS" || return 1
    set -- "$1" "$BACKUPS/$2"
    case $1 in
        postgresql) runuser -u postgres -- pg_dump -p "$DB_PORT" -Fc -d "$DB_NAME" > "$2" || return 1 ;;
        sqlite) as_app / sh -c "$SQLITE_OUT" "$DB_PATH" > "$2" || return 1 ;;
    esac
    echo "$(sha256sum < "$2" | cut -d' ' -f1) $(stat -c %s "$2")"
}

# restore_database KIND FILE: the app's data replaced by the backup FILE (fab
# db.restore stops the app around it).
restore_database() {
    case $1 in
        postgresql)
            runuser -u postgres -- pg_restore -p "$DB_PORT" --clean --if-exists --no-owner --role="$DB_USER" \
                -d "$DB_NAME" < "$2"
            ;;
        sqlite) as_app / sh -c "$SQLITE_IN" "$DB_PATH" < "$2" ;;
    esac
}

# backup_media NAME KEEP: the app's uploads (its media directory; a farm's shared volume,
# without its marker) as BACKUPS/NAME, a tar.gz the app user makes of its own directory
# (root never reads through it), keeping the newest KEEP; its sha256 and size, as
# backup_database prints them.
backup_media() {
    umask 077
    mkdir -p "$BACKUPS" || return 1
    as_app "$MEDIA" tar -czf - --exclude="./${MEDIA_MARKER##*/}" . > "$BACKUPS/$1" || return 1
    echo "$(sha256sum < "$BACKUPS/$1" | cut -d' ' -f1) $(stat -c %s "$BACKUPS/$1")"
    # shellcheck disable=SC2012 # the names are fabstack's: APP-TIME.media.tar.gz
    ls -1t "$BACKUPS/$APP"-*.media.tar.gz | tail -n +"$(($2 + 1))" | xargs -r rm -f --
}

# restore_media FILE: the app's uploads replaced by the backup FILE, by the app user (a
# farm's volume keeps its marker: the hosts go on serving).
restore_media() {
    # shellcheck disable=SC2016 # expanded by the app user's shell
    as_app "$MEDIA" sh -c 'find . -mindepth 1 -maxdepth 1 ! -name "$0" -exec rm -rf -- {} + &&
        tar -xzf - --no-same-owner --exclude="./$0"' "${MEDIA_MARKER##*/}" < "$1"
}

# enable_backup_timer: systemd reads the backup units; the daily timer runs.
enable_backup_timer() {
    systemctl daemon-reload && systemctl enable -q --now "$BACKUP_UNIT.timer"
}

# drop_database: the app's database and role gone (fab remove --purge on its db host).
drop_database() {
    runuser -u postgres -- psql -p "$DB_PORT" -q -v ON_ERROR_STOP=1 -v u="$DB_USER" -v d="$DB_NAME" <<'SQL'
SELECT format('DROP DATABASE %I', :'d') WHERE EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d')\gexec
SELECT format('DROP ROLE %I', :'u') WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u')\gexec
SQL
}
