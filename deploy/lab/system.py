"""Controller-side plumbing for the lab: running commands, preflight checks, mounts.

The lab drives the kernel directly (overlayfs, network namespaces, veth, a bridge),
so it needs root on Linux and a handful of Debian packages; every check here turns a
confusing low-level failure into one line that names the missing piece and the fix.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path


class LabError(Exception):
    """A lab failure with a one-line message a user can act on."""


# command -> Debian package that provides it
REQUIRED_COMMANDS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "tinyproxy": "tinyproxy",
    "ip": "iproute2",
    "unshare": "util-linux",
    "ssh-keygen": "openssh-client",
}


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Run a controller command; raise LabError with its stderr on failure."""
    proc = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(args)} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def preflight() -> None:
    """Fail fast on the conditions the lab cannot work around."""
    if platform.system() != "Linux":
        raise LabError(f"the lab needs Linux (namespaces, overlayfs); this is {platform.system()}")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (mounts and network namespaces): run it with sudo")
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if not shutil.which(cmd)})
    if missing:
        raise LabError(
            f"missing system packages: {' '.join(missing)}; install with: apt-get install {' '.join(missing)}"
        )


# Every systemd host's init, dbus and logind take inotify instances (8 for a bare host)
# from one per-user pool -- the controller's root -- whose default, 128, is ~15 hosts: the
# next host's systemd then fails "Failed to create inotify object: Too many open files"
# and boots without parts of itself. LXD and others raise it on a container host alike.
INOTIFY_LIMITS = {"fs/inotify/max_user_instances": 8192, "fs/inotify/max_user_watches": 524288}


def ensure_inotify_room() -> None:
    """Raise the controller's inotify limits to INOTIFY_LIMITS where they are lower."""
    for key, wanted in INOTIFY_LIMITS.items():
        path = Path("/proc/sys") / key
        if int(path.read_text()) < wanted:
            path.write_text(f"{wanted}\n")


# systemd-nspawn puts a container in payload/ and itself in supervisor/ under the cgroup
# it was started in. Started from one cgroup (a controller without systemd, or one login
# session), every container shares /payload/system.slice: a unit that ends in one host
# removes the cgroup another host's unit of the same name is joining ("Failed to attach
# to cgroup /system.slice/NAME.service: No such file or directory", status=219/CGROUP,
# seen in CI on a firewall unit started on three hosts at once). Each container gets a
# cgroup of its own in the hierarchies nspawn uses: the unified one and name=systemd.
def _cgroup_hierarchies() -> list[Path]:
    """The controller's own cgroup directory in the unified and the name=systemd hierarchies."""
    mounts: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _source, options = (tail.split() + ["", ""])[:3]
        point = fields.split()[4]
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", point)
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if controllers in mounts:
            dirs.append(Path(mounts[controllers]) / path.lstrip("/"))
    return dirs


def host_cgroups(name: str) -> list[Path]:
    """A cgroup directory of its own for lab host NAME in each hierarchy nspawn uses."""
    return [d / f"fabstack-lab-{name}" for d in _cgroup_hierarchies()]


def remove_cgroups(dirs: list[Path], timeout: float = 30.0) -> None:
    """Remove cgroup directories, deepest first, once their processes are gone: any
    still listed in one (outside the host's network namespace, or not yet reaped on a
    busy machine) is killed again while it waits."""
    deadline = time.monotonic() + timeout
    for top in dirs:
        if not top.is_dir():
            continue
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [top]:
            while True:
                try:
                    sub.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY: a process still in it
                    if time.monotonic() > deadline:
                        raise LabError(f"cannot remove {sub}: {exc.strerror}; kill what runs in it") from exc
                    _kill_listed(sub)
                    time.sleep(0.05)


def _kill_listed(cgroup: Path) -> None:
    """SIGKILL every process a cgroup directory lists."""
    try:
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        if sh("umount", point, check=False).returncode != 0:
            sh("umount", "-l", point, check=False)
    if mounts_under(path):
        raise LabError(f"could not unmount everything under {path}; see: grep {path} /proc/self/mountinfo")


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to cross into a mount (a still-mounted root would be emptied)."""
    if not path.exists():
        return
    unmount_all(path)
    sh("rm", "-rf", "--one-file-system", str(path))


def pid_alive(pid: int, needle: str) -> bool:
    """True when pid runs and its command line contains needle (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return needle.encode() in cmdline
