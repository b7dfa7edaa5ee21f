"""fab in the checkout: the same tasks as the installed `fabstack` command (deploy/tasks.py),
and the same command line: the run flags (--settings, --dry-run, ...) anywhere on it
(deploy/cli.py). fab imports this file before it parses the tasks of its line."""

from fabric.main import program

from deploy.cli import run_flags_anywhere
from deploy.tasks import ns

run_flags_anywhere(program)

__all__ = ["ns"]
