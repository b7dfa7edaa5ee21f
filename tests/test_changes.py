"""Changes to a live site: new code, bad templates, app and nginx control (lab hosts)."""

from __future__ import annotations

import gzip
import json
import shlex
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import MODEL, ColdRun, broken_site_templates, converged_pair, fab, get, sample_variant

from deploy.host import BAD_ANSWERS
from deploy.lab import Lab

pytestmark = pytest.mark.lab


def page(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def live(lab: Lab, deployed_snapshot: str, cold: ColdRun):
    """Two hosts started from the deployed snapshot (systemd and sshd), converged again."""
    return converged_pair(lab, deployed_snapshot, cold.settings, "l")


def fetched(url: str, **headers: str) -> tuple[dict[str, str], bytes]:
    """One answer's headers (the last of a name) and body, as the server sent them."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return dict(response.headers.items()), response.read()


# the sample's static files hashed by name, as many projects collect them
HASHED = (
    '\nSTORAGES = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},'
    ' "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}}\n'
)


def gunicorn_pids(r) -> tuple[str, set[str]]:
    master = r.master()
    return master, set(r.run(f"pgrep -P {master}").split())


def test_snapshot_host_starts_app_despite_stale_pidfile(live, cold):
    for host in live:
        assert f'<b id="host">{host.name}</b>' in page(host.address)


def test_new_code_is_a_graceful_reload(live, remote, tmp_path, cold):
    host = live[1]
    r = remote(host)
    project = sample_variant(tmp_path, "v2", title="Version two works")
    master, workers = gunicorn_pids(r)
    run = fab("-H", host.target, "deploy", "--project", project, settings=cold.settings)
    assert run.code == 0, run
    assert "release uploaded: changed" in run.out and "gunicorn running: changed" in run.out
    assert "Version two works" in page(host.address)
    new_master, new_workers = gunicorn_pids(r)
    assert new_master == master
    assert not workers & new_workers and len(new_workers) == 3
    again = fab("-H", host.target, "deploy", "--project", project, settings=cold.settings)
    assert again.code == 0 and again.changed() == 0, again


def current_release(r) -> str:
    return r.run("readlink /srv/django/current").strip()


def test_app_that_cannot_import_stops_before_the_switch(live, remote, tmp_path, cold):
    host = live[1]
    r = remote(host)
    before = current_release(r)
    project = sample_variant(tmp_path, "broken-import", append={"sample/wsgi.py": "import no_such_module\n"})
    run = fab("-H", host.target, "deploy", "--project", project, settings=cold.settings)
    assert run.code == 1, run
    assert "release uploaded: failed: ModuleNotFoundError: No module named 'no_such_module'" in run.out
    assert current_release(r) == before
    assert ".partial" not in r.run("ls -a /srv/django/releases")  # nothing of the broken release is left
    assert f'<b id="host">{host.name}</b>' in page(host.address)


def test_release_that_fails_its_health_check_is_rolled_back(live, remote, tmp_path, cold):
    host = live[1]
    r = remote(host)
    before = current_release(r)
    broken_view = "\n\ndef index(request):  # replaces the working view\n    raise RuntimeError('v3 is broken')\n"
    project = sample_variant(tmp_path, "broken-view", append={"sample/views.py": broken_view})
    errors_before = r.run("grep -c '\"GET / HTTP/1.1\" 500' /var/log/django/access.log || true").strip()
    run = fab("-H", host.target, "deploy", "--project", project, settings=cold.settings)
    assert run.code == 1, run
    assert "release current: changed" in run.out and "rollback: changed" in run.out
    assert "does not answer: GET / on unix:/srv/django/run/gunicorn.sock: HTTP 500" in run.out
    # an answer is judged at once: three 500s, not health_retries (150) tries
    errors_after = r.run("grep -c '\"GET / HTTP/1.1\" 500' /var/log/django/access.log || true").strip()
    assert int(errors_after) - int(errors_before) == BAD_ANSWERS, run
    assert current_release(r) == before
    assert f'<b id="host">{host.name}</b>' in page(host.address)


def test_bad_nginx_template_keeps_previous_config_and_site(live, remote, tmp_path, cold):
    host = live[0]
    r = remote(host)
    settings = tmp_path / "fabstack.yaml"
    settings.write_text(cold.settings.read_text() + f"templates_dir: {broken_site_templates(tmp_path)}\n")
    before = r.run("sha256sum /etc/nginx/sites-available/django.conf; ls /etc/nginx/sites-enabled")
    nginx_pid = r.run("cat /run/nginx.pid")
    run = fab("-H", host.target, "provision", settings=settings)
    assert run.code == 1, run
    assert 'unknown directive "no_such_directive"' in run.out
    assert "previous config restored" in run.out
    assert r.run("sha256sum /etc/nginx/sites-available/django.conf; ls /etc/nginx/sites-enabled") == before
    assert r.run("nginx -t 2>&1 && cat /run/nginx.pid").endswith(nginx_pid)
    assert f'<b id="host">{host.name}</b>' in page(host.address)


@pytest.mark.parametrize("index", [0, 1], ids=["systemd", "sshd"])
def test_stop_start_restart_reload(live, remote, index, cold):
    host = live[index]
    r = remote(host)
    assert fab("-H", host.target, "stop", settings=cold.settings).code == 0
    assert r.run("ps -eo args | grep -c '[b]in/gunicorn' || true").strip() == "0"
    assert not r.run("ls /srv/django/run").strip()
    start = fab("-H", host.target, "start", settings=cold.settings)
    assert start.code == 0 and start.changed() == 1, start
    assert fab("-H", host.target, "start", settings=cold.settings).changed() == 0
    master, workers = gunicorn_pids(r)
    assert fab("-H", host.target, "restart", settings=cold.settings).code == 0
    restarted, _ = gunicorn_pids(r)
    assert restarted != master
    assert fab("-H", host.target, "reload", settings=cold.settings).code == 0
    reloaded, new_workers = gunicorn_pids(r)
    assert reloaded == restarted and len(new_workers) == 3
    assert f'<b id="host">{host.name}</b>' in page(host.address)


def test_app_outlives_the_ssh_session_that_started_it(live, remote, cold):
    host = live[1]
    run = fab("-H", host.target, "restart", settings=cold.settings)
    assert run.code == 0, run
    # that fab process and its SSH session are gone; the app is still there
    r = remote(host)
    master, _ = gunicorn_pids(r)
    assert r.run(f"ps -o user=,sid= -p {master}").split()[0] == "django"
    assert f'<b id="host">{host.name}</b>' in page(host.address)


def test_restart_nginx_refused_when_configtest_fails(live, remote):
    host = live[0]
    r = remote(host)
    pid = r.run("cat /run/nginx.pid").strip()
    r.run("echo 'broken here' > /etc/nginx/conf.d/broken.conf")
    try:
        run = fab("-H", host.target, "restart-nginx")
        assert run.code == 1, run
        assert "nginx restart refused" in run.out
        assert r.run("cat /run/nginx.pid").strip() == pid
        assert fab("-H", host.target, "nginx-configtest").code == 1
    finally:
        r.run("rm -f /etc/nginx/conf.d/broken.conf")
    ok = fab("-H", host.target, "restart-nginx")
    assert ok.code == 0, ok
    assert r.run("cat /run/nginx.pid").strip() != pid
    assert fab("-H", host.target, "nginx-configtest").code == 0


PY = "/srv/django/venv/bin/python"
DB = "/srv/django/shared/data/db.sqlite3"
SQL_INSERT = f"import sqlite3; c = sqlite3.connect('{DB}'); c.execute(\"insert into auth_group(name) values ('kept')\"); c.commit()"
SQL_COUNT = f"import sqlite3; print(sqlite3.connect('{DB}').execute(\"select count(*) from auth_group where name = 'kept'\").fetchone()[0])"


def deploy_releases(host, tmp_path, names: str, settings) -> None:
    """Deploy one sample variant per letter, in order, each saying `Release X`."""
    for name in names:
        project = sample_variant(tmp_path, name, title=f"Release {name}")
        run = fab("-H", host.target, "deploy", "--project", project, settings=settings)
        assert run.code == 0, run


def test_releases_rollback_and_pruning(live, remote, tmp_path, cold):
    host = live[0]
    r = remote(host)
    # shared state written before: an upload and a database row
    r.run("echo kept-upload > /srv/django/shared/media/kept.txt")
    r.run(f"{PY} -c {shlex.quote(SQL_INSERT)}")
    deploy_releases(host, tmp_path, "AB", cold.settings)
    assert "Release B" in page(host.address)
    listing = fab("-H", host.target, "releases", settings=cold.settings)
    lines = [line.split("] ", 1)[1] for line in listing.out.splitlines() if line.startswith(f"[{host.target}] ")]
    assert lines[0].endswith("(current)") and not lines[1].endswith("(current)"), listing
    b_id, a_id = lines[0].split()[0], lines[1].split()[0]  # each line: ID COMMIT TIME SUBJECT
    master, _ = gunicorn_pids(r)
    back = fab("-H", host.target, "rollback", settings=cold.settings)
    assert back.code == 0 and "rollback: changed" in back.out, back
    assert "Release A" in page(host.address) and current_release(r).endswith(a_id)
    assert gunicorn_pids(r)[0] == master  # graceful: a HUP, not a new master
    forward = fab("-H", host.target, "rollback", "--to", b_id, settings=cold.settings)
    assert forward.code == 0 and "Release B" in page(host.address), forward
    missing = fab("-H", host.target, "rollback", "--to", "nope", settings=cold.settings)
    assert missing.code == 1 and "no release 'nope' to roll back to" in missing.out
    keep = tmp_path / "keep.yaml"
    keep.write_text(cold.settings.read_text() + "keep_releases: 2\n")
    deploy_releases(host, tmp_path, "CDE", keep)
    kept = r.run("ls /srv/django/releases").split()
    assert len(kept) == 2 and current_release(r).rsplit("/", 1)[1] in kept, kept
    assert "Release E" in page(host.address)
    # five deploys and two rollbacks later, the shared state is all there
    with urllib.request.urlopen(f"http://{host.address}/media/kept.txt", timeout=10) as response:
        assert response.read() == b"kept-upload\n"
    assert r.run(f"{PY} -c {shlex.quote(SQL_COUNT)}").strip() == "1"


MIGRATION = """from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[("id", models.BigAutoField(primary_key=True)), ("text", models.CharField(max_length=200))],
        )
    ]
"""
# every file of a release but its bytecode (which records the path it was compiled at;
# Python puts the real one in at import): sha256, mode and owner, by name
TREE = "cd {0} && find . -path '*/__pycache__' -prune -o \\( -type f -o -type l \\) -printf '%P %m %u:%g\\n' | sort; " \
    "find . -path '*/__pycache__' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum"  # fmt: skip


def release_tree(r, release: str) -> str:
    return r.run(TREE.format(shlex.quote(release)))


def test_a_code_change_ships_what_differs_and_makes_the_release_a_full_upload_makes(live, remote, tmp_path, cold):
    host = live[1]
    r = remote(host)
    a = sample_variant(tmp_path, "delta-a", title="Delta A")
    assert fab("-H", host.target, "deploy", "--project", a, settings=cold.settings).code == 0
    release_a = current_release(r)
    css_a = r.run(f"sha256sum < {release_a}/staticfiles/site.css")
    # B: a view, a static file changed and one added, a model and its migration
    b = sample_variant(
        tmp_path, "delta-b", title="Delta B",
        append={"static/site.css": "\nbody { color: teal }\n", "sample/settings.py": '\nINSTALLED_APPS += ["sample"]\n' + HASHED},
    )  # fmt: skip
    (Path(b) / "static" / "added.css").write_text("h1 { color: navy }\n")
    (Path(b) / "sample" / "models.py").write_text(MODEL)
    (Path(b) / "sample" / "migrations").mkdir()
    (Path(b) / "sample" / "migrations" / "__init__.py").write_text("")
    (Path(b) / "sample" / "migrations" / "0001_initial.py").write_text(MIGRATION)
    run = fab("-H", host.target, "deploy", "--project", b, settings=cold.settings)
    assert run.code == 0, run
    release_b = current_release(r)
    assert "Delta B" in page(host.address)
    # made on links to A: the unchanged files are A's (two names, one file), the changed ones are not
    assert r.run(f"stat -c %h {release_b}/manage.py").strip() != "1"
    assert r.run(f"stat -c %h {release_b}/sample/views.py").strip() == "1"
    # the changed and the new static file are served; A's copy was not written through a link
    assert get(f"http://{host.address}/static/added.css") == (200, "h1 { color: navy }\n")
    assert get(f"http://{host.address}/static/site.css")[1].endswith("body { color: teal }\n")
    assert r.run(f"sha256sum < {release_a}/staticfiles/site.css") == css_a
    # served as compressed once at collection, a hashed name kept a year, the plain one an hour
    plain_headers, plain = fetched(f"http://{host.address}/static/site.css")
    zipped_headers, zipped = fetched(f"http://{host.address}/static/site.css", **{"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain_headers and plain_headers["Cache-Control"] == "max-age=3600"
    assert zipped_headers["Content-Encoding"] == "gzip" and zipped_headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped) == plain and len(zipped) < len(plain)
    hashed = json.loads(r.run(f"cat {release_b}/staticfiles/staticfiles.json"))["paths"]["site.css"]
    assert hashed != "site.css"
    hashed_headers, body = fetched(f"http://{host.address}/static/{hashed}")
    assert hashed_headers["Cache-Control"] == "public, max-age=31536000, immutable" and body == plain
    # the new migration ran on the host's database
    shown = fab("-H", host.target, "manage", "--", "showmigrations", "sample", settings=cold.settings)
    assert "[X] 0001_initial" in shown.out, shown
    # C: one view changed: its static files are B's, linked, not collected again
    c = sample_variant(
        tmp_path, "delta-c", title="Delta C", append={"sample/settings.py": '\nINSTALLED_APPS += ["sample"]\n' + HASHED}
    )
    shutil.copytree(Path(b) / "static", Path(c) / "static", dirs_exist_ok=True)
    shutil.copytree(Path(b) / "sample" / "migrations", Path(c) / "sample" / "migrations")
    (Path(c) / "sample" / "models.py").write_text(MODEL)
    assert fab("-H", host.target, "deploy", "--project", c, settings=cold.settings).code == 0
    release_c = current_release(r)
    assert "Delta C" in page(host.address)
    assert r.run(f"stat -c %i {release_c}/staticfiles/added.css") == r.run(
        f"stat -c %i {release_b}/staticfiles/added.css"
    )
    # B made again from the whole archive (its base has no manifest to compare): the same tree
    delta_tree = release_tree(r, release_b)
    assert fab("-H", host.target, "rollback", "--to", release_a.rsplit("/", 1)[1], settings=cold.settings).code == 0
    r.run(f"rm -rf {release_b} {release_c} && rm {release_a}/.fabstack-files")
    again = fab("-H", host.target, "deploy", "--project", b, settings=cold.settings)
    assert again.code == 0 and current_release(r) == release_b, again
    assert r.run(f"stat -c %h {release_b}/manage.py").strip() == "1"  # a full unpack this time
    assert release_tree(r, release_b) == delta_tree
    # static_dir changed: the next release, made on B's links, has its files collected there, B's gone
    moved = tmp_path / "moved.yaml"
    moved.write_text(cold.settings.read_text() + "\nstatic_dir: collected\n")
    run = fab("-H", host.target, "provision", "deploy", "--project", b, settings=moved)
    assert run.code == 0, run
    release_d = current_release(r)
    assert r.run(f"stat -c %h {release_d}/manage.py").strip() != "1"  # a delta
    listed = r.run(f"ls -A {release_d}").split()
    assert "collected" in listed and "staticfiles" not in listed, listed
    assert get(f"http://{host.address}/static/added.css") == (200, "h1 { color: navy }\n")
    assert fab("-H", host.target, "provision", "deploy", "--project", b, settings=cold.settings).code == 0
