# apt: packages installed in one apt-get call, patient with another apt (unattended-
# upgrades) and able to finish what an interrupted dpkg left half-done.
#
# Set before use: APT_STAMP (apt's own update-success stamp), APT_WAIT (seconds).

apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout="$APT_WAIT" "$@"
}

# lock_holders: "PID NAME" of whoever holds apt's or dpkg's lock now, from /proc/locks.
lock_holders() {
    inodes=$(stat -c ':%i$' /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock 2>/dev/null | paste -sd '|')
    [ -n "$inodes" ] || return 0
    awk -v re="$inodes" '$6 ~ re {print $5}' /proc/locks | sort -u | while read -r holder; do
        echo "$holder $(cat "/proc/$holder/comm" 2>/dev/null)"
    done
}

# apt_update: the package lists; apt-get update ignores DPkg::Lock::Timeout, so it is
# retried while they are locked.
apt_update() {
    for i in $(seq "$APT_WAIT"); do
        if out=$(apt_get update 2>&1); then
            mkdir -p "$(dirname "$APT_STAMP")" && touch "$APT_STAMP"
            return
        fi
        case $out in
            *"Could not get lock"*) if [ "$i" -lt "$APT_WAIT" ]; then
                sleep 1
                continue
            fi ;;
        esac
        echo "$out" >&2
        return 100
    done
}

# apt_install UPDATE PACKAGE...: the packages (after apt-get update when UPDATE is yes),
# once dpkg has finished any work an interrupted run left (/var/lib/dpkg/updates).
apt_install() {
    if [ "$1" = yes ]; then apt_update || return; fi
    shift
    if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ]; then
        # an interrupted dpkg to finish first; dpkg itself does not wait for the lock (an
        # apt-get a cut connection left running may still hold it), so wait as apt-get does
        for _ in $(seq "$APT_WAIT"); do [ -z "$(lock_holders)" ] && break; sleep 1; done
        dpkg --configure -a || return
    fi
    apt_get install -y --no-install-recommends "$@"
}
