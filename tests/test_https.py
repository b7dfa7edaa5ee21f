"""HTTPS on lab hosts, with a real ACME server (pebble, from the Debian archive, on the
lab's bridge; its DNS answers the test's names with lab addresses): a single host and
a 1 lb + 2 apps farm get certificates over the HTTP challenge their nginx serves; a
certificate made by openssl here serves as "your own". Verified as a browser would:
by name, against the issuing root, over HTTP/2, plain HTTP redirected."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import fab, openssl_certificate
from cryptography import x509

from deploy.lab import Lab
from deploy.lab.acme import AcmeServer

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def acme(lab: Lab, tmp_path_factory) -> AcmeServer:
    lab.acme.stop()  # a fresh one: its log counts this module's orders only
    server = lab.start_acme({})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def roots(acme: AcmeServer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acme") / "roots.pem"
    path.write_text(acme.roots())
    return path


def acme_settings(path: Path, acme: AcmeServer, name: str, **more) -> Path:
    tls = {"email": "ops@lab.test", "directory": acme.directory, "directory_ca": f"file:{acme.directory_ca}"}
    path.write_text(yaml.safe_dump({"server_name": name, "tls": tls, **more}))
    return path


def curl(address: str, name: str, url: str, ca: Path | None = None) -> tuple[str, str, str]:
    """(status, HTTP version, redirect) of one request to name at address, as curl sees it."""
    port = 443 if url.startswith("https") else 80
    args = ["curl", "-sS", "--noproxy", "*", "--resolve", f"{name}:{port}:{address}", "-o", "/dev/null",
            "-w", "%{http_code} %{http_version} %{redirect_url}", "--max-time", "10"]  # fmt: skip
    args += ["--cacert", str(ca)] if ca else []
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=20)
    status, version, *redirect = (out.stdout or f"000 - {out.stderr.strip()}").split(" ", 2) + [""]
    return status, version, redirect[0]


def https_answer(address: str, name: str, ca: Path) -> tuple[int, int]:
    """(status, certificate serial) of GET / over a new TLS connection, verified against ca."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        head = tls.recv(64).decode(errors="replace")
    return int(head.split()[1]) if head.startswith("HTTP/") else 0, serial


def assert_https_site(address: str, name: str, ca: Path) -> None:
    assert curl(address, name, f"https://{name}/", ca)[:2] == ("200", "2")  # verified by name, HTTP/2
    assert curl(address, name, f"http://{name}/a?b=1") == ("301", "1.1", f"https://{name}/a?b=1")


def test_a_single_host_gets_a_certificate_from_acme_once(lab: Lab, deployed_snapshot, acme, roots, tmp_path, remote):
    (host,) = lab.up(count=1, init="systemd", prefix="tls", snapshot=deployed_snapshot)
    name = "one.lab.test"
    settings = acme_settings(tmp_path / "fabstack.yaml", acme, name)
    # the CA cannot reach the name yet (no DNS record): a clear error; the rest of the
    # provision is done, and the site serves as it did, over HTTP
    failed = fab("-H", host.target, "provision", settings=settings)
    assert failed.code == 1, failed
    assert f"certbot could not get a certificate for {name}" in failed.out + failed.err, failed
    assert "gunicorn running: changed" in failed.out, failed
    assert curl(host.address, name, f"http://{name}/")[0] == "200"
    acme.add_name(name, host.address)
    before = acme.issued()
    first = fab("-H", host.target, "provision", settings=settings)
    assert first.code == 0, first
    assert acme.issued() == before + 1
    assert_https_site(host.address, name, roots)
    again = fab("-H", host.target, "provision", "deploy", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
    assert acme.issued() == before + 1  # nothing asked while the certificate is valid
    r = remote(host)
    # renewals: the distribution's timer, trusting the lab CA as fabstack's calls do
    assert r.run("systemctl is-enabled certbot.timer").strip() == "enabled"
    assert "REQUESTS_CA_BUNDLE=/etc/fabstack/django/acme-ca.pem" in r.run("systemctl show -p Environment certbot")
    assert r.run("stat -L -c '%U %a' /etc/letsencrypt/live/django/privkey.pem").strip() == "root 600"
    django = fab("-H", host.target, "manage", "--", "diffsettings", settings=settings)
    for line in ("SESSION_COOKIE_SECURE = True", "CSRF_COOKIE_SECURE = True", f"'https://{name}'"):
        assert line in django.out, django
    check = fab("-H", host.target, "check", "status", settings=settings)
    assert check.code == 0, check
    assert "certificate covers server_name: ok" in check.out and "until 20" in check.out, check


def test_a_certificate_of_your_own(lab: Lab, deployed_snapshot, tmp_path, remote):
    (host,) = lab.up(count=1, init="sshd", prefix="own", snapshot=deployed_snapshot)
    name = "own.lab.test"
    made = openssl_certificate(tmp_path / "certs", [name])
    settings = tmp_path / "fabstack.yaml"
    tls = {"certificate": f"file:{made['chain']}", "key": f"file:{made['key']}", "hsts": 300}
    settings.write_text(yaml.safe_dump({"server_name": name, "tls": tls}))
    first = fab("-H", host.target, "provision", settings=settings)
    assert first.code == 0, first
    assert made["key"].read_text() not in first.out + first.err
    assert_https_site(host.address, name, made["ca"])
    assert remote(host).run("stat -c '%U %a' /etc/fabstack/django/tls/privkey.pem").strip() == "root 600"
    again = fab("-H", host.target, "provision", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
    # a key that is not the certificate's: refused before the host is touched
    other = openssl_certificate(tmp_path / "other", [name], ca=made["ca"])
    settings.write_text(yaml.safe_dump({"server_name": name, "tls": {**tls, "key": f"file:{other['key']}"}}))
    bad = fab("-H", host.target, "provision", settings=settings)
    assert bad.code == 2 and "tls.key does not match tls.certificate" in bad.err, bad
    assert curl(host.address, name, f"https://{name}/", made["ca"])[:2] == ("200", "2")


def test_a_farm_ends_tls_at_its_lbs_and_renews_under_load(lab: Lab, deployed_snapshot, acme, roots, tmp_path):
    first_lb, second_lb, *apps = lab.up(count=4, init="sshd", prefix="tlsfarm", snapshot=deployed_snapshot)
    lbs = [first_lb, second_lb]
    name = "farm.lab.test"
    # the CA knocks on the second lb: it passes the challenge on to the first, which asks
    acme.add_name(name, second_lb.address)
    inventory = [
        *({"host": lb.target, "roles": ["lb"]} for lb in lbs),
        *({"host": a.target, "roles": ["app"]} for a in apps),
    ]
    settings = acme_settings(tmp_path / "farm.yaml", acme, name, hosts=inventory)
    before = acme.issued()
    first = fab("provision", settings=settings)
    assert first.code == 0, first
    assert acme.issued() == before + 1  # one order; the second lb got a copy
    for lb in lbs:
        assert_https_site(lb.address, name, roots)
    serials = {https_answer(lb.address, name, roots)[1] for lb in lbs}
    assert len(serials) == 1
    for app in apps:  # the app hosts stay plain HTTP, for the lbs alone
        assert curl(app.address, name, f"https://{name}/", roots)[0] == "000"
    # a forced renewal while clients keep coming through the lbs
    answers: list[int] = []
    stop = threading.Event()

    def client(lb) -> None:  # bounded: at most 25 requests a second each
        while not stop.wait(0.04):
            try:
                answers.append(https_answer(lb.address, name, roots)[0])
            except OSError:
                answers.append(0)

    clients = [threading.Thread(target=client, args=(lbs[i % 2],)) for i in range(4)]
    for c in clients:
        c.start()
    try:
        deadline = time.monotonic() + 10
        while len(answers) < 8 and time.monotonic() < deadline:  # the clients are at it before the renewal
            time.sleep(0.05)
        renew = fab("tls.renew", "--force", settings=settings)
    finally:
        stop.set()
        for c in clients:
            c.join(20)
    assert renew.code == 0, renew
    assert acme.issued() == before + 2
    assert len(answers) > 20 and answers.count(200) == len(answers), sorted(set(answers))
    renewed = {https_answer(lb.address, name, roots) for lb in lbs}
    assert len(renewed) == 1 and next(iter(renewed))[0] == 200 and next(iter(renewed))[1] not in serials
    again = fab("provision", settings=settings)
    assert again.code == 0 and again.changed() == 0, again
    assert acme.issued() == before + 2
