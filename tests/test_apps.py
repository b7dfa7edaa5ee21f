"""Issue 24 on a lab host: two stock projects as two apps on one server, one settings file
each, run one after the other; each answers its own names, a deploy of one under load on
the other fails none of the other's requests, and a clash is refused before the host
changes, naming both apps."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Remote, changed_paths, fab, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab


def page(address: str, name: str, path: str = "/notes/") -> tuple[int, str]:
    request = urllib.request.Request(f"http://{address}{path}", headers={"Host": name})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


class Load:
    """Clients asking one app for its page until stopped; counts what failed."""

    def __init__(self, address: str, name: str, clients: int = 8):
        self.address, self.name, self.stop = address, name, threading.Event()
        self.sent, self.failed, self.lock = 0, 0, threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        while not self.stop.is_set():
            try:
                ok = page(self.address, self.name)[0] == 200
            except OSError:
                ok = False
            with self.lock:
                self.sent, self.failed = self.sent + 1, self.failed + (0 if ok else 1)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def app_settings(tmp_path: Path, name: str, project: Path, **more: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    lines = [f"app_name: {name}", f"project_path: {project}", *(f"{k}: {v}" for k, v in more.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_apps_on_one_host_each_answer_their_names_and_a_clash_is_refused(lab: Lab, tmp_path):
    (host,) = lab.up(count=1, init="systemd", prefix="apps")
    shop_project = stock_project(tmp_path / "shop", "shop-secret")
    blog_project = stock_project(tmp_path / "blog", "blog-secret")
    shop = app_settings(tmp_path, "shop", shop_project, server_name="shop.test")
    blog = app_settings(tmp_path, "blog", blog_project, server_name="blog.test", default_server="false")
    first = fab("-H", host.target, "provision", "deploy", settings=shop)
    assert first.code == 0, first
    second = fab("-H", host.target, "provision", "deploy", settings=blog)
    assert second.code == 0, second
    r = Remote(host)
    assert page(host.address, "shop.test", "/notes/?add=for-shop") == (200, "notes: for-shop")
    assert page(host.address, "blog.test") == (200, "notes: ")  # its own database
    # a name no site claims goes to the default server, shop (whose Django turns it away)
    assert page(host.address, "unknown.test", "/notes/?probe=unclaimed")[0] == 400
    assert "probe=unclaimed" in r.run("cat /var/log/nginx/shop/access.log")
    assert "probe=unclaimed" not in r.run("cat /var/log/nginx/blog/access.log")
    binds = r.run("cat /etc/fabstack/shop/claims /etc/fabstack/blog/claims | grep ^bind=").split()
    assert binds == ["bind=127.0.0.1:8000", "bind=127.0.0.1:8001"], binds  # chosen without a clash
    assert r.run("ps -o user= -p $(systemctl show -p MainPID --value gunicorn-blog.service)").strip() == "blog"
    for settings in (shop, blog):
        again = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert again.code == 0 and again.changed() == 0, again

    # a deploy of blog under load on shop: none of shop's requests fails
    (blog_project / "notes" / "views.py").write_text(
        (blog_project / "notes" / "views.py").read_text().replace('"notes: "', '"blog notes: "')
    )
    with Load(host.address, "shop.test") as load:
        changed = fab("-H", host.target, "deploy", settings=blog)
    assert changed.code == 0, changed
    assert load.sent > 20 and load.failed == 0, (load.sent, load.failed)
    assert page(host.address, "blog.test") == (200, "blog notes: ")

    # clashes: refused before anything on the host changes, naming both apps
    before = r.tree()
    cases = {
        "server_name shop.test is app 'shop''s on this host too; give app 'news' names of its own": {
            "server_name": "shop.test news.test",
            "default_server": "false",
        },
        "app 'shop' is this host's default server; set default_server: false for app 'news'": {
            "server_name": "news.test"
        },
        "bind 127.0.0.1:8001 is app 'blog''s on this host; give app 'news' another port": {
            "server_name": "news.test",
            "default_server": "false",
            "bind": "127.0.0.1:8001",
        },
    }
    for message, more in cases.items():
        refused = fab("-H", host.target, "provision", settings=app_settings(tmp_path, "news", shop_project, **more))
        assert refused.code == 1 and message in refused.out, refused
        assert changed_paths(before, r.tree()) == [], refused

    # blog taken off: shop's files, process and site untouched; blog's data kept
    shop_files = (
        "find /srv/shop /etc/fabstack/shop /etc/nginx/sites-available/shop.conf /etc/systemd/system/gunicorn-shop.service"
        " -type f -print0 | sort -z | xargs -0 sha256sum"
    )
    hashes, shop_pid = r.run(shop_files), r.run("systemctl show -p MainPID --value gunicorn-shop.service")
    unsure = fab("-H", host.target, "remove", "--app", "blog", settings=blog)
    assert unsure.code == 2 and "fab remove takes app 'blog' off the host(s)" in unsure.err, unsure
    assert "add --yes to do it" in unsure.err
    wrong = fab("-H", host.target, "remove", "--app", "shop", "--yes", settings=blog)
    assert wrong.code == 2 and "--app 'shop' is not the app of these settings ('blog')" in wrong.err, wrong
    gone = fab("-H", host.target, "remove", "--app", "blog", "--yes", settings=blog)
    assert gone.code == 0, gone
    assert r.run(shop_files) == hashes and r.run("systemctl show -p MainPID --value gunicorn-shop.service") == shop_pid
    assert page(host.address, "shop.test") == (200, "notes: for-shop")
    assert page(host.address, "blog.test", "/notes/?probe=blog-gone")[0] == 400  # now the default server's
    assert r.run("ls /srv/blog").split() == ["shared"] and r.run("id -u blog").strip().isdigit()  # data and user kept
    leftovers = r.run("ls /etc/systemd/system /etc/nginx/sites-enabled /etc/nginx/sites-available /etc/fabstack")
    assert "blog" not in leftovers, leftovers
    purged = fab("-H", host.target, "remove", "--app", "blog", "--yes", "--purge", settings=blog)
    assert purged.code == 0, purged
    assert "blog" not in r.run("ls /srv /var/log /var/log/nginx") and r.run("id blog 2>&1 || true").startswith("id:")
    assert r.run(shop_files) == hashes
