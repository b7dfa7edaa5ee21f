"""Base images and snapshots: the read-only lower layers of every lab host.

An image is built in `NAME.partial` and renamed into place only when complete, so a
build killed half-way is never used: the next build deletes the partial tree and
starts again. Snapshots are copies of a host's overlay upper layer stacked on the
layers it was started from, so saving a provisioned host costs only what it changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import urllib.parse
from pathlib import Path

from deploy.lab.system import LabError, remove_tree, sh

SUITES = ("bookworm", "trixie")
PACKAGES = "openssh-server,python3,ca-certificates,procps,systemd,systemd-sysv,dbus,iproute2,curl,sudo"
COMPLETE = ".fabstack-complete"
CONTROLLER_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def debian_mirror() -> str:
    """The Debian archive this controller already uses (hosts reach it through the proxy)."""
    if os.environ.get("FABSTACK_LAB_MIRROR"):
        return os.environ["FABSTACK_LAB_MIRROR"]
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            uri = fields.get("URIs", "").split()
            if uri and "debian" in uri[0] and "security" not in uri[0]:
                return uri[0].strip()
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    raise LabError("no Debian mirror in /etc/apt/sources*; set FABSTACK_LAB_MIRROR=http://YOUR-MIRROR/debian")


def base_image(cache: Path, suite: str, log) -> Path:
    """Return the cached base image for suite, building it first if needed (about a minute)."""
    if suite not in SUITES:
        raise LabError(f"unknown suite {suite!r}; use one of: {', '.join(SUITES)}")
    root = cache / suite
    if (root / COMPLETE).exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    # labs share the cache (yours, the suite's two): one builds, the others wait for it
    with open(cache / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / COMPLETE).exists():
            return root
        return _build(cache, suite, log)


def _build(cache: Path, suite: str, log) -> Path:
    root, partial = cache / suite, cache / f"{suite}.partial"
    remove_tree(root)
    remove_tree(partial)
    log(f"building the {suite} base image once (about a minute); it is cached in {cache}")
    proc = sh(
        "debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(partial), debian_mirror(), check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise LabError(f"debootstrap {suite} failed: {' / '.join(tail)}")
    _configure_image(partial)
    (partial / COMPLETE).write_text(suite + "\n")
    partial.rename(root)
    return root


def _configure_image(root: Path) -> None:
    """What a real server has and a bare debootstrap lacks."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sh("chroot", str(root), "systemctl", "enable", "ssh")
    # Timers that take apt's lock at random moments make test runs flaky.
    sh("chroot", str(root), "systemctl", "mask", "apt-daily.timer", "apt-daily-upgrade.timer", check=False)
    if CONTROLLER_CA.exists():
        shutil.copyfile(CONTROLLER_CA, root / "etc/ssl/certs/ca-certificates.crt")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)


def snapshot_layers(snapshots: Path, name: str) -> dict:
    """The metadata of a saved snapshot: its suite and its layers, topmost first."""
    meta = snapshots / name / "meta.json"
    if not meta.exists():
        known = sorted(p.name for p in snapshots.glob("*") if (p / "meta.json").exists()) if snapshots.exists() else []
        raise LabError(
            f"no snapshot named {name!r}; saved: {', '.join(known) or 'none'} (make one with fab lab.snapshot NAME)"
        )
    return json.loads(meta.read_text())


def save_snapshot(snapshots: Path, name: str, upper: Path, lower_layers: list[str], suite: str) -> Path:
    """Copy a host's upper layer into snapshots/NAME, atomically."""
    partial = snapshots / f"{name}.partial"
    final = snapshots / name
    remove_tree(partial)
    partial.mkdir(parents=True)
    sh("sync")
    sh("cp", "-a", str(upper), str(partial / "layer"))
    layer = partial / "layer"
    for key in (layer / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # What a reboot would clear: pid files and sockets of processes that will not be there.
    for entry in (layer / "run").glob("*") if (layer / "run").exists() else []:
        sh("rm", "-rf", str(entry))
    layers = [str(final / "layer"), *lower_layers]
    (partial / "meta.json").write_text(json.dumps({"suite": suite, "layers": layers}, indent=1))
    remove_tree(final)
    partial.rename(final)
    return final


def set_proxy(root: Path, proxy_url: str) -> None:
    """Point apt and pip at the lab proxy: in their own config files, which hold under
    sudo too (Debian's sudo resets the environment and does not read /etc/environment),
    and in /etc/environment (read by sshd's PAM) for everything else.

    Written per host, not in the image, so labs on different subnets share one image.
    """
    (root / "etc/apt/apt.conf.d/99fabstack-lab-proxy").write_text(
        f'Acquire::http::Proxy "{proxy_url}";\nAcquire::https::Proxy "{proxy_url}";\n'
    )
    (root / "etc/pip.conf").write_text(f"[global]\nproxy = {proxy_url}\n")
    env = "".join(f"{k}={proxy_url}\n" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"))
    # the controller's own lab services (the ACME server) are reached directly
    direct = f"localhost,127.0.0.1,{urllib.parse.urlsplit(proxy_url).hostname}"
    env += f"no_proxy={direct}\nNO_PROXY={direct}\n"
    (root / "etc/environment").write_text(env)
