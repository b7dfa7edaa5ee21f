# fabstack's firewall: one nftables table of the app's own, loaded from FIREWALL_FILE.
# New rules are tried first: loaded, with a guard that puts back the rules in force
# before unless fab, having logged in again through the new ones, stands it down.
#
# Set before use: FIREWALL_FILE, FIREWALL_TABLE, FIREWALL_UNIT, FIREWALL_UNIT_FILE.

# read_firewall: the checksums of fabstack's firewall files, and whether its table is loaded.
read_firewall() {
    file_facts "$FIREWALL_FILE" "$FIREWALL_UNIT_FILE"
    nft list table inet "$FIREWALL_TABLE" > /dev/null 2>&1 && echo "firewall=loaded"
    true
}

# firewall_try STAGED SECONDS: the staged rules in force (the table replaced whole, in one
# transaction), and a guard that loads the rules in force before after SECONDS unless
# firewall_keep stands it down first.
firewall_try() {
    [ -d "${FIREWALL_FILE%/*}" ] || install -d -m 755 "${FIREWALL_FILE%/*}" || return 1
    (umask 077 && {
        echo "table inet $FIREWALL_TABLE"
        echo "delete table inet $FIREWALL_TABLE"
        nft list table inet "$FIREWALL_TABLE" 2> /dev/null || true # none yet: the guard deletes the new one
    } > "$FIREWALL_FILE.restore") || return 1
    if ! out=$(nft -f "$1" 2>&1); then
        case $out in
            *"Operation not permitted"*)
                echo "this host refuses firewall rules (nft: Operation not permitted): give it CAP_NET_ADMIN (a container)" >&2 ;;
            *) echo "nft -f: $out" >&2 ;;
        esac
        return 1
    fi
    rm -f "$FIREWALL_FILE.rolled-back"
    # the guard acts only on its own try: a guard of an earlier try, kept since, finds
    # another token (or none) when it wakes
    token=$(date +%s%N)
    echo "$token" > "$FIREWALL_FILE.armed"
    # shellcheck disable=SC2016 # expanded by the guard's shell
    setsid sh -c 'sleep "$1"; read -r armed < "$2.armed" 2> /dev/null || exit 0; [ "$armed" = "$3" ] || exit 0
        nft -f "$2.restore" && date +%s > "$2.rolled-back"; rm -f "$2.armed" "$2.restore"' \
        - "$2" "$FIREWALL_FILE" "$token" < /dev/null > /dev/null 2>&1 &
}

# firewall_keep STAGED: the guard stood down, the rules tried become the ones loaded at
# boot (where systemd runs, by FIREWALL_UNIT, enabled).
firewall_keep() {
    rm -f "$FIREWALL_FILE.armed" "$FIREWALL_FILE.restore"
    install -D -o root -g root -m 600 "$1" "$FIREWALL_FILE" || return 1
    [ -d /run/systemd/system ] || return 0
    systemctl daemon-reload && systemctl enable -q "$FIREWALL_UNIT" || return 1
    if ! systemctl start "$FIREWALL_UNIT"; then
        # the unit's journal: nft's own message, or systemd's when it could not run nft at all
        journalctl -u "$FIREWALL_UNIT" -n 8 --no-pager -o cat >&2
        return 1
    fi
}

# firewall_rolled_back SECONDS: wait (up to SECONDS) for the guard to put the old rules
# back; prints how long ago it did.
firewall_rolled_back() {
    for _ in $(seq 1 $(($1 * 5))); do
        if [ -f "$FIREWALL_FILE.rolled-back" ]; then
            read -r at < "$FIREWALL_FILE.rolled-back"
            echo $(($(date +%s) - at))
            return 0
        fi
        sleep 0.2
    done
    echo "the guard did not put the old firewall rules back within $1 s; load them with: nft -f $FIREWALL_FILE" >&2
    return 1
}
