"""Hooks: scripts of the project that fab runs here, on the machine running it, around
the tasks that change hosts (the hooks setting; Kamal's .kamal/hooks, Capistrano's
before/after). A pre_ hook is a gate: it runs after the deploy lock is taken and before
any host changes, and when it fails nothing is changed. A post_ hook (and on_failure)
runs after; its failure is reported, and nothing is rolled back.

A hook gets the run's facts in its environment: FABSTACK_APP, FABSTACK_TASK,
FABSTACK_HOSTS (comma-separated), FABSTACK_WHO, FABSTACK_RELEASE and
FABSTACK_PREVIOUS_RELEASE (the release put in place and the one before, when the task
switched one), FABSTACK_RESULT (ok or failed, after the task) and FABSTACK_ERROR (why
it failed). Its output goes to stderr, so --json's document on stdout stays one
document. A dry run runs no hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from deploy.settings import Settings


@dataclass(frozen=True)
class HookFailed(Exception):
    hook: str
    path: str
    code: int

    def __str__(self) -> str:
        return f"the {self.hook} hook {self.path} exited {self.code}"


def run(settings: Settings, hook: str, facts: dict[str, str]) -> None:
    """The hook named hook, when the settings give one, in the project directory with the
    run's facts (FABSTACK_NAME for each NAME of facts); HookFailed when it exits non-zero."""
    path = settings.hooks.get(hook)
    if not path:
        return
    env = {**os.environ, **{f"FABSTACK_{name.upper()}": value for name, value in facts.items()}}
    sys.stdout.flush()
    done = subprocess.run([str(settings.project / path)], cwd=settings.project, env=env, stdout=sys.stderr, check=False)
    if done.returncode:
        raise HookFailed(hook, path, done.returncode)
