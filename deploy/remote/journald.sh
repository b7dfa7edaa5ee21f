# The systemd journal on every host: its size cap is a drop-in of journald.conf.
#
# Set before use: nothing.

# restart_journald: journald reads a new cap (Debian 12's journald has no reload); the
# services' log streams survive the restart in journald's file descriptor store.
restart_journald() {
    systemctl restart systemd-journald
}
