#!/bin/sh
# `make test`'s suite, on two labs at once by default (the machine mostly waits on its
# hosts: about 17 instead of 28 minutes on 2 cores): the second on its own subnet takes
# the modules listed below, the first every other module (those that name the first
# lab's 10.78.0.0/24 addresses among them) and the unit tests. FABSTACK_TEST_LABS=1 runs
# everything on one lab. The bugs the first two-lab runs showed were the product's (a
# shared Fabric config rebuilt under another thread), the lab's (a MAC changed by a
# reboot) and the Ctrl-C test's (a command sh puts in the background ignores SIGINT, and
# so did the fab it started); see docs/lab.md.
# Arguments go to pytest.
set -u
cd "$(dirname "$0")/.." || exit 2
SECOND="tests/test_team.py tests/test_database.py tests/test_https.py tests/test_your_project.py tests/test_background_sshd.py
tests/test_faults.py tests/test_sudo.py tests/test_trixie_dry_run.py tests/test_health.py tests/test_docs_run.py
tests/test_compromised_app.py"
ignore=
for module in $SECOND; do ignore="$ignore --ignore=$module"; done
if [ "${FABSTACK_TEST_LABS:-2}" = 1 ]; then
    exec .venv/bin/pytest -q --durations=30 "$@"
fi
logs=$(mktemp -d)
: > "$logs/first.log" # there before tail follows it
# shellcheck disable=SC2086 # lists of paths without spaces
.venv/bin/pytest -q --durations=30 $ignore "$@" > "$logs/first.log" 2>&1 &
first=$!
tail -n +1 -f "$logs/first.log" &
follow=$!
# shellcheck disable=SC2086
FABSTACK_TEST_LAB_DIR=/var/lib/fabstack-lab-test2 FABSTACK_TEST_LAB_SUBNET=10.81.0.0/24 \
    FABSTACK_TEST_LOGS=/tmp/fabstack-test-logs-2 .venv/bin/pytest -q --durations=30 $SECOND "$@" > "$logs/second.log" 2>&1
second=$?
wait "$first"
first=$?
kill "$follow" 2> /dev/null
echo
echo "==== the second lab (10.81.0.0/24): $SECOND" | tr '\n' ' '
echo
cat "$logs/second.log"
rm -rf "$logs"
[ "$first" -eq 0 ] && [ "$second" -eq 0 ]
