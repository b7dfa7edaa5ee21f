# A farm's shared media (shared_media: true, more than one app host): one GlusterFS
# volume of the app's, replicated on every app host (a brick each, in root's own
# directory), FUSE-mounted at the app's media directory on each of them. The
# distribution's glusterfs-server; docs/decisions.md says why this engine and these
# options.
#
# Set before use: APP, MEDIA, VOLUME, BRICK, MEDIA_UNIT, MEDIA_UNIT_FILE, MEDIA_MARKER,
# MEDIA_PEERS (the app hosts' private addresses, space-separated, in the inventory's
# order), MEDIA_SELF (this host's).

# read_media_facts: whether glusterd runs, the volume as glusterd records it (its status,
# bricks and allowed clients, read from its file: no CLI call), the brick directory's
# owner, and what is mounted at the media directory.
read_media_facts() {
    if pgrep -x glusterd > /dev/null; then echo "glusterd=online"; else echo "glusterd=down"; fi
    [ -d "$BRICK" ] && echo "media_brick=$(stat -c '%U:%G %a' "$BRICK")"
    info=/var/lib/glusterd/vols/$VOLUME/info
    if [ -f "$info" ]; then
        bricks=
        while IFS='=' read -r key value; do
            case $key in
                status) echo "media_volume=$value" ;;
                auth.allow) echo "media_allow=$value" ;;
                brick-*) bricks="$bricks ${value%%:*}" ;;
            esac
        done < "$info"
        echo "media_bricks=${bricks# }"
    fi
    echo "media_mount=$(findmnt -n -o FSTYPE --mountpoint "$MEDIA" 2> /dev/null)"
    [ -f "$MEDIA_MARKER" ] && echo "media_marker=yes"
    true
}

# media_glusterd: glusterd running (enabled at boot where systemd runs) and the brick's
# directory made by root, in a directory only root may enter: one another user made
# first is refused, never used. (The brick's own directory is the volume's root: the
# app's, once mounted.)
media_glusterd() {
    for dir in /var/lib/fabstack "${BRICK%/*}"; do
        if [ -e "$dir" ] && [ "$(stat -c %U "$dir")" != root ]; then
            echo "$dir is $(stat -c %U "$dir")'s, not root's: remove it, then run fab provision" >&2
            return 1
        fi
    done
    install -d -o root -g root -m 755 /var/lib/fabstack || return 1
    install -d -o root -g root -m 700 "${BRICK%/*}" || return 1
    [ -d "$BRICK" ] || install -d -o root -g root -m 755 "$BRICK" || return 1
    if [ "$(cat /proc/1/comm)" = systemd ]; then
        systemctl enable -q --now glusterd || return 1
    elif ! pgrep -x glusterd > /dev/null; then
        glusterd || return 1
    fi
    i=0
    until gluster pool list > /dev/null 2>&1; do # answering on its port
        i=$((i + 1))
        [ "$i" -lt 100 ] || { echo "glusterd does not answer after 10 s" >&2 && return 1; }
        sleep 0.1
    done
}

# media_volume: (on the first app host) every app host in the trusted pool, then the
# app's volume: made with a brick on each (replica: one copy per app host), or a brick
# added for an app host that has none yet (its copy filled by self-heal); its options
# set; started. Each command waits on the one before it.
media_volume() {
    for peer in $MEDIA_PEERS; do
        [ "$peer" = "$MEDIA_SELF" ] && continue
        gluster peer probe "$peer" > /dev/null || return 1
    done
    for peer in $MEDIA_PEERS; do # probed: in the pool and connected, or the volume commands refuse it
        [ "$peer" = "$MEDIA_SELF" ] && continue
        i=0
        until gluster peer status | awk -v p="$peer" '/^Hostname:/ { h = $2 }
            /^State: Peer in Cluster \(Connected\)/ && h == p { f = 1 } END { exit !f }'; do
            i=$((i + 1))
            [ "$i" -lt 300 ] || { echo "gluster peer $peer is not in the pool after 30 s: $(gluster peer status)" >&2 && return 1; }
            sleep 0.1
        done
    done
    count=0
    bricks=
    for peer in $MEDIA_PEERS; do
        count=$((count + 1))
        bricks="$bricks $peer:$BRICK"
    done
    info=/var/lib/glusterd/vols/$VOLUME/info
    # shellcheck disable=SC2086 # the bricks: one word each
    if [ ! -f "$info" ]; then
        # force: the brick is on the root filesystem, as a farm of plain servers has it
        gluster --mode=script volume create "$VOLUME" replica "$count" transport tcp $bricks force > /dev/null ||
            return 1
    else
        have=$(sed -n 's/^brick-[0-9]*=\([^:]*\):.*/\1/p' "$info" | tr '\n' ' ')
        for peer in $MEDIA_PEERS; do
            case " $have " in *" $peer "*) continue ;; esac
            have="$have $peer"
            n=$(echo "$have" | wc -w)
            gluster --mode=script volume add-brick "$VOLUME" replica "$n" "$peer:$BRICK" force > /dev/null || return 1
        done
    fi
    # one copy left takes writes (Django never overwrites a stored name, so what each
    # side wrote while apart heals into one directory); a dead brick host is given up on
    # within 5 s, not the default 42, so requests on the survivors do not hang; only the
    # app hosts may connect.
    allow=$(echo "$MEDIA_PEERS" | tr ' ' ',')
    for option in cluster.quorum-type=fixed cluster.quorum-count=1 network.ping-timeout=5 "auth.allow=$allow"; do
        grep -qxF "$option" "$info" 2> /dev/null ||
            gluster --mode=script volume set "$VOLUME" "${option%%=*}" "${option#*=}" > /dev/null || return 1
    done
    grep -qx 'status=1' "$info" || gluster --mode=script volume start "$VOLUME" > /dev/null
}

# media_mount: the volume at the media directory, from this host's own glusterd (no other
# host needed at boot). Files the app stored here before the farm shared its media are
# copied in first (never over one of the same name). Unmounted, the directory is root's
# and closed (mode 700): the app cannot write into it, nginx cannot serve from it.
# Mounted, the volume's root is the app's, with the marker nginx checks (a host without
# it answers 503, and the load balancers take it out).
media_mount() {
    if [ "$(cat /proc/1/comm)" = systemd ]; then # its unit as written, enabled for the next boot
        systemctl daemon-reload && systemctl enable -q "$MEDIA_UNIT" || return 1
    fi
    if [ "$(findmnt -n -o FSTYPE --mountpoint "$MEDIA" 2> /dev/null)" != fuse.glusterfs ]; then
        if [ -n "$(ls -A "$MEDIA" 2> /dev/null)" ]; then
            into=$(mktemp -d /run/fabstack-media.XXXXXX) || return 1
            mount -t glusterfs "127.0.0.1:/$VOLUME" "$into" || { rmdir "$into" && return 1; }
            chown "$APP:$APP" "$into" && chmod 755 "$into" # the volume's root: the app's
            app_file copy_in "$MEDIA" "$into" > /dev/null 2>&1
            copied=$?
            umount "$into" && rmdir "$into"
            [ "$copied" = 0 ] || { echo "copying $MEDIA's files into the volume failed" >&2 && return 1; }
        fi
        chown root:root "$MEDIA" && chmod 700 "$MEDIA" || return 1
        if [ "$(cat /proc/1/comm)" = systemd ]; then
            systemctl start "$MEDIA_UNIT" || return 1
        else
            mount -t glusterfs -o backup-volfile-servers="$(echo "$MEDIA_PEERS" | tr ' ' ':')" \
                "127.0.0.1:/$VOLUME" "$MEDIA" || return 1
        fi
    fi
    [ "$(findmnt -n -o FSTYPE --mountpoint "$MEDIA")" = fuse.glusterfs ] || return 1
    [ "$(stat -c '%U:%G %a' "$MEDIA")" = "$APP:$APP 755" ] || { chown "$APP:$APP" "$MEDIA" && chmod 755 "$MEDIA"; } ||
        return 1
    [ -f "$MEDIA_MARKER" ] || echo "$VOLUME" | app_file put_file "$MEDIA_MARKER" 644 # the app's directory: as the app
}

# media_unmount PURGE: the volume off the media directory (fab remove): its unit stopped
# where systemd runs, else unmounted; with PURGE yes, this host's brick deleted.
media_unmount() {
    if [ -f "$MEDIA_UNIT_FILE" ] && [ "$(cat /proc/1/comm)" = systemd ]; then
        systemctl disable -q --now "$MEDIA_UNIT" 2> /dev/null
    fi
    if findmnt --mountpoint "$MEDIA" > /dev/null 2>&1; then umount "$MEDIA" || return 1; fi
    [ "$1" != yes ] || rm -rf "$BRICK"
}

# media_volume_deleted: fab remove --purge, on the first app host: the app's volume
# stopped and deleted (its bricks' files go with each host's brick directory).
media_volume_deleted() {
    if [ -f "/var/lib/glusterd/vols/$VOLUME/info" ]; then
        grep -qx 'status=1' "/var/lib/glusterd/vols/$VOLUME/info" &&
            { gluster --mode=script volume stop "$VOLUME" force > /dev/null || return 1; }
        gluster --mode=script volume delete "$VOLUME" > /dev/null || return 1
    fi
}
