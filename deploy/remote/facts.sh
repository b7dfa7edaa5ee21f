# The host's facts: everything a run needs to know, as key=value lines, in one command
# (deploy/facts.py parses them). Shell builtins where they do, and one process for each
# kind of read (all checksums, all modes, all links): with many hosts on a small
# machine, the processes a read spawns are what it costs.
#
# Set before use: the layout's values (APP, UNIT, UNIT_FILE, PROGRAM, PROGRAM_FILE,
# APT_STAMP, VENV, VENV_MARKER, REQUIREMENTS_MARKER, PASSED, RELEASES, CURRENT,
# NGINX_DEFAULT_BACKUP, media.sh's), WSGI_PACKAGE (the wsgi module's top package), DB_ROLE (yes on a db host: postgres.sh's read_db_facts) and,
# space-separated, FACT_FILES (files root reads), APP_FACT_FILES
# (files read as the app user), FACT_DIRS, FACT_LINKS, FACT_PACKAGES.

# FILE_FACTS: `sha.PATH=` and `meta.PATH=` lines for the regular files among "$@" (a
# symlink is not one: it reads as missing, so a step replaces it). Kept as text so the
# app user's shell can run it too. -z: a name with a backslash (a mount unit's) as it is,
# not escaped.
# shellcheck disable=SC2016 # expanded by the shell that runs it
FILE_FACTS='found=
for f; do [ -f "$f" ] && [ ! -L "$f" ] && found="$found $f"; done
if [ -n "$found" ]; then
    sha256sum -z $found | tr "\\0" "\\n" | sed "s/^\([0-9a-f]*\)  \(.*\)$/sha.\2=\1/"
    stat -c "meta.%n=%U:%G %a" $found
fi'
eval "file_facts() {
$FILE_FACTS
}"

# read_claims: `claim.APP.KEY=VALUE` for what every fabstack app on this host holds
# (/etc/fabstack/APP/claims): several apps share a host without clashing.
read_claims() {
    for f in /etc/fabstack/*/claims; do
        [ -f "$f" ] || continue
        d=${f%/claims}
        while IFS= read -r line; do echo "claim.${d##*/}.$line"; done < "$f"
    done
}

# read_sites: the other sites nginx has enabled here, `site.FILE=PORTS|NAMES`: the ports
# it is nginx's default server on, and its server names. A site no fabstack record
# covers (one written by hand, an app from before the records) is seen too, so a clash
# with it is refused before the host changes, not left to nginx (which would fail its
# test on a second default server, and only warn on a name two sites claim).
read_sites() {
    for f in /etc/nginx/sites-enabled/*; do
        if [ ! -f "$f" ] || [ "$f" = "$NGINX_LINK" ] || [ "$f" = "$LB_LINK" ] || [ "${f##*/}" = "${NGINX_DEFAULT##*/}" ]; then
            continue
        fi
        ports=$(sed -n 's/^[[:space:]]*listen[[:space:]]\{1,\}\([^[:space:];]*\)[^;]*default_server.*/\1/p' "$f" | tr '\n' ' ')
        names=$(sed -n 's/^[[:space:]]*server_name[[:space:]]\{1,\}\([^;]*\);.*/\1/p' "$f" | tr '\n' ' ')
        echo "site.${f##*/}=$ports|$names"
    done
}

# shellcheck disable=SC2086,SC2046,SC1091 # the lists are space-separated paths without spaces
read_facts() {
    . /etc/os-release 2>/dev/null
    echo "os=${ID:-} ${VERSION_ID:-}"
    echo "nproc=$(nproc)"
    echo "arch=$(uname -m)"
    echo "addresses=$(hostname -I 2>/dev/null)"
    echo "now=$(date +%s)"
    v=$(python3 --version 2>/dev/null)
    echo "python=${v#Python }"
    read -r pid1 < /proc/1/comm
    echo "pid1=$pid1"
    [ "$pid1" = systemd ] && echo "systemd=$(systemctl is-system-running 2>/dev/null)" &&
        echo "logrotate_timer=$(systemctl is-active "$LOGROTATE_UNIT.timer" 2>/dev/null)"
    pgrep -x cron > /dev/null && echo "cron_running=yes"
    read_resources
    [ -f "$UNIT_FILE" ] && echo "unit_state=$(systemctl is-active "$UNIT" 2>/dev/null)" &&
        echo "unit_enabled=$(systemctl is-enabled "$UNIT" 2>/dev/null)"
    [ -f "$PROGRAM_FILE" ] && echo "supervisor_state=$(supervisorctl status "$PROGRAM" 2>/dev/null | awk '{print $2}')"
    p=
    read -r p 2>/dev/null < /run/supervisord.pid
    [ -n "$p" ] && [ -d "/proc/$p" ] && echo "supervisord_pid=$p"
    echo "apt_stamp=$(stat -c %Y "$APT_STAMP" 2>/dev/null)"
    uid=
    while IFS=: read -r name _ id _ comment home _; do
        if [ "$name" = "$APP" ]; then
            uid=$id
            echo "user_home=$home"
            echo "user_comment=$comment"
        fi
    done < /etc/passwd
    [ -n "$uid" ] && echo "user=$uid"
    dpkg-query -W -f='pkg.${Package}=${db:Status-Status}\n' $FACT_PACKAGES 2>/dev/null
    file_facts $FACT_FILES
    # the app's own files (secrets in its data directory) are read as the app user
    [ -n "$uid" ] && [ -n "$APP_FACT_FILES" ] && as_app / sh -c "$FILE_FACTS" - $APP_FACT_FILES
    found=
    for d in $FACT_DIRS; do [ -d "$d" ] && found="$found $d"; done
    [ -n "$found" ] && stat -c 'dir.%n=%U:%G %a' $found
    find "$CURRENT" $FACT_LINKS -maxdepth 0 -type l \( -path "$CURRENT" -printf 'current=%l\n' \
        -o -printf 'link.%p=%l\n' \) 2>/dev/null
    [ -e "$NGINX_DEFAULT_BACKUP" ] && echo "default_backup=yes"
    if [ -e "$CURRENT/$WSGI_PACKAGE/__init__.py" ] || [ -e "$CURRENT/$WSGI_PACKAGE.py" ]; then
        echo "current_has_wsgi=yes"
    fi
    echo "venv_version=$(sed -n 's/^version *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null)"
    m=
    read -r m 2>/dev/null < "$VENV_MARKER"
    echo "venv_marker=$m"
    m=
    read -r m 2>/dev/null < "$REQUIREMENTS_MARKER"
    echo "requirements_marker=$m"
    m=
    read -r m 2>/dev/null < "$PASSED"
    echo "passed=$m"
    set -- $(ls -t "$RELEASES" 2>/dev/null)
    echo "releases=$*"
    if alive; then
        echo "app_pid=$pid"
        grep -qx 'preload_app = True' "$CONFIG" 2>/dev/null && echo "app_preload=yes"
        echo "app_listen=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," 'index($0, p) {printf "%s ", $4}')"
    fi
    [ "$DB_ROLE" = yes ] && read_db_facts
    read_tls
    read_claims
    [ -n "$SITES" ] && read_sites
    [ -n "$REDIS_ROLE" ] && read_redis_facts
    [ -n "$FIREWALL_ROLE" ] && read_firewall
    [ -n "$MEDIA_ROLE" ] && read_media_facts
    [ -n "$BACKGROUND" ] && read_background && read_jobs
    pid=
    read -r pid 2>/dev/null < /run/nginx.pid
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "nginx_pid=$pid"
    true
}
