#!/bin/sh
# A program, not a library: installed on the db host as /usr/local/lib/fabstack/db-backup,
# run by each app's daily backup unit (as root, umask 077). A pg_dump of the app's
# database into BACKUPS, written aside and moved into place whole, keeping the newest KEEP.
#
# db-backup BACKUPS APP PORT DATABASE KEEP
set -eu
backups=$1 app=$2 port=$3 database=$4 keep=$5
mkdir -p "$backups"
dump="$backups/$app-$(date -u +%Y%m%dT%H%M%S%NZ).dump"
runuser -u postgres -- pg_dump -p "$port" -Fc -d "$database" > "$dump.partial"
mv "$dump.partial" "$dump"
# shellcheck disable=SC2012 # the names are fabstack's own: APP-TIME.dump
ls -1t "$backups/$app"-*.dump | tail -n +"$((keep + 1))" | xargs -r rm -f --
