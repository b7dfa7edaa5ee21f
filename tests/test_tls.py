"""HTTPS without a host: the tls setting's errors (one line, naming the key, before any
host is touched), and the steps from certificate facts to operations. The lab tests
(test_https.py) run the same steps against a real ACME server."""

from __future__ import annotations

import pytest
from conftest import openssl_certificate
from test_steps import CONVERGED, calls, drive, file_facts, host, with_facts, written

from deploy import settings as s
from deploy.ops import Diff, Notify, Say
from deploy.steps import nginx, tls

SITE = "www.example.com"
ACME = {"email": "ops@example.com"}
LB_FARM = [
    {"host": "root@10.0.0.2", "roles": ["lb"]},
    {"host": "root@10.0.0.3", "roles": ["lb"]},
    {"host": "root@10.0.0.11", "roles": ["app"]},
]


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict:
    return openssl_certificate(tmp_path_factory.mktemp("certs"), [SITE, "example.com"])


def refused(**raw) -> str:
    with pytest.raises(s.SettingsError) as caught:
        s.validate(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_tls_settings_are_named_with_their_fix(own, tmp_path):
    assert "either email" in refused(server_name=SITE, tls={**ACME, "certificate": f"file:{own['chain']}"})
    assert "set email" in refused(server_name=SITE, tls={"hsts": 100})
    assert "tls.domains: shop.example.com is not in server_name" in refused(
        server_name=SITE, tls={**ACME, "domains": ["shop.example.com"]}
    )
    assert "no domain to certify" in refused(server_name="_", tls=ACME)
    assert "needs a DNS challenge" in refused(server_name="*.example.com", tls={**ACME, "domains": ["*.example.com"]})
    assert "tls.directory" in refused(server_name=SITE, tls={**ACME, "directory": "http://acme.test/dir"})
    assert "tls.hsts" in refused(server_name=SITE, tls={**ACME, "hsts": "1y"})
    assert "tls.colour is not a tls setting" in refused(server_name=SITE, tls={**ACME, "colour": 1})
    # your own certificate: readable, private key private, matching, covering, in date
    assert "cannot read /nonexistent.pem" in refused(
        server_name=SITE, tls={"certificate": "file:/nonexistent.pem", "key": f"file:{own['key']}"}
    )
    own["key"].chmod(0o644)
    try:
        assert "chmod 600" in refused(
            server_name=SITE, tls={"certificate": f"file:{own['chain']}", "key": f"file:{own['key']}"}
        )
    finally:
        own["key"].chmod(0o600)
    other = openssl_certificate(tmp_path / "other", [SITE], ca=own["ca"])
    assert "tls.key does not match tls.certificate" in refused(
        server_name=SITE, tls={"certificate": f"file:{own['chain']}", "key": f"file:{other['key']}"}
    )
    assert "does not cover shop.example.com" in refused(
        server_name=f"{SITE} shop.example.com",
        tls={"certificate": f"file:{own['chain']}", "key": f"file:{own['key']}", "domains": [SITE, "shop.example.com"]},
    )
    expired = openssl_certificate(tmp_path / "expired", [SITE], days=0, ca=own["ca"])
    assert "expired" in refused(
        server_name=SITE, tls={"certificate": f"file:{expired['chain']}", "key": f"file:{expired['key']}"}
    )


def test_own_certificate_is_uploaded_root_only_and_the_site_serves_https(own):
    h = host(server_name=SITE, tls={"certificate": f"file:{own['chain']}", "key": f"file:{own['key']}", "hsts": 600})
    assert h.tls_mode == "files"
    ops = drive(tls.certificate_files(h))
    assert calls(ops) == [
        "command: install -d -o root -g root -m 700 /etc/fabstack/django/tls",
        *written("/etc/fabstack/django/tls/privkey.pem", mode="600"),
        *written("/etc/fabstack/django/tls/fullchain.pem"),
        "notify: RELOAD_NGINX",
    ]
    assert all(op.content is None for op in ops if isinstance(op, Diff))  # never in a diff
    site = nginx.site_config(h)
    assert "listen 443 ssl http2 default_server;" in site
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert "return 301 https://$host$request_uri;" in site
    # the server's, and again where a hashed static file's own add_header drops it
    assert site.count('add_header Strict-Transport-Security "max-age=600" always;') == 2
    assert "location ^~ /.well-known/acme-challenge/" not in site  # no ACME with a certificate of your own
    assert "ssl_stapling" not in site  # openssl's test certificate names no OCSP responder
    # converged: nothing to do
    raw = own["chain"].read_text(), own["key"].read_text()
    done = host(
        with_facts(**file_facts("/etc/fabstack/django/tls/fullchain.pem", raw[0]),
                   **file_facts("/etc/fabstack/django/tls/privkey.pem", raw[1], "root:root 600")),
        server_name=SITE, tls={"certificate": f"file:{own['chain']}", "key": f"file:{own['key']}"},
    )  # fmt: skip
    assert drive(tls.certificate_files(done)) == []


def test_debian_13_gets_nginx_s_http2_directive():
    assert nginx.http2_directive("debian 13") and nginx.http2_directive("ubuntu 24.10")
    assert not nginx.http2_directive("debian 12") and not nginx.http2_directive("ubuntu 24.04")


def cert_facts(expires: int, names: str = SITE, match: str = "yes") -> dict:
    return {"tls": f"{expires} {match} no abc", "tls_names": names}


def test_the_acme_host_asks_only_when_it_has_no_good_certificate():
    fresh = host(server_name=SITE, tls=ACME)
    assert fresh.tls_mode == "acme"
    site = nginx.site_config(fresh)  # before the certificate: plain HTTP, the challenge served
    assert "listen 80 default_server;" in site and "ssl" not in site
    assert "root /var/www/fabstack-acme;" in site
    ops = drive(tls.acme_certificate(fresh))
    assert isinstance(ops[0], Say) and "no certificate yet" in ops[0].text
    assert calls(ops[1:]) == [
        "command: nginx_running",
        f"command: issue_certificate https://acme-v02.api.letsencrypt.org/directory ops@example.com '' {SITE}",
        "probe: read_tls",
        "notify: RELOAD_NGINX",
    ]
    now = int(CONVERGED["now"])
    good = host(with_facts(**cert_facts(now + 60 * 86400)), server_name=SITE, tls=ACME)
    assert drive(tls.acme_certificate(good)) == []
    site = nginx.site_config(good)
    assert "listen 443 ssl http2 default_server;" in site
    assert "/etc/letsencrypt/live/django/fullchain.pem" in site
    assert site.index("acme-challenge") < site.index("return 301")  # the challenge before the redirect
    for why, facts in {
        "expires in 10 days": cert_facts(now + 10 * 86400, f"{SITE} shop.example.com"),
        "lacks shop.example.com": cert_facts(now + 60 * 86400),
        "does not match its key": cert_facts(now + 60 * 86400, f"{SITE} shop.example.com", match="no"),
    }.items():
        h = host(with_facts(**facts), server_name=f"{SITE} shop.example.com", tls=ACME)
        ops = drive(tls.acme_certificate(h))
        assert why in ops[0].text and isinstance(ops[-1], Notify), why


def test_a_farm_asks_on_its_first_lb_and_the_others_send_the_challenge_there():
    first = host(target="root@10.0.0.2", server_name=SITE, tls=ACME, hosts=LB_FARM)
    second = host(target="root@10.0.0.3", server_name=SITE, tls=ACME, hosts=LB_FARM)
    app = host(target="root@10.0.0.11", server_name=SITE, tls=ACME, hosts=LB_FARM)
    assert (first.tls_mode, second.tls_mode, app.tls_mode) == ("acme", "files", "")
    assert "root /var/www/fabstack-acme;" in nginx.lb_config(first)
    assert "proxy_pass http://10.0.0.2:80;" in nginx.lb_config(second)
    assert "ssl" not in nginx.site_config(app)  # app hosts stay plain HTTP behind the lbs
    assert drive(tls.certificate_files(second)) == []  # no copy in hand yet: nothing to put
    env = dict(line.split("=", 1) for line in str(app.values["APP_ENV"]).splitlines())
    assert env["DJANGO_HTTPS"] == "1"
