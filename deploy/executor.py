"""Call each task once with all -H hosts, so deploy.runner can work on them concurrently.

Fabric's own executor calls a task once per host, one host after another, and stops at
the first failure. Invoke's `tasks.executor_class` setting is the supported hook for
changing that; fabfile.py points it here. It is also the one place that sees every task
of a run, so it makes the run's Session (connections, console) and prints --json's one
document at the end, failures included. (--json, --dry-run and the other run flags reach
every task of the line by deploy/cli.py.)
"""

from __future__ import annotations

import shlex
import sys

from invoke import Executor, Exit

from deploy.console import Console
from deploy.invocation import SESSION, set_signals
from deploy.runner import Session


def remainder(joined: str) -> str:
    """What follows `--` on the command line, quoted so a shell-style split gives back
    each argument (invoke joins them with spaces: `shell -c "a b"` would come back as
    three words)."""
    if "--" in sys.argv:
        words = sys.argv[sys.argv.index("--") + 1 :]
        if " ".join(words) == joined:
            return shlex.join(words)
    return joined


class HostsExecutor(Executor):
    def execute(self, *tasks):
        set_signals()
        hosts = ""
        if self.core and "hosts" in self.core[0].args:
            hosts = self.core[0].args.hosts.value or ""
        self.config["fabstack_hosts"] = hosts  # not load_overrides: that would drop --prompt-for-sudo-password's
        self.config["fabstack_remainder"] = remainder(getattr(self.core, "remainder", "") or "")  # fab manage's
        json_mode = any("json" in call.args and call.args.json.value for call in tasks)
        session = Session(Console(json_mode))
        self.config[SESSION] = session  # type: ignore[assignment]  # invoke's config holds any value
        error = ""
        try:
            done = {}
            for call in tasks:  # one at a time: a task that ran in phases gets its one summary
                session.console.task_started()
                try:
                    done.update(super().execute(call))
                finally:
                    session.console.task_summary()
            return done
        except Exit as exc:
            error = str(exc.message or "")
            raise
        finally:
            session.close_all()
            if json_mode:
                session.console.print_document(error)
