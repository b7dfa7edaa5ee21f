# fab maintenance on a host that faces the clients: its nginx answers 503 with the page
# while MAINTENANCE_PAGE exists (templates/nginx-maintenance.conf.j2).
#
# Set before use: MAINTENANCE_PAGE.

# maintenance_on STAGED: STAGED becomes the page; its directories root's own (755, so
# nginx's workers may read it), refused when one is a link or another user's.
maintenance_on() {
    root_dirs "${MAINTENANCE_PAGE%/*/*/*}" "${MAINTENANCE_PAGE%/*/*}" "${MAINTENANCE_PAGE%/*}" || return 1
    install -o root -g root -m 644 "$1" "$MAINTENANCE_PAGE.new" && mv -f "$MAINTENANCE_PAGE.new" "$MAINTENANCE_PAGE"
}

# maintenance_off: the page gone: the site serves again.
maintenance_off() {
    rm -f "$MAINTENANCE_PAGE"
    rmdir "${MAINTENANCE_PAGE%/*}" 2> /dev/null
    true
}
