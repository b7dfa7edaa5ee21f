"""Steps: small idempotent units. Each is a generator: it reads the host's facts
(deploy.host.HostContext) and yields operations (deploy.ops) only for what differs;
the runner executes them, or in a dry run lists them.

Each is named once, by `@step` where it is written; `registered()` finds them all in
this package's modules, for `fab steps`, for the facts read (the host files steps
declare), for provision (the upkeep steps) and for the test that every step has a data
case (tests/steps/)."""

from __future__ import annotations

import importlib
import pkgutil

from deploy.ops import Step


def registered() -> dict[str, Step]:
    """Every step by its key, MODULE.FUNCTION (nginx.running)."""
    found: dict[str, Step] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        for attribute, value in vars(importlib.import_module(f"{__name__}.{module}")).items():
            if isinstance(value, Step) and value.action.__module__ == f"{__name__}.{module}":
                found[f"{module}.{attribute}"] = value
    return found


def host_files() -> list[str]:
    """The host's own files that steps write (apt's, journald's): read by every facts read."""
    return sorted({path for s in registered().values() for path in s.files})


def upkeep() -> list[Step]:
    """The steps every host gets in provision, after its packages: a server's upkeep."""
    return [s for s in registered().values() if s.upkeep]
