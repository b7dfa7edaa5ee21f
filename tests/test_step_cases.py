"""Every step as data (pyinfra's tests/operations/*.json): tests/steps/MODULE.STEP/CASE.yaml
holds settings and the host's facts in, and the operations out, as `calls()` shows them.
A case is read here, run with no host and no connection, and compared line by line.

A case's keys:
  why       one line: what the case shows
  settings  the settings, as in fabstack.yaml (validated: a case cannot hold what a user could not)
  target    the host the step runs on (default root@203.0.113.5)
  facts     changes to a converged app host's facts (test_steps.CONVERGED); null drops one
  fresh     true: start from no facts at all (a host fabstack never touched)
  args      the step's arguments after the host; "{sample}" is a release of the sample project
  notified  handlers notified by earlier steps of the run (RELOAD_NGINX)
  probe     what every probe prints
  ops       the operations, one line each; "{sample}" is that release's id
  fails     instead of ops: the step fails with a message that contains this
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_steps import CONVERGED, calls, drive, host

from deploy.ops import Handler
from deploy.release import Release
from deploy.reports import steps_table
from deploy.results import StepFailed
from deploy.steps import registered

CASES = Path(__file__).parent / "steps"
KEYS = {"why", "settings", "target", "facts", "fresh", "args", "notified", "probe", "ops", "fails"}


def cases() -> list[Path]:
    return sorted(CASES.glob("*/*.yaml"))


def sample_release() -> Release:
    return Release(REPO / "templates" / "sample", "staticfiles")


def run_case(path: Path) -> tuple[dict, list[str] | str]:
    """The case, and what its step yields (or the message it fails with)."""
    case = yaml.safe_load(path.read_text())
    unknown = set(case) - KEYS
    assert not unknown, f"{path}: unknown keys {sorted(unknown)}"
    step = registered()[path.parent.name]
    facts = {} if case.get("fresh") else dict(CONVERGED)
    for key, value in (case.get("facts") or {}).items():
        if value is None:
            facts.pop(key, None)
        else:
            facts[key] = str(value)
    h = host(facts, case.get("target", "root@203.0.113.5"), **(case.get("settings") or {}))
    for handler in case.get("notified", []):
        h.notify(Handler[handler])
    release = sample_release() if "{sample}" in repr(case) else None
    args = [release if arg == "{sample}" else arg for arg in case.get("args", [])]
    try:
        shown = calls(drive(step(h, *args), probe_output=case.get("probe", "")))
    except StepFailed as exc:
        return case, str(exc)
    return case, [line.replace(release.id, "{sample}") if release else line for line in shown]


@pytest.mark.parametrize("path", cases(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_step_case(path):
    case, got = run_case(path)
    assert case.get("why"), f"{path}: say why the case is there"
    if "fails" in case:
        assert isinstance(got, str) and case["fails"] in got, got
    else:
        assert got == case["ops"]


def test_every_registered_step_has_a_case():
    have = {p.parent.name for p in cases()}
    missing = sorted(set(registered()) - have)
    assert not missing, f"steps without a case in tests/steps/: {missing}"
    assert not have - set(registered()), f"cases of no registered step: {sorted(have - set(registered()))}"


def test_each_step_is_named_once():
    names = [s.name for s in registered().values()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_fab_steps_lists_every_registered_step_with_its_name():
    lines = steps_table(registered())
    assert len(lines) == len(registered())
    assert any(line.startswith("nginx.running ") and " nginx running " in line for line in lines)
    assert all(line.split()[0] in registered() for line in lines)
