"""The lab: throwaway Debian servers on this machine, reached over real SSH.

Each host is an overlay root file system on a cached base image (or a snapshot), its
own network namespace on the lab bridge, its own SSH host key, and either a real
systemd boot (systemd-nspawn) or sshd alone as PID 1 (a minimal container). The lab
writes every host's keys to `known_hosts` in its home, which fabstack reads by
default, so strict host-key checking works against lab hosts with no extra flag.

Product code never imports this package; the tests and `fab lab.*` do.
"""

from deploy.lab.hosts import Host, Lab, default_lab
from deploy.lab.system import LabError

__all__ = ["Host", "Lab", "LabError", "default_lab"]
