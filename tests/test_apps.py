"""Issue 24 on a lab host: two stock projects as two apps on one server, one settings file
each, run one after the other; each answers its own names, a deploy of one under load on
the other fails none of the other's requests, and a clash is refused before the host
changes, naming both apps."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Load, Remote, broken_site_templates, changed_paths, fab, stock_project

from deploy.lab import Lab

pytestmark = pytest.mark.lab


def page(address: str, name: str, path: str = "/notes/") -> tuple[int, str]:
    request = urllib.request.Request(f"http://{address}{path}", headers={"Host": name})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


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
    assert binds == ["bind=unix:/srv/shop/run/gunicorn.sock", "bind=unix:/srv/blog/run/gunicorn.sock"], binds
    # one app's user cannot reach the other's gunicorn past nginx (it could on a loopback port)
    reach = "setpriv --reuid blog --regid blog --init-groups curl --noproxy '*' -s --unix-socket /srv/shop/run/gunicorn.sock "
    assert r.run(reach + "-H 'Host: shop.test' http://shop.test/; echo \" $?\"").strip() == "7"
    assert r.run("ps -o user= -p $(systemctl show -p MainPID --value gunicorn-blog.service)").strip() == "blog"
    for settings in (shop, blog):
        again = fab("-H", host.target, "provision", "deploy", settings=settings)
        assert again.code == 0 and again.changed() == 0, again

    # blog's new site fails nginx -t: blog's own is put back, shop's site and nginx untouched
    broken = tmp_path / "blog-broken.yaml"
    broken.write_text(blog.read_text() + f"templates_dir: {broken_site_templates(tmp_path)}\n")
    sites = "sha256sum /etc/nginx/sites-available/*; ls /etc/nginx/sites-enabled; cat /run/nginx.pid"
    before = r.run(sites)
    refused = fab("-H", host.target, "provision", settings=broken)
    assert refused.code == 1 and 'unknown directive "no_such_directive"' in refused.out, refused
    assert "previous config restored" in refused.out
    assert r.run(sites) == before and "successful" in r.run("nginx -t 2>&1")
    assert (
        page(host.address, "shop.test", "/notes/") == (200, "notes: for-shop")
        and page(host.address, "blog.test")[0] == 200
    )

    # a deploy of blog under load on shop: none of shop's requests fails
    (blog_project / "notes" / "views.py").write_text(
        (blog_project / "notes" / "views.py").read_text().replace('"notes: "', '"blog notes: "')
    )
    with Load(host.address, clients=8, path="/notes/", host="shop.test") as load:
        changed = fab("-H", host.target, "deploy", settings=blog)
    assert changed.code == 0, changed
    assert load.sent > 20 and load.failed == 0, (load.sent, load.failed)
    assert page(host.address, "blog.test") == (200, "blog notes: ")

    # clashes: refused before anything on the host changes, naming both apps
    legacy = "server {\n    listen 8081 default_server;\n    server_name legacy.test;\n    return 204;\n}\n"
    r.run(f"printf '%s' '{legacy}' > /etc/nginx/sites-enabled/legacy.conf && nginx -t -q && nginx -s reload")
    before = r.tree()
    cases = {
        # a site written by hand (no fabstack record): its names are its own too
        "server_name legacy.test is /etc/nginx/sites-enabled/legacy.conf's on this host too": {
            "server_name": "legacy.test",
            "default_server": "false",
        },
        "server_name shop.test is app 'shop''s on this host too; give app 'news' names of its own": {
            "server_name": "shop.test news.test",
            "default_server": "false",
        },
        "app 'shop' is this host's default server; set default_server: false for app 'news'": {
            "server_name": "news.test"
        },
        "bind unix:/srv/blog/run/gunicorn.sock is app 'blog''s on this host; give app 'news' another port": {
            "server_name": "news.test",
            "default_server": "false",
            "bind": "unix:/srv/blog/run/gunicorn.sock",
        },
    }
    for message, more in cases.items():
        refused = fab("-H", host.target, "provision", settings=app_settings(tmp_path, "news", shop_project, **more))
        assert refused.code == 1 and message in refused.out, refused
        assert changed_paths(before, r.tree()) == [], refused
    # near-twin names: shop's load balancer site is shop-lb.conf, its log rotation's cron
    # file fabstack-shop-logrotate; an app named so would own them too (shop's record says)
    twins = {
        "shop-lb": "file /etc/nginx/sites-available/shop-lb.conf",
        "shop-logrotate": "cron /etc/cron.d/fabstack-shop-logrotate",
    }
    for twin, owned in twins.items():
        settings = app_settings(tmp_path, twin, shop_project, server_name=f"{twin}.test", default_server="false")
        refused = fab("-H", host.target, "provision", settings=settings)
        assert (
            refused.code == 1
            and f"app {twin!r} would own the {owned}, which app 'shop' owns on this host" in refused.out
        ), refused
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
    assert wrong.code == 2 and f"--app 'shop' is not the app of {blog} ('blog'); give --app blog" in wrong.err, wrong
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


def test_one_settings_file_of_two_apps_behind_a_load_balancer_and_app_on_every_task(lab: Lab, tmp_path):
    lb, app = lab.up(count=2, init="systemd", prefix="sites")
    shop_project = stock_project(tmp_path / "shop", "shop-secret")
    blog_project = stock_project(tmp_path / "blog", "blog-secret")
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        f"hosts: [{{host: {lb.target}, roles: [lb]}}, {{host: {app.target}, roles: [app]}}]\n"
        "workers: 2\n"
        "apps:\n"
        f"  shop: {{project_path: {shop_project}, server_name: shop.test}}\n"
        f"  blog: {{project_path: {blog_project}, server_name: blog.test, workers: 3}}\n"
    )
    both = fab("provision", "deploy", settings=sites)
    assert both.code == 0, both
    headings = [line for line in both.out.splitlines() if line.startswith("app ")]
    assert headings == ["app shop", "app blog"] * 2, headings  # each task: shop, then blog
    assert page(lb.address, "shop.test", "/notes/?add=s") == (200, "notes: s")
    assert page(lb.address, "blog.test") == (200, "notes: ")
    rl, ra = Remote(lb), Remote(app)
    # a name no site claims goes to the default server on the lb too: the file's first app
    assert page(lb.address, "unknown.test", "/notes/?probe=unclaimed")[0] == 400
    assert "probe=unclaimed" in rl.run("cat /var/log/nginx/shop/lb-access.log")
    for r in (rl, ra):
        claims = r.run("grep -h ^default_server= /etc/fabstack/shop/claims /etc/fabstack/blog/claims").split()
        assert claims == ["default_server=yes", "default_server=no"], claims
    assert "workers = 3" in ra.run("cat /srv/blog/config/gunicorn.conf.py")  # its own key over the shared one
    assert "workers = 2" in ra.run("cat /srv/shop/config/gunicorn.conf.py")

    status = fab("status", settings=sites)
    assert status.code == 0, status
    lines = [line.split() for line in status.out.splitlines() if line.startswith(("HOST", "root@")) and "=" not in line]
    header, *rows = lines
    assert header[:2] == ["HOST", "SITE"] and header.count("HOST") == 1, header  # one table
    assert [(row[0], row[1]) for row in rows] == [
        (lb.target, "shop"),
        (lb.target, "blog"),
        (app.target, "shop"),
        (app.target, "blog"),
    ], rows
    document = json.loads(fab("status", "--json", settings=sites).out)
    assert [
        (run["app"], run["hosts"][1]["data"]["site"], run["hosts"][1]["data"]["app"]) for run in document["runs"]
    ] == [
        ("shop", "shop", "running"),
        ("blog", "blog", "running"),
    ]
    again = fab("provision", "deploy", settings=sites)
    assert again.code == 0 and again.changed() == 0, again

    # --app: one app's deploy; the other's process and release stay as they were
    shop_state = "systemctl show -p MainPID --value gunicorn-shop.service; readlink /srv/shop/current"
    before = ra.run(shop_state)
    (blog_project / "notes" / "views.py").write_text(
        (blog_project / "notes" / "views.py").read_text().replace('"notes: "', '"blog notes: "')
    )
    blog_only = fab("deploy", "--app", "blog", settings=sites)
    assert blog_only.code == 0 and "app shop" not in blog_only.out, blog_only
    assert page(lb.address, "blog.test") == (200, "blog notes: ")
    assert ra.run(shop_state) == before and page(lb.address, "shop.test") == (200, "notes: s")

    # tasks of one app ask which; with --app they run
    which = fab("manage", "--", "check", settings=sites)
    assert which.code == 2 and "fab manage works on one app; the settings have shop, blog" in which.err, which
    check = fab("--app", "shop", "manage", "--", "check", settings=sites)
    assert check.code == 0 and "System check identified no issues" in check.out, check
    gone = fab("remove", "--app", "blog", "--yes", settings=sites)
    assert gone.code == 0, gone
    for r in (rl, ra):  # its lb site and its app site, and their records
        assert "blog" not in r.run("ls /etc/nginx/sites-enabled /etc/nginx/sites-available /etc/fabstack")
    assert "shop-lb.conf" in rl.run("ls /etc/nginx/sites-enabled")
    assert ra.run(shop_state) == before and page(lb.address, "shop.test") == (200, "notes: s")
