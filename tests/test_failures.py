"""Issue 22 on lab hosts: every failure leaves the site as it was, and every rerun tells
the truth."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ColdRun, Remote, converged_pair, fab, sample_variant

from deploy.lab import Lab

pytestmark = pytest.mark.lab

BROKEN_VIEW = "\n\ndef index(request):  # replaces the working view\n    raise RuntimeError('this release is broken')\n"


@pytest.fixture(scope="module")
def hosts(lab: Lab, deployed_snapshot: str, cold: ColdRun):
    """Two deployed hosts (systemd, sshd), converged with the suite's settings."""
    return converged_pair(lab, deployed_snapshot, cold.settings, "f")


def status_of(address: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_first_release_that_fails_is_never_served_and_never_turns_green(hosts, cold, tmp_path):
    host = hosts[0]
    r = Remote(host)
    # a host provisioned but never deployed: no release, nothing passed, no app running
    r.run("systemctl stop gunicorn-django; rm -rf /srv/django/releases/* /srv/django/current /srv/django/state/*")
    broken = sample_variant(tmp_path, "broken", append={"sample/views.py": BROKEN_VIEW})
    first = fab("-H", host.target, "deploy", "--project", broken, settings=cold.settings)
    assert first.code == 1, first
    assert "app stopped: no release here passed its health check (nginx answers 503): changed" in first.out
    assert "HTTP 500" in first.out and "RuntimeError: this release is broken" in first.out  # the app's own traceback
    assert status_of(host.address) == (503, "Service unavailable\n")
    again = fab("-H", host.target, "deploy", "--project", broken, settings=cold.settings)
    assert again.code == 1 and ("health check: failed" in again.out or "gunicorn running: failed" in again.out), again
    assert status_of(host.address)[0] == 503
    status = fab("-H", host.target, "status", settings=cold.settings)
    assert status.code == 1 and "app stopped" in status.out, status
    good = fab("-H", host.target, "deploy", settings=cold.settings)
    assert good.code == 0, good
    code, body = status_of(host.address)
    assert code == 200 and f'<b id="host">{host.name}</b>' in body
    assert fab("-H", host.target, "deploy", settings=cold.settings).changed() == 0
    # a run cut off right after switching to the broken release, before its check
    broken_id = next(
        i for i in r.run("ls /srv/django/releases").split() if i not in r.run("readlink /srv/django/current")
    )
    r.run(
        f"ln -sfn /srv/django/releases/{broken_id} /srv/django/current.new && mv -T /srv/django/current.new /srv/django/current"
    )
    cut = fab("-H", host.target, "status", settings=cold.settings)
    assert cut.code == 1 and re.search(rf"release {broken_id} has not passed its health check", cut.out), cut
    rerun = fab("-H", host.target, "deploy", "--project", broken, settings=cold.settings)
    assert rerun.code == 1 and "rollback: changed" in rerun.out, rerun  # checked, failed, back to the one that passed
    code, body = status_of(host.address)
    assert code == 200 and f'<b id="host">{host.name}</b>' in body


def renamed_project(tmp_path, package: str) -> str:
    """The sample with its package renamed (a project that is not the sample)."""
    project = Path(sample_variant(tmp_path, package, title=f"The {package} site"))
    (project / "sample").rename(project / package)
    for path in project.rglob("*.py"):
        path.write_text(path.read_text().replace("sample.", f"{package}.").replace("from sample", f"from {package}"))
    return str(project)


def test_a_provision_with_a_wrong_wsgi_module_keeps_the_site_serving(hosts, cold, tmp_path):
    """The site serves a project `shop`; provision runs with settings that lack its
    project and wsgi_module, so they name the sample's module, which the host does not have."""
    host = hosts[1]
    r = Remote(host)
    shop = tmp_path / "shop.yaml"
    shop.write_text(cold.settings.read_text() + f"project_path: {renamed_project(tmp_path, 'shop')}\n"
                    "wsgi_module: shop.wsgi:application\n")  # fmt: skip
    switched = fab("-H", host.target, "deploy", settings=shop)  # a new project: deploy tries it with its release
    assert switched.code == 0, switched
    before = r.run("sha256sum /srv/django/config/gunicorn.conf.py")
    failures, sent, stop = [], [0], threading.Event()

    def load() -> None:  # bounded: until the provision ends, at most 5,000 requests
        while not stop.is_set() and sent[0] < 5000:
            sent[0] += 1
            code, body = status_of(host.address)
            if code != 200 or "The shop site" not in body:
                failures.append(code)

    client = threading.Thread(target=load)
    client.start()
    try:
        run = fab("-H", host.target, "provision", settings=cold.settings)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and sent[0] < 5000:  # requests right after it count too
            time.sleep(0.05)
    finally:
        stop.set()
        client.join(timeout=20)
    # the current release is another project: provision leaves gunicorn's config to the
    # deploy that brings the project (which checks it against its release), and says so
    assert run.code == 0, run
    assert "the current release has no sample package (another project); fab deploy writes the config" in run.out
    assert r.run("sha256sum /srv/django/config/gunicorn.conf.py") == before  # the old config in place
    assert "fabstack-new" not in r.run("ls /srv/django/config/")
    print(f"provision with the wrong wsgi_module: {sent[0]} requests, {len(failures)} failed")
    assert sent[0] > 0 and failures == []


def test_a_project_without_a_view_at_the_root_deploys_with_default_health(hosts, cold, tmp_path):
    host = hosts[1]
    project = sample_variant(tmp_path, "noroot")
    urls = tmp_path / "noroot" / "sample" / "urls.py"
    urls.write_text(urls.read_text().replace('path("", views.index)', 'path("hello/", views.index)'))
    run = fab("-H", host.target, "deploy", "--project", project, settings=cold.settings)
    assert run.code == 0, run
    assert status_of(host.address)[0] == 404  # no view at /: it runs all the same
    assert f'<b id="host">{host.name}</b>' in urllib.request.urlopen(f"http://{host.address}/hello/").read().decode()
    strict = tmp_path / "strict.yaml"
    strict.write_text(cold.settings.read_text() + "health_path: /\n")  # set: / must answer 2xx/3xx
    other = sample_variant(tmp_path, "noroot2", title="Still no root")
    urls = tmp_path / "noroot2" / "sample" / "urls.py"
    urls.write_text(urls.read_text().replace('path("", views.index)', 'path("hello/", views.index)'))
    refused = fab("-H", host.target, "deploy", "--project", other, settings=strict)
    assert refused.code == 1 and "HTTP 404" in refused.out and "rollback: changed" in refused.out, refused
