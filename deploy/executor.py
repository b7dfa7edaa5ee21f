"""Call each task once with all -H hosts, so deploy.runner can work on them concurrently.

Fabric's own executor calls a task once per host, one host after another, and stops at
the first failure. Invoke's `tasks.executor_class` setting is the supported hook for
changing that; fabfile.py points it here.
"""

from __future__ import annotations

from invoke import Executor


class HostsExecutor(Executor):
    def execute(self, *tasks):
        hosts = ""
        if self.core and "hosts" in self.core[0].args:
            hosts = self.core[0].args.hosts.value or ""
        self.config.load_overrides({"fabstack_hosts": hosts})
        return super().execute(*tasks)
