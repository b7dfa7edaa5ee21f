"""The command line as a new user meets it, without hosts: run flags anywhere."""

from __future__ import annotations

import pytest
from conftest import fab
from fabric import Config
from fabric.main import Fab
from invoke import Executor, Exit

from deploy.cli import run_flags_anywhere, take_run_flags
from deploy.connection import forget_key_command
from deploy.tasks import ns


def test_run_flags_are_taken_from_anywhere_and_the_rest_kept_in_order():
    words = ["--settings", "a.yaml", "provision", "--workers", "3", "deploy", "--dry-run", "--json"]
    assert take_run_flags(words) == (
        ["provision", "--workers", "3", "deploy"],
        {"settings": "a.yaml", "dry_run": True, "json": True},
    )
    assert take_run_flags(["status", "--limit=web1,web2", "--role", "app"]) == (
        ["status"],
        {"limit": "web1,web2", "role": "app"},
    )
    # manage's own arguments are never read as fabstack's
    assert take_run_flags(["manage", "--", "shell", "--settings", "x"]) == (
        ["manage", "--", "shell", "--settings", "x"],
        {},
    )


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (
            ["--settings", "a.yaml", "deploy", "--settings", "b.yaml"],
            "--settings given twice (a.yaml and b.yaml); a run has one settings",
        ),
        (["status", "--settings"], "--settings needs a value, e.g. --settings fabstack.yaml"),
        (["status", "--role", "--json"], "--role needs a value"),
        (["status", "--json=yes"], "--json takes no value; drop =yes"),
    ],
)
def test_run_flags_given_badly_are_refused_naming_the_flag(words, message):
    with pytest.raises(Exit) as caught:
        take_run_flags(words)
    assert message in caught.value.message and caught.value.code == 2


def test_the_same_flag_twice_with_one_value_is_fine():
    assert take_run_flags(["provision", "--dry-run", "deploy", "--dry-run"])[1] == {"dry_run": True}


class Recorded(Executor):
    """An executor that runs nothing: it records what each task of the line was given."""

    calls: list = []

    def execute(self, *tasks):
        Recorded.calls = [(call.name, {k.replace("-", "_"): a.value for k, a in call.args.items()}) for call in tasks]
        return {}


def parsed(argv: list[str]) -> list:
    program = Fab(name="fabstack", version="0", namespace=ns, executor_class=Recorded, config_class=Config)
    run_flags_anywhere(program)
    program.run(["fabstack", *argv], exit=False)
    return Recorded.calls


def test_every_task_of_the_line_gets_the_run_flags_wherever_they_stand():
    calls = parsed(["--settings", "p.yaml", "provision", "--workers", "3", "deploy", "--dry-run"])
    assert [name for name, _ in calls] == ["provision", "deploy"]
    for _, args in calls:
        assert args["settings"] == "p.yaml" and args["dry_run"] is True and args["json"] is False
    assert calls[0][1]["workers"] == "3"  # a task's own flag stays its own
    # before this change: deploy ran with ./fabstack.yaml
    assert parsed(["provision", "--settings", "p.yaml", "deploy"])[1][1]["settings"] == "p.yaml"


def test_a_changed_host_key_s_fix_names_each_file_that_holds_the_old_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FABSTACK_LAB_DIR", str(tmp_path / "lab"))
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "known_hosts").write_text(f"203.0.113.5 {key}\n[203.0.113.6]:2222 {key}\n")
    listed = tmp_path / "team_known_hosts"
    listed.write_text(f"203.0.113.5 {key}\n")
    assert forget_key_command("203.0.113.5", 22, [str(listed)]) == (
        f"ssh-keygen -R 203.0.113.5 -f {tmp_path}/lab/known_hosts; ssh-keygen -R 203.0.113.5 -f {listed}"
    )
    assert (
        forget_key_command("203.0.113.6", 2222, [])
        == f"ssh-keygen -R '[203.0.113.6]:2222' -f {tmp_path}/lab/known_hosts"
    )


def test_a_task_in_phases_prints_one_summary_with_every_host_once(capsys):
    from deploy.console import Console
    from deploy.results import HostResult, StepResult

    console = Console()
    lb, app1, app2 = "root@192.0.2.1", "root@192.0.2.11", "root@192.0.2.12"
    console.task_started()
    console.phase_done([HostResult(lb, [StepResult("upstream", "changed", 0.1)], seconds=0.2)])
    console.phase_done([HostResult(app1, [StepResult("release", "changed", 1), StepResult("health", "ok", 1)])])
    console.phase_done([HostResult(lb, [StepResult("upstream", "changed", 0.1)], seconds=0.2)])
    console.phase_done([HostResult(app2, [StepResult("release", "failed", 1, error="boom")], error="")])
    assert capsys.readouterr().out == ""  # no table per phase
    console.task_summary()
    out = capsys.readouterr().out
    assert out.count("HOST ") == 1 and "step 'release' failed: boom" in out
    assert f"{lb} ok=0 changed=2 failed=0\n{app1} ok=1 changed=1 failed=0\n{app2} ok=0 changed=0 failed=1" in out
    console.task_summary()  # a task without phases: its own table was its summary
    assert capsys.readouterr().out == ""


def test_app_is_a_run_flag_every_task_has():
    calls = parsed(["--app", "blog", "provision", "deploy", "status", "logs", "--gunicorn", "manage", "remove"])
    assert [args["app"] for _, args in calls] == ["blog"] * 6
    assert calls[3][1]["gunicorn"] is True  # logs' "only gunicorn's logs" (was --app)
    tasks = [name for name in ns.task_names if not name.startswith("lab.") and name != "steps"]  # no settings read
    assert [t for t in tasks if "app" not in [a.name for a in ns[t].get_arguments()]] == []


SITES_FILE = "apps:\n  shop: {server_name: shop.test}\n  blog: {server_name: blog.test}\n"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["manage", "--", "check"], "fab manage works on one app; the settings have shop, blog: add --app NAME"),
        (["db.restore", "x.dump"], "fab db.restore works on one app; the settings have shop, blog: add --app NAME"),
        (["remove", "--yes"], "fab remove needs --app NAME, the app to take off"),
        (
            ["deploy", "--project", "templates/sample"],
            "--project names one app's code; with several apps add --app NAME",
        ),
        (["status", "--app", "news"], "--app 'news' is not in {file}; its apps: shop, blog"),
    ],
)
def test_tasks_for_one_app_ask_which_before_any_host(tmp_path, words, message):
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES_FILE)
    run = fab("-H", "root@192.0.2.1", *words, settings=sites)  # TEST-NET: nothing there to reach
    assert run.code == 2 and message.format(file=sites) in run.err, run


def test_apps_run_one_after_the_other_and_the_first_failure_stops_the_rest(tmp_path, capsys):
    from invoke import Context

    from deploy import settings as s
    from deploy.invocation import each_app

    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES_FILE.replace("  blog:", "  news: {server_name: news.test}\n  blog:"))
    apps = s.load_apps(str(sites))
    ran = []

    def run(settings):
        ran.append(settings.app_name)
        if settings.app_name == "news":
            raise Exit("fabstack: failed on 1 of 2 host(s): root@web2", code=1)

    with pytest.raises(Exit) as stopped:
        each_app(Context(), apps, run)
    assert ran == ["shop", "news"]  # blog not run on top of a failure
    assert stopped.value.code == 1
    assert stopped.value.message == "fabstack: app news: failed on 1 of 2 host(s): root@web2; not run for blog"
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("app ")] == [
        "app shop",
        "app news",
    ]


def test_a_host_that_failed_for_two_apps_is_named_once():
    from deploy.invocation import fail_if_any
    from deploy.results import HostResult

    rows = [HostResult("root@a", error="unreachable"), HostResult("root@b"), HostResult("root@a", error="unreachable")]
    with pytest.raises(Exit) as failed:
        fail_if_any(rows)  # status's one table: a row per app per host
    assert failed.value.message == "fabstack: failed on 1 of 2 host(s): root@a"


def test_limit_picks_the_apps_whose_inventory_has_the_host(tmp_path):
    from invoke import Context

    from deploy import settings as s
    from deploy.invocation import on_limited_hosts

    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "apps:\n"
        "  shop: {server_name: shop.test, hosts: [root@10.0.0.11, root@10.0.0.12]}\n"
        "  blog: {server_name: blog.test, hosts: [root@10.0.0.12]}\n"
    )
    apps = s.load_apps(str(sites))
    names = lambda limit: [a.app_name for a in on_limited_hosts(Context(), apps, limit)]  # noqa: E731
    assert names("10.0.0.11") == ["shop"]  # blog has no such host: not run, not an error
    assert names("root@10.0.0.12") == ["shop", "blog"]
    assert names("") == ["shop", "blog"]
    assert names("10.0.0.99") == ["shop", "blog"]  # no app has it: hosts_of names the inventory


def test_secret_rotate_refuses_a_key_the_settings_give_before_any_host(tmp_path):
    settings = tmp_path / "fabstack.yaml"
    settings.write_text("secrets:\n  SECRET_KEY: env:SHOP_SECRET_KEY\n")
    run = fab("-H", "root@192.0.2.1", "secret.rotate", settings=settings, env={"SHOP_SECRET_KEY": "k" * 50})
    assert run.code == 2, run  # TEST-NET: nothing there to reach, and nothing was tried
    assert "SECRET_KEY comes from your secrets: setting; put a new value there" in run.err, run


@pytest.mark.parametrize("task", [["lock"], ["maintenance", "on"]])
@pytest.mark.parametrize("message", ["two\nlines", "an \x1b[31mescape", "x" * 501])
def test_a_message_that_is_not_one_plain_line_is_refused_before_any_host(tmp_path, task, message):
    settings = tmp_path / "fabstack.yaml"
    settings.write_text("{}\n")
    run = fab("-H", "root@192.0.2.1", *task, "--message", message, settings=settings)
    assert run.code == 2, run  # TEST-NET: nothing there to reach, and nothing was tried
    assert run.err.strip() == "fabstack: --message is one line of at most 500 characters, with no control characters"
