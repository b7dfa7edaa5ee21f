"""The lab network: one bridge on the controller, a namespace and a veth pair per host,
and a forward proxy on the bridge address, the hosts' only way to package registries.

Hosts get no default route, so nothing they send can leave the machine except through
the proxy, which only accepts the lab's own subnet.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

from deploy.lab.system import LabError, pid_alive, sh

PROXY_PORT = 8899


class Network:
    def __init__(self, subnet: str, bridge: str, home: Path):
        self.net = ipaddress.ip_network(subnet)
        self.bridge = bridge
        self.gateway = str(next(self.net.hosts()))
        self.home = home

    @property
    def proxy_url(self) -> str:
        return f"http://{self.gateway}:{PROXY_PORT}"

    def address(self, index: int) -> str:
        return str(self.net.network_address + 10 + index)

    def check_free(self) -> None:
        """Refuse a subnet that something other than this lab's bridge already uses."""
        out = sh("ip", "-o", "-4", "addr", "show").stdout
        for line in out.splitlines():
            fields = line.split()
            dev, cidr = fields[1], fields[3]
            if dev != self.bridge and ipaddress.ip_interface(cidr).network.overlaps(self.net):
                raise LabError(
                    f"lab subnet {self.net} is already used by {dev} ({cidr}); "
                    "pick another with FABSTACK_LAB_SUBNET=10.X.Y.0/24"
                )

    def ensure_bridge(self) -> None:
        if sh("ip", "link", "show", self.bridge, check=False).returncode != 0:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
        cidr = f"{self.gateway}/{self.net.prefixlen}"
        if cidr not in sh("ip", "-o", "-4", "addr", "show", "dev", self.bridge).stdout:
            sh("ip", "addr", "add", cidr, "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def remove_bridge(self) -> None:
        sh("ip", "link", "del", self.bridge, check=False)

    # per-host namespace ------------------------------------------------------------
    def add_host(self, netns: str, veth: str, address: str) -> None:
        self.remove_host(netns, veth)
        sh("ip", "netns", "add", netns)
        # a host keeps its MAC across power cycles, as a server's NIC does: with a new one its
        # neighbours kept sending to the old MAC until their ARP entries aged (up to ~45 s)
        mac = "02:fa:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", netns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", netns, "addr", "add", f"{address}/{self.net.prefixlen}", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")

    @staticmethod
    def netns_pids(netns: str) -> list[int]:
        proc = sh("ip", "netns", "pids", netns, check=False)
        return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []

    @staticmethod
    def remove_host(netns: str, veth: str) -> None:
        sh("ip", "link", "del", veth, check=False)
        if Path(f"/run/netns/{netns}").exists():
            sh("ip", "netns", "del", netns, check=False)

    # proxy ---------------------------------------------------------------------------
    @property
    def _proxy_pidfile(self) -> Path:
        return self.home / "proxy" / "pid"

    def proxy_running(self) -> bool:
        try:
            return pid_alive(int(self._proxy_pidfile.read_text()), "tinyproxy")
        except (OSError, ValueError):
            return False

    def ensure_proxy(self) -> None:
        if self.proxy_running():
            return
        run = self.home / "proxy"
        run.mkdir(parents=True, exist_ok=True)
        conf = run / "tinyproxy.conf"
        conf.write_text(
            "User tinyproxy\nGroup tinyproxy\n"
            f"Port {PROXY_PORT}\nListen {self.gateway}\nTimeout 600\nMaxClients 200\n"
            f"Allow {self.net}\nConnectPort 443\nConnectPort 80\nLogLevel Warning\n"
        )
        with open(run / "tinyproxy.log", "ab") as log:
            proc = subprocess.Popen(
                ["tinyproxy", "-d", "-c", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proxy_pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"tinyproxy exited at start; see {run / 'tinyproxy.log'}")
            if f"{self.gateway}:{PROXY_PORT}" in sh("ss", "-ltnH").stdout:
                return
            time.sleep(0.05)
        raise LabError(f"tinyproxy did not listen on {self.gateway}:{PROXY_PORT}; see {run / 'tinyproxy.log'}")

    def stop_proxy(self) -> None:
        """Stop the proxy and wait until it is gone, so a new one can bind the same port."""
        if self.proxy_running():
            pid = int(self._proxy_pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_alive(pid, "tinyproxy") and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid, "tinyproxy"):
                os.kill(pid, signal.SIGKILL)
        self._proxy_pidfile.unlink(missing_ok=True)
