# fab maintenance on a host that faces the clients: its nginx answers 503 with the page
# while MAINTENANCE_PAGE exists (templates/nginx-maintenance.conf.j2).
#
# Set before use: MAINTENANCE_PAGE.

# maintenance_on STAGED: STAGED becomes the page; its directories root's own (755, so
# nginx's workers may read it), refused when one is a link or another user's.
maintenance_on() {
    for page_dir in "${MAINTENANCE_PAGE%/*/*/*}" "${MAINTENANCE_PAGE%/*/*}" "${MAINTENANCE_PAGE%/*}"; do
        if [ -L "$page_dir" ] || { [ -e "$page_dir" ] && [ "$(stat -c %u "$page_dir")" != 0 ]; }; then
            echo "$page_dir is not a directory of root's own; fabstack keeps the maintenance page only there" >&2
            return 1
        fi
        [ -d "$page_dir" ] || mkdir -m 755 "$page_dir" || return 1
    done
    install -o root -g root -m 644 "$1" "$MAINTENANCE_PAGE.new" && mv -f "$MAINTENANCE_PAGE.new" "$MAINTENANCE_PAGE"
}

# maintenance_off: the page gone: the site serves again.
maintenance_off() {
    rm -f "$MAINTENANCE_PAGE"
    rmdir "${MAINTENANCE_PAGE%/*}" 2> /dev/null
    true
}
