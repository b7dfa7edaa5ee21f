# HTTPS on a host that ends TLS: its certificate read, and certbot's calls (ACME).
#
# Set before use: TLS_CERT, TLS_KEY (where nginx reads the chain and key), ACME_WEBROOT.

# read_tls: `tls=NOT_AFTER KEY_MATCHES OCSP SHA256` (epoch seconds, yes/no, yes/no, the
# chain file's checksum) and `tls_names=` its DNS names; nothing when there is no
# certificate, `tls=unreadable` when it does not parse.
read_tls() {
    [ -n "$TLS_CERT" ] && [ -f "$TLS_CERT" ] || return 0
    if ! x=$(openssl x509 -in "$TLS_CERT" -noout -enddate -ocsp_uri -ext subjectAltName -pubkey 2>/dev/null); then
        echo "tls=unreadable"
        return 0
    fi
    end=$(echo "$x" | sed -n 's/^notAfter=//p')
    ocsp=no
    echo "$x" | grep -q '^https\?://' && ocsp=yes
    match=no
    cert_key=$(echo "$x" | sed -n '/BEGIN PUBLIC KEY/,/END PUBLIC KEY/p')
    [ -n "$cert_key" ] && [ "$cert_key" = "$(openssl pkey -in "$TLS_KEY" -pubout 2>/dev/null)" ] && match=yes
    sha=$(sha256sum "$TLS_CERT")
    echo "tls=$(date -d "$end" +%s) $match $ocsp ${sha%% *}"
    echo "tls_names=$(echo "$x" | grep -oE 'DNS:[^, ]+' | sed 's/^DNS://' | tr '\n' ' ')"
}

# acme_env CA: certbot (Python's requests) trusts CA for the ACME server, when given.
acme_env() {
    if [ -n "$1" ]; then REQUESTS_CA_BUNDLE=$1; export REQUESTS_CA_BUNDLE; fi
}

# issue_certificate DIRECTORY EMAIL CA DOMAIN...: a certificate named $APP for the
# domains from the ACME server at DIRECTORY, over the webroot challenge the running nginx
# serves (no port taken away, no downtime). certbot's own reason goes to stderr.
issue_certificate() {
    directory=$1 email=$2
    acme_env "$3"
    shift 3
    install -d -m 755 "$ACME_WEBROOT" || return 1
    domains=
    for d; do domains="$domains -d $d"; done
    # shellcheck disable=SC2086 # one -d per domain
    if ! out=$(certbot certonly --non-interactive --agree-tos --email "$email" --server "$directory" \
        --webroot --webroot-path "$ACME_WEBROOT" --cert-name "$APP" --keep-until-expiring \
        --expand $domains 2>&1); then
        echo "$out" | grep -E '^ *(Domain|Type|Detail|Hint|Error|An unexpected error)|[Ee]rror' | head -n 8 >&2
        echo "certbot could not get a certificate for $* from $directory" >&2
        return 1
    fi
}

# renew_certificate CA FORCE: certbot renews $APP's certificate when it is due (FORCE:
# yes, now); its deploy hook tests nginx's config and reloads it. Without a terminal
# certbot sleeps up to 8 minutes first (spreading the timers' load on the CA): a renewal
# someone asked for now does not.
renew_certificate() {
    acme_env "$1"
    force=
    [ "$2" = yes ] && force=--force-renewal
    # shellcheck disable=SC2086 # an optional flag
    if ! out=$(certbot renew --non-interactive --no-random-sleep-on-renew --cert-name "$APP" $force 2>&1); then
        echo "$out" | tail -n 8 >&2
        return 1
    fi
    echo "$out" | grep -iE 'renew|skip|success' | head -n 4
}

# read_certificate_pair: the chain then the key, for the other load balancers' copies
# (read into fab's memory, never printed).
read_certificate_pair() {
    cat "$TLS_CERT" && echo "--- key ---" && cat "$TLS_KEY"
}
