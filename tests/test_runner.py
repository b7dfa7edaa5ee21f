"""The runner executes what steps yield, or in a dry run lists it: checked with a host
whose commands are recorded instead of sent (the lab tests send them for real)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from deploy import settings as s
from deploy.cli import Run
from deploy.console import Console
from deploy.ops import Blocked, Check, Command, Diff, Handler, Notify, Probe, Say, Upload
from deploy.results import StepFailed
from deploy.runner import HostRun, Session, headline, keep_copy
from deploy.scripts import plain


class RecordingRun(HostRun):
    """A HostRun whose commands are recorded; `fails` lists call lines that fail."""

    def __init__(self, dry_run: bool, fails: tuple[str, ...] = (), json_mode: bool = False):
        super().__init__(Session(Console(json_mode)), "root@203.0.113.5", None, s.validate({}), Run(dry_run=dry_run))
        self.sent: list[str] = []
        self.fails = fails

    def run(self, shell, check=True, timeout=None):
        self.sent.append(shell.line)
        if shell.line in self.fails:
            raise StepFailed(f"{shell.line} failed", shell.line)
        return f"output of {shell.line}"

    def _upload(self, name, content):
        self.sent.append(f"upload {name}")
        return f"/tmp/stage/{name}"


def step(h):
    staged = yield Upload("site.conf", b"new")
    yield Diff("/etc/site.conf", "new\n", exists=True)
    yield Command(plain(f"install {staged}"), rehearse=plain("nginx -t"))
    out = yield Probe(plain("probe"))
    yield Say(out)
    yield Check(plain("health"))
    yield Notify(Handler.RELOAD_NGINX)


def test_a_real_run_executes_every_operation_in_order(capsys):
    h = RecordingRun(dry_run=False)
    assert h.step(step, name="site") is True
    assert h.sent == ["upload site.conf", "install /tmp/stage/site.conf", "probe", "health"]
    assert h.notified == [Handler.RELOAD_NGINX] and h.result.steps[0].status == "changed"
    assert "output of probe" in capsys.readouterr().out
    assert h.result.steps[0].diff == ""  # diffs are read only when wanted (dry run, --json)


def test_a_dry_run_changes_nothing_and_shows_the_diff(capsys):
    h = RecordingRun(dry_run=True)
    assert h.step(step, name="site") is True  # what a real run would change
    # no upload, no install, no health check; the config test and the probe read only
    assert h.sent == ["cat /etc/site.conf", "nginx -t", "probe"]
    assert "+new" in h.result.steps[0].diff and "+new" in capsys.readouterr().out


def test_a_step_that_yields_no_change_is_ok():
    def reads(h):
        yield Probe(plain("read"))
        yield Check(plain("health"))

    h = RecordingRun(dry_run=False)
    assert h.step(reads, name="reads") is False and h.result.steps[0].status == "ok"


def test_a_failure_is_thrown_into_the_step_which_may_say_more():
    def explains(h):
        try:
            yield Command(plain("apply"))
        except StepFailed as exc:
            raise StepFailed(f"refused: {exc}", exc.command) from None

    h = RecordingRun(dry_run=False, fails=("apply",))
    with pytest.raises(StepFailed, match="refused: apply failed"):
        h.step(explains, name="apply")
    assert h.result.steps[0].status == "failed" and h.result.steps[0].command == "apply"


def test_blocked_fails_a_real_run_and_is_a_change_to_come_in_a_dry_run():
    def blocked(h):
        yield Blocked("not provisioned: run fab provision", "(after fab provision: the release)")

    with pytest.raises(StepFailed, match="not provisioned"):
        RecordingRun(dry_run=False).step(blocked, name="provisioned")
    dry = RecordingRun(dry_run=True)
    assert dry.step(blocked, name="provisioned") is True and "(after fab provision" in dry.result.steps[0].diff


def test_a_step_must_be_a_generator():
    with pytest.raises(TypeError, match="must yield operations"):
        RecordingRun(dry_run=False).step(lambda h: True, name="old style")


def test_a_new_connection_never_writes_into_the_shared_config():
    """Each host's connection gets a clone: making one (Fabric writes inline_ssh_env into
    its config, and invoke rebuilds the dict on a write) left the farm's other threads
    reading an emptied dict in a two-lab CI run (an AttributeError after 1.3 s)."""
    from fabric import Config

    from deploy.connection import new_connection

    shared = Config(overrides={"sudo": {"password": "typed-once"}})
    before = dict(shared._modifications)
    conns = [new_connection(f"root@10.0.0.{n}", shared, 5) for n in (1, 2)]
    assert shared._modifications == before  # nothing written into the shared one
    assert conns[0].config is not shared and conns[0].config is not conns[1].config
    assert conns[1].config.sudo.password == "typed-once"  # what the user gave is in each


def test_output_split_inside_a_character_decodes_whole():
    """invoke decoded each chunk alone: a name like Főtanúsítvány read across two chunks
    came out with two replacement characters (a tree comparison in CI saw it change)."""
    from deploy.connection import WholeCharacters, new_connection

    conn = new_connection("root@10.0.0.1", None, 5)
    runner = conn.config.runners.remote(context=conn)
    assert isinstance(runner, WholeCharacters)
    data = "NetLock_Főtanúsítvány.crt\n".encode()
    cut = data.index("ú".encode()) + 1  # inside the two bytes of ú
    chunks = iter([data[:cut], data[cut:], b""])
    runner.read_chunk_size, runner.encoding = 1000, "utf-8"  # what run() sets from the config
    assert "".join(runner.read_proc_output(lambda size: next(chunks))) == data.decode()


def test_a_build_s_copy_is_kept_only_with_the_sha256_the_host_made(tmp_path):
    partial, target = tmp_path / "k.tar.gz.partial", tmp_path / "k.tar.gz"
    partial.write_bytes(b"what the host packed")
    made = hashlib.sha256(b"what the host packed").hexdigest()
    partial_copy = partial.read_bytes()
    with pytest.raises(StepFailed, match="has sha256 .*the host made 0000000000000000"):
        keep_copy(partial, target, "0" * 64, "/var/lib/fabstack/builds/build.x/venv.tar.gz")
    assert not partial.exists() and not target.exists()  # a swapped archive never reaches the cache
    partial.write_bytes(partial_copy)
    assert keep_copy(partial, target, made, "src") == f"{made} 20"
    assert target.read_bytes() == partial_copy and not partial.exists()


class LocalFiles:
    """The runner's file transfer, from this machine's files (the lab tests use SFTP):
    records the mode the copy had while its bytes were written."""

    def __init__(self):
        self.modes: list[int] = []

    def getfo(self, path, out):
        self.modes.append(os.fstat(out.fileno()).st_mode & 0o777)
        out.write(Path(path).read_bytes())


def test_a_download_is_private_from_its_first_byte(tmp_path):
    h = RecordingRun(dry_run=False)
    h._sftp = LocalFiles()
    source = tmp_path / "backup.dump"
    source.write_bytes(b"rows")
    old = os.umask(0o022)
    try:
        (tmp_path / "copy.dump.partial").write_bytes(b"a stale partial, world-readable")
        shown = h._download(str(source), str(tmp_path / "copy.dump"))
    finally:
        os.umask(old)
    assert h._sftp.modes == [0o600]  # never the umask's 644, even for a moment
    assert (tmp_path / "copy.dump").read_bytes() == b"rows" and shown.endswith(" 4")


@pytest.mark.parametrize(
    ("output", "said"),
    [
        (  # Wagtail's warning printed after the traceback: the exception is the headline
            'Traceback (most recent call last):\n  File "manage.py", line 22, in <module>\n'
            "django.core.management.base.SystemCheckError: SystemCheckError: System check identified some issues:\n"
            "?: (postgres.E005) 'django.contrib.postgres' must be in INSTALLED_APPS.\n"
            "WARNING: wagtail.W001 something else",
            "django.core.management.base.SystemCheckError: SystemCheckError: System check identified some issues:",
        ),
        (
            'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: this migration fails\n',
            "RuntimeError: this migration fails",
        ),
        (  # pip's closing hint is not why
            "error: subprocess-exited-with-error\n  × Getting requirements to build wheel did not run successfully.\n"
            "      Error: pg_config executable not found.\nerror: metadata-generation-failed\n"
            "hint: See above for details.",
            "error: metadata-generation-failed",
        ),
        ("just one line", "just one line"),
    ],
)
def test_a_failure_s_headline_is_the_line_that_says_why(output, said):
    assert headline(output.splitlines()) == said
