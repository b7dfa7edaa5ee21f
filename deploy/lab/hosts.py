"""Lab host life cycle: up (idempotent), down (leaves nothing), status, snapshot."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.connection import lab_home
from deploy.lab import image
from deploy.lab.acme import AcmeServer
from deploy.lab.network import Network
from deploy.lab.system import (
    LabError,
    ensure_inotify_room,
    host_cgroups,
    mounts_under,
    pid_alive,
    preflight,
    remove_cgroups,
    remove_tree,
    sh,
)

INITS = ("systemd", "sshd")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,7}$")
BOOT_TIMEOUT = 60


@dataclass
class Host:
    name: str
    index: int
    address: str
    init: str
    suite: str
    layers: list[str]
    pid: int = 0
    tag: str = ""  # the lab's tag: interface and namespace names are global, so they carry it

    @property
    def netns(self) -> str:
        return f"fs{self.tag}-{self.name}"

    @property
    def veth(self) -> str:
        return self.netns

    @property
    def target(self) -> str:
        return f"root@{self.address}"


def default_lab() -> Lab:
    """The lab the `fab lab.*` tasks and fabstack's default known_hosts refer to."""
    return Lab(lab_home(), subnet=os.environ.get("FABSTACK_LAB_SUBNET", "10.77.0.0/24"))


class Lab:
    def __init__(self, home: Path, subnet: str = "10.77.0.0/24", bridge: str | None = None, log=print):
        self.home = Path(home)
        self.cache = Path(os.environ.get("FABSTACK_LAB_CACHE", self.home / "images"))
        self.snapshots = self.home / "snapshots"
        self.hosts_dir = self.home / "hosts"
        self.known_hosts = self.home / "known_hosts"
        self.tag = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:4]
        self.bridge = bridge or f"fsbr{self.tag}"
        self.network = Network(subnet, self.bridge, self.home)
        self.log = log

    # queries -------------------------------------------------------------------------
    def hosts(self) -> list[Host]:
        found = []
        for meta in sorted(self.hosts_dir.glob("*/host.json")):
            try:
                found.append(Host(**json.loads(meta.read_text())))
            except (ValueError, TypeError):
                continue
        return sorted(found, key=lambda h: h.index)

    def is_running(self, host: Host) -> bool:
        needle = "systemd-nspawn" if host.init == "systemd" else "unshare"
        return host.pid > 0 and pid_alive(host.pid, needle) and _ssh_banner(host.address, 0.5)

    def status(self) -> list[dict]:
        return [{**asdict(h), "state": "running" if self.is_running(h) else "dead"} for h in self.hosts()]

    # up ------------------------------------------------------------------------------
    def up(
        self, count: int = 1, init: str = "systemd", suite: str = "bookworm", prefix: str = "lab", snapshot: str = ""
    ) -> list[Host]:
        """Ensure hosts PREFIX1..PREFIXcount run; keep the healthy ones, rebuild the rest.
        Arguments are checked first: a wrong one is named as such, root or not."""
        if init not in INITS:
            raise LabError(f"unknown init {init!r}; use --init systemd or --init sshd")
        if count < 1:
            raise LabError(f"--count must be at least 1, got {count}")
        names = [f"{prefix}{i}" for i in range(1, count + 1)]
        for name in names:
            if not NAME_RE.match(name):
                raise LabError(f"host name {name!r} must be 1-8 lowercase letters, digits or '-': shorten --prefix")
        preflight()
        self.network.check_free()
        self.network.ensure_bridge()
        self.network.ensure_proxy()
        if init == "systemd":
            ensure_inotify_room()
        if snapshot:
            meta = image.snapshot_layers(self.snapshots, snapshot)
            layers, suite = meta["layers"], meta["suite"]
        else:
            layers = [str(image.base_image(self.cache, suite, self.log))]
        existing = {h.name: h for h in self.hosts()}
        to_start = []
        for name in names:
            host = existing.get(name)
            if host and self.is_running(host):
                if (host.init, host.layers) != (init, layers):
                    raise LabError(
                        f"{name} already runs with init={host.init} from {host.layers[0]}; "
                        "run fab lab.down first or choose another --prefix"
                    )
                continue
            if host:
                self._destroy(host)
            to_start.append(self._new_host(name, init, suite, layers))
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._prepare_root, to_start))  # ssh-keygen dominates: in parallel
            self._write_known_hosts()
            list(pool.map(self._boot, to_start))
        wanted = set(names)
        return [h for h in self.hosts() if h.name in wanted]

    def _new_host(self, name: str, init: str, suite: str, layers: list[str]) -> Host:
        used = {h.index for h in self.hosts()}
        index = next(i for i in range(1, 240) if i not in used)
        host = Host(name, index, self.network.address(index), init, suite, layers, tag=self.tag)
        self._save(host)
        return host

    def _dir(self, host: Host) -> Path:
        return self.hosts_dir / host.name

    def _save(self, host: Host) -> None:
        self._dir(host).mkdir(parents=True, exist_ok=True)
        tmp = self._dir(host) / "host.json.tmp"
        tmp.write_text(json.dumps(asdict(host), indent=1))
        tmp.rename(self._dir(host) / "host.json")

    def _prepare_root(self, host: Host) -> None:
        base = self._dir(host)
        for sub in ("upper", "work", "root"):
            (base / sub).mkdir(exist_ok=True)
        root = base / "root"
        opts = f"lowerdir={':'.join(host.layers)},upperdir={base / 'upper'},workdir={base / 'work'}"
        sh("mount", "-t", "overlay", "overlay", "-o", opts, str(root))
        image.set_proxy(root, self.network.proxy_url)
        (root / "etc/hostname").write_text(host.name + "\n")
        (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host.name}\n")
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        sh("chroot", str(root), "ssh-keygen", "-A")
        # as a cloud image ships it: keys only, root by key
        (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
        (root / "etc/ssh/sshd_config.d/50-lab.conf").write_text(
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        )
        auth = root / "root/.ssh/authorized_keys"
        auth.parent.mkdir(mode=0o700, exist_ok=True)
        auth.write_text(controller_public_key())
        auth.chmod(0o600)

    def _boot(self, host: Host) -> None:
        self.network.add_host(host.netns, host.veth, host.address)
        root = self._dir(host) / "root"
        if host.init == "systemd":
            _ensure_nspawn_tmpfs()
            argv = [
                "systemd-nspawn", "-q", "-b", "-D", str(root), f"--network-namespace-path=/run/netns/{host.netns}",
                "-M", host.name, "--register=no", "--keep-unit",
                "--capability=CAP_NET_ADMIN",  # its own network namespace: a firewall of its own, as a server has
                "--bind=/dev/fuse",  # FUSE, as a server's kernel has it: a GlusterFS client mounts through it
            ]  # fmt: skip
            cgroups = host_cgroups(host.netns)
            for cgroup in cgroups:
                cgroup.mkdir(exist_ok=True)
            # join them, then become nspawn: its payload/ and supervisor/ go under them
            join = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs"; shift; done; shift; exec "$@"'
            argv = ["sh", "-c", join, "sh", *map(str, cgroups), "--", *argv]
        else:
            script = (
                f"hostname {host.name}; mount --make-rprivate /; mount -t proc proc {root}/proc; "
                f"mount -t sysfs sysfs {root}/sys; mount --rbind /dev {root}/dev; mkdir -p {root}/run/sshd; "
                f"exec chroot {root} /usr/sbin/sshd -D -e"
            )
            argv = [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--mount",
                "--pid",
                "--uts",
                "--fork",
                "bash",
                "-c",
                script,
            ]
        with open(self._dir(host) / "console.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        host.pid = proc.pid
        self._save(host)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(
                    f"{host.name} exited while booting (exit {proc.returncode}); its console ends: {self._console_end(host)}"
                )
            if _ssh_banner(host.address, 0.3):
                return
            time.sleep(0.1)
        raise LabError(
            f"{host.name} did not answer SSH within {BOOT_TIMEOUT}s; its console ends: {self._console_end(host, 8)}"
        )

    def _console_end(self, host: Host, lines: int = 3) -> str:
        """The console's last lines, for an error CI prints (the lab, and its logs, are gone after the run)."""
        text = (self._dir(host) / "console.log").read_text(errors="replace")
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # systemd's colours
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(nothing)"

    def _write_known_hosts(self) -> None:
        lines = []
        for host in self.hosts():
            for pub in sorted((self._dir(host) / "root/etc/ssh").glob("ssh_host_*_key.pub")):
                keytype, key = pub.read_text().split()[:2]
                lines.append(f"{host.address} {keytype} {key}\n")
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.rename(self.known_hosts)

    # down ----------------------------------------------------------------------------
    @property
    def acme(self) -> AcmeServer:
        """The lab's ACME server (pebble) on the bridge address: HTTPS rehearsed end to end."""
        return AcmeServer(self.network.gateway, self.home / "acme")

    def start_acme(self, names: dict[str, str]) -> AcmeServer:
        """The ACME server running, each name resolving to its address for it."""
        self.network.ensure_bridge()
        server = self.acme
        server.start()
        for name, address in names.items():
            server.add_name(name, address)
        return server

    def down(self, purge: bool = False) -> int:
        """Stop every host and remove all the lab made; with purge, the image cache too."""
        preflight()
        self.acme.stop()
        hosts = self.hosts()
        for host in hosts:  # every power cut first: the hosts' ends overlap
            self._power_off(host)
        with ThreadPoolExecutor(max_workers=8) as pool:  # then their disks (rm -rf waits on the disk)
            list(pool.map(self._take_apart, hosts))
        # leftovers with no host.json (a run killed between mkdir and save)
        for leftover in self.hosts_dir.glob("*") if self.hosts_dir.exists() else []:
            remove_tree(leftover)
        for netns in sh("ip", "netns", "list").stdout.split("\n"):
            name = netns.split(" ")[0]
            if name.startswith(f"fs{self.tag}-") and not any(h.netns == name for h in self.hosts()):
                self._kill_netns(name)
                sh("ip", "netns", "del", name, check=False)
        remove_cgroups(self._cgroups())
        self.network.stop_proxy()
        self.network.remove_bridge()
        self.known_hosts.unlink(missing_ok=True)
        if purge:
            remove_tree(self.snapshots)
            remove_tree(self.cache)
        return len(hosts)

    def _destroy(self, host: Host) -> None:
        self._power_off(host)
        self._take_apart(host)
        self._write_known_hosts()

    @staticmethod
    def _power_off(host: Host) -> None:
        if host.pid and (pid_alive(host.pid, "systemd-nspawn") or pid_alive(host.pid, "unshare")):
            _kill(host.pid)

    def _take_apart(self, host: Host) -> None:
        """A powered-off host's processes, cgroups, network and disk removed."""
        self._kill_netns(host.netns)
        remove_cgroups(host_cgroups(host.netns))
        self.network.remove_host(host.netns, host.veth)
        remove_tree(self._dir(host))

    def power_cycle(self, name: str) -> Host:
        """Cut a host's power and boot it again: every process killed, the disk kept. What
        ran there must come back on its own (that is what this is for)."""
        preflight()
        host = next((h for h in self.hosts() if h.name == name), None)
        if host is None:
            raise LabError(f"no lab host {name!r}; see fab lab.status")
        if host.pid and (pid_alive(host.pid, "systemd-nspawn") or pid_alive(host.pid, "unshare")):
            _kill(host.pid)
        self._kill_netns(host.netns)
        remove_cgroups(host_cgroups(host.netns))
        self.network.remove_host(host.netns, host.veth)
        if host.init == "sshd":  # no init to clear /run at boot: do what a reboot's tmpfs would
            remove_tree(self._dir(host) / "root/run")
        self._boot(host)
        return host

    @staticmethod
    def _kill_netns(netns: str) -> None:
        for _ in range(50):
            pids = Network.netns_pids(netns)
            if not pids:
                return
            for pid in pids:
                _kill(pid)
            time.sleep(0.1)
        raise LabError(f"processes in {netns} survived SIGKILL: {pids}")

    # snapshots -----------------------------------------------------------------------
    def snapshot(self, name: str, host_name: str) -> Path:
        """Save host_name's disk as snapshot NAME; `up(snapshot=NAME)` starts hosts from it."""
        if not NAME_RE.match(name.replace("_", "-")):
            raise LabError(f"snapshot name {name!r}: use up to 8 lowercase letters, digits or '-'")
        host = next((h for h in self.hosts() if h.name == host_name), None)
        if host is None:
            raise LabError(f"no lab host {host_name!r}; see fab lab.status")
        final = str(self.snapshots / name / "layer")
        users = [h.name for h in self.hosts() if final in h.layers]
        if users:
            raise LabError(f"snapshot {name!r} is in use by {', '.join(users)}; lab.down them or pick another name")
        preflight()
        return image.save_snapshot(self.snapshots, name, self._dir(host) / "upper", host.layers, host.suite)

    def leftovers(self) -> dict:
        """What the lab has on this machine now (used to prove down leaves nothing)."""
        mine = f"fs{self.tag}-"
        netns = [n.split(" ")[0] for n in sh("ip", "netns", "list").stdout.splitlines() if n.startswith(mine)]
        links = [ln for ln in sh("ip", "-o", "link", "show").stdout.splitlines() if mine in ln or self.bridge in ln]
        return {
            "mounts": mounts_under(self.hosts_dir) if self.hosts_dir.exists() else [],
            "netns": netns,
            "links": links,
            "host_dirs": [p.name for p in self.hosts_dir.glob("*")] if self.hosts_dir.exists() else [],
            "proxy": self.network.proxy_running(),
            "cgroups": [str(d) for d in self._cgroups()],
        }

    def _cgroups(self) -> list[Path]:
        """The per-host cgroups of this lab's hosts on this machine, running or left behind."""
        return [d for top in {c.parent for c in host_cgroups("")} for d in top.glob(f"fabstack-lab-fs{self.tag}-*")]


def controller_public_key() -> str:
    """The controller user's SSH public key, created (ed25519) when there is none."""
    ssh_dir = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        pub = ssh_dir / f"{name}.pub"
        if pub.exists() and (ssh_dir / name).exists():
            return pub.read_text()
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fabstack-lab", "-f", str(ssh_dir / "id_ed25519"))
    return (ssh_dir / "id_ed25519.pub").read_text()


def _ssh_banner(address: str, timeout: float) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _ensure_nspawn_tmpfs() -> None:
    # /run is not a tmpfs on this kind of machine; nspawn needs one for its propagation dir.
    path = Path("/run/systemd/nspawn")
    path.mkdir(parents=True, exist_ok=True)
    if not mounts_under(path):
        sh("mount", "-t", "tmpfs", "tmpfs", str(path))
