"""`fabstack`: the installed command. The same tasks and flags as `fab` in the checkout,
run from any directory (reading ./fabstack.yaml there), with fabstack's executor."""

from __future__ import annotations

from fabric import Config
from fabric.main import Fab

from deploy.cli import run_flags_anywhere
from deploy.executor import HostsExecutor
from deploy.tasks import ns

program = Fab(name="fabstack", version="0.1.0", namespace=ns, executor_class=HostsExecutor, config_class=Config)


def main() -> None:
    run_flags_anywhere(program)
    program.run()


if __name__ == "__main__":
    main()
