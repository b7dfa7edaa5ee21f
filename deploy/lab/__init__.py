"""The lab: throwaway Debian servers on this machine, reached over real SSH.

Each host is an overlay root file system on a cached base image (or a snapshot), its
own network namespace on the lab bridge, its own SSH host key, and either a real
systemd boot (systemd-nspawn) or sshd alone as PID 1 (a minimal container). The lab
writes every host's keys to `known_hosts` in its home, which fabstack reads by
default, so strict host-key checking works against lab hosts with no extra flag.

Product code never imports this package; the tests and `fab lab.*` do.
"""

from __future__ import annotations

import importlib

_HOMES = {"Host": "hosts", "Lab": "hosts", "default_lab": "hosts", "LabError": "system"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    """Import on first use: `fab` loads the lab's tasks on every run, its modules only
    when a lab task runs."""
    if name not in _HOMES:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"deploy.lab.{_HOMES[name]}"), name)
