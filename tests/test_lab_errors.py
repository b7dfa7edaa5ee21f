"""The lab's preflight errors name the problem and the fix (no hosts needed)."""

from __future__ import annotations

import pytest

from deploy.lab import Lab, LabError, system
from deploy.lab.image import base_image, snapshot_layers


def test_not_linux(monkeypatch):
    monkeypatch.setattr(system.platform, "system", lambda: "Darwin")
    with pytest.raises(LabError, match=r"the lab needs Linux \(namespaces, overlayfs\); this is Darwin"):
        system.preflight()


def test_not_root(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="the lab needs root .*: run it with sudo"):
        system.preflight()


def test_missing_packages_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system.shutil, "which", lambda cmd: None if cmd in ("debootstrap", "tinyproxy") else "/x")
    with pytest.raises(LabError) as err:
        system.preflight()
    assert str(err.value) == (
        "missing system packages: debootstrap tinyproxy; install with: apt-get install debootstrap tinyproxy"
    )


def test_bad_arguments(tmp_path):
    lab = Lab(tmp_path, subnet="10.81.0.0/24")
    with pytest.raises(LabError, match="unknown init 'docker'; use --init systemd or --init sshd"):
        lab.up(init="docker")
    with pytest.raises(LabError, match="--count must be at least 1"):
        lab.up(count=0)
    with pytest.raises(LabError, match="host name 'averyverylongprefix1' must be 1-8"):
        lab.up(prefix="averyverylongprefix")


def test_unknown_snapshot_lists_the_saved_ones(tmp_path):
    (tmp_path / "prov").mkdir()
    (tmp_path / "prov" / "meta.json").write_text("{}")
    with pytest.raises(
        LabError, match=r"no snapshot named 'nope'; saved: prov \(make one with fab lab.snapshot NAME\)"
    ):
        snapshot_layers(tmp_path, "nope")


def test_unknown_suite_and_snapshot_arguments(tmp_path):
    with pytest.raises(LabError, match="unknown suite 'sid'; use one of: bookworm"):
        base_image(tmp_path, "sid", print)
    lab = Lab(tmp_path, subnet="10.81.0.0/24")
    with pytest.raises(LabError, match="snapshot name 'Bad Name': use up to 8 lowercase letters"):
        lab.snapshot("Bad Name", "lab1")
    with pytest.raises(LabError, match="no lab host 'lab9'; see fab lab.status"):
        lab.snapshot("ok", "lab9")
