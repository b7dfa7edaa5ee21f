"""`fab lab.*`: the lab as a user feature (rehearse a deployment on throwaway servers)."""

from __future__ import annotations

import time

from invoke import Collection, Exit, task


def default_lab():
    """The user's lab; imported on use, so `fab provision` does not pay for the lab's modules."""
    from deploy.lab.hosts import default_lab

    return default_lab()


def _run(action):
    from deploy.lab.system import LabError

    try:
        return action()
    except LabError as exc:
        raise Exit(f"lab: {exc}", code=2) from None


@task(
    help={
        "count": "how many hosts (named PREFIX1..PREFIXN); running ones are kept",
        "init": "systemd (a real boot) or sshd (sshd as PID 1, like a minimal container)",
        "suite": "Debian suite of the base image: bookworm or trixie",
        "prefix": "host name prefix, so several groups can run side by side",
        "from_": "start from a snapshot saved with lab.snapshot instead of the base image",
    }
)
def up(c, count=1, init="systemd", suite="bookworm", prefix="lab", from_=""):
    """Start throwaway Debian hosts reachable over SSH; prints NAME root@ADDRESS."""
    started = time.monotonic()
    lab = default_lab()
    hosts = _run(lambda: lab.up(count=int(count), init=init, suite=suite, prefix=prefix, snapshot=from_))
    for host in hosts:
        print(f"{host.name} {host.target}")
    print(f"lab: {len(hosts)} host(s) up in {time.monotonic() - started:.1f}s; known_hosts: {lab.known_hosts}")


@task(help={"purge": "also delete the cached base images and all snapshots"})
def down(c, purge=False):
    """Stop every lab host and remove what the lab made (mounts, namespaces, links, disks)."""
    count = _run(lambda: default_lab().down(purge=purge))
    print(f"lab: {count} host(s) removed")


@task
def status(c):
    """List lab hosts with their address, init, suite and state."""
    rows = _run(lambda: default_lab().status())
    if not rows:
        print("lab: no hosts (start some with fab lab.up --count 2)")
    for row in rows:
        print(
            f"{row['name']:<12} root@{row['address']:<15} init={row['init']:<8} suite={row['suite']:<9} {row['state']}"
        )


@task(help={"name": "snapshot name", "host": "lab host to save (default: the first one)"})
def snapshot(c, name, host=""):
    """Save a lab host's disk as a snapshot; new hosts start from it with lab.up --from NAME."""
    lab = default_lab()

    def save():
        hosts = lab.hosts()
        source = host or (hosts[0].name if hosts else "")
        return lab.snapshot(name, source)

    print(f"lab: snapshot saved in {_run(save)}")


@task(help={"name": "lab host to power-cycle"})
def reboot(c, name):
    """Power-cycle a lab host: processes killed, disk kept, booted again (does the site come back?)."""
    started = time.monotonic()
    host = _run(lambda: default_lab().power_cycle(name))
    print(f"lab: {host.name} booted again in {time.monotonic() - started:.1f}s")


@task(help={"name": "NAME=ADDRESS: the ACME server resolves NAME to a lab host (repeatable)"}, iterable=["name"])
def acme(c, name=None):
    """Start a real ACME server (pebble) for the lab; prints the tls settings that use it."""
    names = dict(item.partition("=")[::2] for item in name or [])
    server = _run(lambda: default_lab().start_acme(names))
    roots = server.home / "roots.pem"
    roots.write_text(server.roots())
    settings = {
        "email": "you@example.com",
        "directory": server.directory,
        "directory_ca": f"file:{server.directory_ca}",
    }
    print("tls:", *(f"  {key}: {value}" for key, value in settings.items()), sep="\n")
    print(f"lab: verify the sites with curl --cacert {roots}; pebble's log: {server.log}")


lab = Collection("lab", up, down, status, snapshot, reboot, acme)
