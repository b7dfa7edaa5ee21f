"""SSH connections with strict host keys.

Fabric's Connection trusts any host key it has not seen (paramiko's AutoAddPolicy) and
never reads known_hosts; a provisioning tool that runs as root must not. We load the
user's known_hosts, the lab's and any listed in settings, and reject unknown keys.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote

HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


class ConnectError(Exception):
    """A host could not be reached or trusted; the message says why and what to do."""


def lab_home() -> Path:
    """Where the lab keeps its state and known_hosts (shared with deploy.lab)."""
    return Path(os.environ.get("FABSTACK_LAB_DIR", "/var/lib/fabstack-lab"))


def known_hosts_files(extra: list[str]) -> list[Path]:
    files = [Path.home() / ".ssh" / "known_hosts", lab_home() / "known_hosts", *map(Path, extra)]
    return [path.expanduser() for path in files]


def check_host_string(target: str) -> str:
    """Return the host string, or raise ValueError naming it and the expected form."""
    if not HOST_RE.match(target) or target.rsplit(":", 1)[-1] == "0":
        raise ValueError(f"host {target!r} is not a valid host string; use [user@]host[:port], e.g. root@203.0.113.5")
    return target


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """ssh's StrictHostKeyChecking=accept-new: trust a host seen for the first time and
    record its key in ~/.ssh/known_hosts. Only for unknown hosts: paramiko raises
    BadHostKeyException for a changed key before any policy is asked."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        path = Path.home() / ".ssh" / "known_hosts"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        with path.open("a") as known:
            known.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


class WholeCharacters(Remote):
    """Fabric's remote runner, decoding each output stream as one: invoke decodes every
    chunk it reads on its own, so a UTF-8 character split between two reads came out as
    two replacement characters (a file name, a log line)."""

    def read_proc_output(self, reader: Callable) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        while True:
            data = reader(self.read_chunk_size)
            if not data:
                break
            yield decoder.decode(data)
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest


def new_connection(target: str, config: Config | None, timeout: int) -> Connection:
    """A Connection (not open) with a config of its own. Fabric's Connection writes an
    attribute into its config as it is made (inline_ssh_env), and invoke rebuilds a
    config's whole dict on every write: with one config shared by the threads of a farm,
    a host whose connection is being made empties the dict under another host's command,
    which then fails with "No attribute or config key found"."""
    own = (config or Config()).clone()
    own.runners.remote = WholeCharacters
    return Connection(target, config=own, connect_timeout=timeout)


def forget_key_command(host: str, port: int, known_hosts: list[str]) -> str:
    """The command that removes host's recorded key from each file that holds one (the
    lab's and settings' files too: a bare `ssh-keygen -R HOST` edits ~/.ssh/known_hosts
    only, and the old key stayed where fabstack read it)."""
    name = host if port == 22 else f"[{host}]:{port}"
    holders = []
    for path in known_hosts_files(known_hosts):
        if path.is_file() and paramiko.HostKeys(str(path)).lookup(name):
            holders.append(path)
    quoted = f"'{name}'" if port != 22 else name
    return "; ".join(f"ssh-keygen -R {quoted} -f {path}" for path in holders) or f"ssh-keygen -R {quoted}"


def connect(
    target: str, config: Config | None, known_hosts: list[str], timeout: int, accept_new: bool = False
) -> Connection:
    """Open an SSH connection that only accepts host keys listed in known_hosts (and,
    with accept_new, keys of hosts never seen before, which it records)."""
    conn = new_connection(target, config, timeout)
    conn.client.set_missing_host_key_policy(AcceptNewPolicy() if accept_new else paramiko.RejectPolicy())
    keys = conn.client.get_host_keys()
    for path in known_hosts_files(known_hosts):
        if path.is_file():
            keys.load(str(path))  # HostKeys.load: read only, never written back
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        raise ConnectError(
            f"HOST KEY CHANGED for {conn.host}: got {exc.key.get_name()} {exc.key.fingerprint}; "
            "this may be an attack. Nothing was changed. If the server was rebuilt, remove its old key: "
            + forget_key_command(conn.host, conn.port, known_hosts)
        ) from None
    except paramiko.AuthenticationException:
        raise ConnectError(
            f"{conn.user}@{conn.host}: authentication failed; check the user name and that your SSH key is in "
            "its ~/.ssh/authorized_keys (pick a key with fab -i KEY)"
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise ConnectError(
                f"{conn.host}: host key unknown; check its fingerprint, then trust it with: "
                f"ssh-keyscan -p {conn.port} {conn.host} >> ~/.ssh/known_hosts (or set accept_new_host_keys: true)"
            ) from None
        raise ConnectError(f"{conn.host}: SSH failed: {exc}") from None
    except TimeoutError:
        raise ConnectError(f"{conn.host}:{conn.port} unreachable: no answer within {timeout}s") from None
    except OSError as exc:
        raise ConnectError(f"{conn.host}:{conn.port} unreachable: {exc.strerror or exc}") from None
    return conn
