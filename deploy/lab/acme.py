"""A real ACME server for the lab: pebble (Let's Encrypt's test CA, from the Debian
archive) on the lab's bridge address, and pebble-challtestsrv as the DNS server pebble
asks, so the lab's made-up names resolve to lab hosts. Nothing leaves the machine.

pebble validates the HTTP challenge by connecting to the name's address on port 80,
exactly as a public CA does; it issues from a root it makes at start, which `roots()`
returns for curl --cacert. Its own HTTPS endpoint is signed by a CA made here
(`directory_ca`), which is what fabstack's tls.directory_ca setting is for.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from deploy.lab.system import LabError, pid_alive, sh

ACME_PORT = 14000
MANAGEMENT_PORT = 15000
DNS_PORT = 8053
DNS_MANAGEMENT_PORT = 8055
PACKAGE = "pebble"


class AcmeServer:
    """pebble and its DNS on address (the lab's bridge), state under home."""

    def __init__(self, address: str, home: Path):
        self.address = address
        self.home = home

    @property
    def directory(self) -> str:
        return f"https://{self.address}:{ACME_PORT}/dir"

    @property
    def directory_ca(self) -> Path:
        """The CA that signed pebble's own HTTPS certificate."""
        return self.home / "ca.pem"

    @property
    def log(self) -> Path:
        return self.home / "pebble.log"

    def start(self) -> None:
        """Start pebble and its DNS (installing pebble from the archive if missing); a
        server already running is kept (its issued certificates stay valid)."""
        if self.running():
            return
        if sh("sh", "-c", f"command -v {PACKAGE}", check=False).returncode != 0:
            sh("apt-get", "install", "-y", "-q", PACKAGE)
        self.home.mkdir(parents=True, exist_ok=True)
        self._make_certificate()
        config = {
            "pebble": {
                "listenAddress": f"{self.address}:{ACME_PORT}",
                "managementListenAddress": f"{self.address}:{MANAGEMENT_PORT}",
                "certificate": str(self.home / "server.pem"),
                "privateKey": str(self.home / "server.key"),
                "httpPort": 80,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.home / "pebble.json").write_text(json.dumps(config))
        dns = f"{self.address}:{DNS_PORT}"
        self._spawn(
            "dns",
            ["pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "", "-dns01", dns, "-http01", "",
             "-https01", "", "-tlsalpn01", "", "-management", f"{self.address}:{DNS_MANAGEMENT_PORT}"],
            {},
        )  # fmt: skip
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self._spawn("pebble", ["pebble", "-config", str(self.home / "pebble.json"), "-dnsserver", dns], env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._get(self.directory)
                return
            except OSError:
                time.sleep(0.1)
        raise LabError(f"pebble did not answer at {self.directory}; see {self.log}")

    def _make_certificate(self) -> None:
        if (self.home / "server.pem").exists():
            return
        h = str(self.home)
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
           "-subj", "/CN=fabstack lab ACME server CA", "-keyout", f"{h}/ca.key", "-out", f"{h}/ca.pem")  # fmt: skip
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-subj", f"/CN={self.address}", "-keyout", f"{h}/server.key", "-out", f"{h}/server.csr")  # fmt: skip
        (self.home / "server.ext").write_text(f"subjectAltName=IP:{self.address}\n")
        sh("openssl", "x509", "-req", "-in", f"{h}/server.csr", "-CA", f"{h}/ca.pem", "-CAkey", f"{h}/ca.key",
           "-CAcreateserial", "-days", "3650", "-extfile", f"{h}/server.ext", "-out", f"{h}/server.pem")  # fmt: skip

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env},
            start_new_session=True,
        )  # fmt: skip
        (self.home / f"{name}.pid").write_text(str(process.pid))

    def _pids(self) -> dict[str, int]:
        found = {}
        for name, needle in (("pebble", "pebble"), ("dns", "pebble-challtestsrv")):
            path = self.home / f"{name}.pid"
            if path.exists() and pid_alive(int(path.read_text()), needle):
                found[name] = int(path.read_text())
        return found

    def running(self) -> bool:
        return len(self._pids()) == 2

    def stop(self) -> None:
        for pid in self._pids().values():
            os.kill(pid, signal.SIGTERM)

    def add_name(self, name: str, address: str) -> None:
        """name resolves to address for pebble (an A record in its DNS)."""
        body = json.dumps({"host": name.rstrip(".") + ".", "addresses": [address]}).encode()
        request = urllib.request.Request(f"http://{self.address}:{DNS_MANAGEMENT_PORT}/add-a", data=body)
        _direct().open(request, timeout=5).read()

    def roots(self) -> str:
        """The PEM of the root pebble issues under (clients trust it to verify the sites)."""
        return self._get(f"https://{self.address}:{MANAGEMENT_PORT}/roots/0")

    def issued(self) -> int:
        """How many certificates pebble has issued since it started."""
        return self.log.read_text().count("Issued certificate serial") if self.log.exists() else 0

    def _get(self, url: str) -> str:
        context = ssl.create_default_context(cafile=str(self.directory_ca))
        with _direct(context).open(url, timeout=5) as answer:
            return answer.read().decode()


def _direct(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """An opener that ignores any proxy in the environment (the lab is local)."""
    handlers: list = [urllib.request.ProxyHandler({})]
    if context:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)
