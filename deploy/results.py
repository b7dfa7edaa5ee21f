"""What a run returns: each step's outcome, each host's, and the failure a step raises.

Results are plain data. The runner fills them and returns them; printing them (the
summary table, the --json document) happens at the edge, in deploy.console.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class StepFailed(Exception):
    """A remote command failed, or a step found the host unfit; carries the command as
    shown (its call line, not the whole script) and the tail of its output."""

    def __init__(self, message: str, command: str = "", output: str = ""):
        super().__init__(message)
        self.command = command
        self.output = output


@dataclass
class StepResult:
    name: str
    status: str  # ok | changed | failed
    seconds: float
    diff: str = ""
    error: str = ""
    command: str = ""
    output: str = ""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "diff": self.diff,
            "error": self.error,
            "command": self.command,
            "output": self.output,
        }


@dataclass
class HostResult:
    host: str
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    commands: int = 0
    data: dict = field(default_factory=dict)  # what a read-only task found (status, releases, logs)
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(1 for step in self.steps if step.status == status)

    @property
    def failures(self) -> int:
        """Failed steps; a host that broke off outside any step (unreachable) counts one."""
        return self.count("failed") or (1 if self.error else 0)

    @property
    def failed(self) -> bool:
        return self.failures > 0

    def summary(self) -> str:
        """`HOST ok=N changed=M failed=K`: a stable line scripts read."""
        return f"{self.host} ok={self.count('ok')} changed={self.count('changed')} failed={self.failures}"

    @property
    def status(self) -> str:
        return "failed" if self.failed else "changed" if self.count("changed") else "ok"

    def as_dict(self) -> dict:
        """This host in the --json document (docs/json.md)."""
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.count("ok"),
            "changed": self.count("changed"),
            "failed": self.failures,
            "seconds": round(self.seconds, 3),
            "commands": self.commands,
            "error": self.error,
            "steps": [step.as_dict() for step in self.steps],
            "data": self.data,
        }
