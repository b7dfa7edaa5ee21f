#!/bin/sh
# A program, not a library: installed as each app's config/run-job (root's, run by cron
# as the app user) on a host without systemd. It runs one scheduled job: one run at a
# time (a run that finds the previous one still going is skipped, and says so), in the
# current release, with the app's environment (one NAME=VALUE per line).
#
# run-job RUN_DIR CURRENT ENV_FILE NAME COMMAND...
set -u
run_dir=$1 current=$2 env_file=$3 name=$4
shift 4
exec 9> "$run_dir/job-$name.lock" || exit 1
if ! flock -n 9; then
    echo "job $name: $(date -u +%FT%TZ): the previous run still runs; skipped"
    exit 0
fi
cd "$current" || exit 1
while IFS= read -r line; do
    case $line in [A-Za-z_]*=*) export "${line?}" ;; esac
done < "$env_file"
echo "job $name: $(date -u +%FT%TZ): started"
exec "$@"
