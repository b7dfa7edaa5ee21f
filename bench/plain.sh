#!/bin/sh
# The guide's steps as a plain script over ssh, the yardstick bench/run.py measures
# fabstack's cold run against: nginx and python3 from apt, Django, gunicorn and gevent
# in a virtualenv, the project copied, gunicorn started with gevent workers, nginx in
# front after a configtest. No releases, no checks, no idempotence: what a person
# following the guide would type, run on every host at once.
#
# Usage: bench/plain.sh PROJECT_DIR KNOWN_HOSTS root@HOST...
# (bench/plain-host.sh is what runs on each host)
set -eu

project=$1
known=$2
shift 2

ssh_to() {
    target=$1
    shift
    ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known" "$target" "$@"
}

one_host() {
    tar -czf - -C "$project" . | ssh_to "$1" 'cat > /tmp/plain-app.tgz'
    ssh_to "$1" sh -s < "$(dirname "$0")/plain-host.sh"
}
pids=""
for target in "$@"; do
    one_host "$target" &
    pids="$pids $!"
done
status=0
for pid in $pids; do
    wait "$pid" || status=1
done
exit $status
