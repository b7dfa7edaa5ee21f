"""Steps: small idempotent units. Each is a generator: it reads the host's facts
(deploy.host.HostContext) and yields operations (deploy.ops) only for what differs;
the runner executes them, or in a dry run lists them.

Each is named once, by `@step` where it is written; `registered()` finds them all, for
`fab steps` and for the test that every step has a data case (tests/steps/)."""

from __future__ import annotations

import importlib

from deploy.ops import Step

MODULES = (
    "server", "firewall", "database", "redis", "claims", "release", "gunicorn", "nginx", "tls", "health",
    "background", "rotation",
)  # fmt: skip


def registered() -> dict[str, Step]:
    """Every step by its key, MODULE.FUNCTION (nginx.running), in plan order of modules."""
    found: dict[str, Step] = {}
    for module in MODULES:
        for attribute, value in vars(importlib.import_module(f"deploy.steps.{module}")).items():
            if isinstance(value, Step) and value.action.__module__ == f"deploy.steps.{module}":
                found[f"{module}.{attribute}"] = value
    return found
