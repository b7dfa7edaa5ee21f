"""nginx: the site from templates/, the guide's default.bak, and configtest-guarded control.

nginx never runs with a config that failed `nginx -t`: a new site is written, tested,
and on failure the previous files are put back before anything reloads
(deploy/remote/nginx.sh).
"""

from __future__ import annotations

from deploy.host import HostContext
from deploy.ops import Command, Diff, Handler, Notify, Probe, Steps, Upload, step
from deploy.render import environment, render
from deploy.settings.tls import has_ocsp
from deploy.steps import media

NGINX = ["nginx.sh"]
# Seconds an idle keepalive connection lives at each end of the lb -> app host hop. The
# server (the app host's nginx) waits longer than the client (the lb), so an idle
# connection is always closed by the side that would send the next request on it.
IDLE_TIMEOUTS = {"lb_idle_timeout": 10, "app_idle_timeout": 15}


def http2_directive(os_release: str) -> bool:
    """nginx 1.25.1 brought `http2 on;` and deprecated `listen ... http2` (a warning at
    every nginx -t): Debian 13 and Ubuntu 24.10 ship a newer nginx, Debian 12 1.22."""
    name, _, version = os_release.partition(" ")
    parts = version.split(".")
    if not all(p.isdigit() for p in parts):
        return False
    number = tuple(int(p) for p in parts)
    return (name == "debian" and number >= (13,)) or (name == "ubuntu" and number >= (24, 10))


def tls_context(h: HostContext) -> tuple[dict | None, dict | None]:
    """What the site's templates get for HTTPS: (tls, acme). tls is None until this host
    has a certificate (an ACME host serves plain HTTP and the challenge until certbot got
    one); acme says where the challenge is answered (None with a certificate of your own)."""
    tls = h.settings.site_tls
    if tls is None or not h.ends_tls:
        return None, None
    acme = None
    if tls.acme:
        lbs = h.settings.inventory.with_role("lb")
        first = f"http://{lbs[0].address}:{h.settings.listen_port}" if lbs else ""
        acme = {"root": h.layout.ACME_WEBROOT, "proxy": ""} if h.gets_certificate else {"root": "", "proxy": first}
    cert = h.facts.certificate
    uploaded = h.tls_mode == "files" and bool(tls.certificate)
    if not uploaded and not (cert and cert.key_matches):
        return None, acme
    certificate, key = h.tls_paths
    return {
        "port": tls.port,
        "http_listen": f"{h.settings.listen_port}{default_server(h)}",
        "default": default_server(h),
        "certificate": certificate,
        "key": key,
        "hsts": tls.hsts,
        "stapling": has_ocsp(tls.certificate) if uploaded else bool(cert and cert.ocsp),
        "http2_directive": http2_directive(h.facts.os),
    }, acme


RETRY_AFTER = 300  # seconds a client is told to wait while the site is in maintenance


def maintenance_context(h: HostContext) -> dict:
    """What the site of a host that faces the clients needs for fab maintenance: the
    page it looks for, who passes (the geo variable's name: nginx's names have no '-')."""
    s = h.settings
    return {
        "name": s.app_name.replace("-", "_"),
        "page": h.layout.maintenance_page,
        "allow": s.maintenance_allow,
        "health": s.health_path,
        "retry_after": RETRY_AFTER,
    }


def default_server(h: HostContext) -> str:
    """` default_server` for the app that answers names no site claims (default_server)."""
    return " default_server" if h.settings.default_server else ""


def site_config(h: HostContext) -> str:
    s, layout, m = h.settings, h.layout, h.member
    if m:  # behind load balancers: the private address and loopback only, lbs allowed
        # the default app here too: the lbs pass the client's Host, which may be no app's name
        listens = [f"{m.address}:{s.app_port}{default_server(h)}", f"127.0.0.1:{s.app_port}{default_server(h)}"]
        allow = s.inventory.addresses("lb") + ["127.0.0.1"]
    else:
        listens, allow = [f"{s.listen_port}{default_server(h)}"], []
    return render(
        environment(s.templates_dir),
        "nginx-site.conf.j2",
        app_name=s.app_name,
        upstream=f"{s.app_name}_app",
        servers=[h.bind],
        listens=listens,
        allow=list(dict.fromkeys(allow)),
        server_name=s.server_name,
        static_url=s.static_url,
        static_root=f"{layout.current}/{s.static_dir}",
        media_url=s.media_url,
        media_root=layout.media,
        media_guard=media.guard(h),
        maintenance=None if m else maintenance_context(h),
        **IDLE_TIMEOUTS,
        **(dict(zip(("tls", "acme"), tls_context(h), strict=True)) if not m else {"tls": None, "acme": None}),
    )


def lb_config(h: HostContext, out: frozenset[str] = frozenset()) -> str:
    """The lb site; app hosts in `out` are marked down (a rolling deploy is changing them)."""
    s = h.settings
    method = {
        "round_robin": "",
        "hash": f"hash {s.lb_hash_key} consistent",
    }.get(s.lb_method, s.lb_method)
    servers = [
        " ".join(
            filter(
                None, [f"{m.address}:{s.app_port}", m.server_flags(), "down" if m.host in out and not m.down else ""]
            )
        )
        for m in s.inventory.with_role("app")
    ]
    return render(
        environment(s.templates_dir),
        "nginx-lb.conf.j2",
        app_name=s.app_name,
        upstream=f"{s.app_name}_apps",
        method_line=method,
        servers=servers,
        keepalive=s.keepalive,
        listen_port=s.listen_port,
        default=default_server(h),
        server_name=s.server_name,
        maintenance=maintenance_context(h),
        **IDLE_TIMEOUTS,
        **dict(zip(("tls", "acme"), tls_context(h), strict=True)),
    )


@step("nginx site")
def site(h: HostContext) -> Steps:
    """The app's nginx site enabled and the default site disabled (backed up first)."""
    layout = h.layout
    yield from _ensure_site(h, layout.nginx_site, layout.nginx_link, site_config(h), "nginx-site.conf")


@step("nginx load balancer")
def lb_site(h: HostContext, out: frozenset[str] = frozenset()) -> Steps:
    """The load balancer's site: an upstream of every app host with its flags."""
    layout = h.layout
    yield from _ensure_site(h, layout.nginx_lb_site, layout.nginx_lb_link, lb_config(h, out), "nginx-lb.conf")


@step("nginx https")
def https(h: HostContext) -> Steps:
    """The site again once its certificate is there: the lb site on a load balancer,
    the app's own site on a single host."""
    yield from (lb_site if h.behind_lbs else site)(h)


def _links_to_remove(h: HostContext) -> list[str]:
    """The distribution's default site, and sites of roles this host does not have."""
    layout = h.layout
    links = [layout.NGINX_DEFAULT_LINK]
    links += [layout.nginx_link] if not h.is_app else []
    links += [layout.nginx_lb_link] if "lb" not in h.roles or not h.behind_lbs else []
    return links


def _ensure_site(h: HostContext, path: str, link: str, content: str, staged_name: str) -> Steps:
    remove = _links_to_remove(h)
    found = h.facts.file(path)
    if found and found.holds(content) and h.facts.link(link) == path and not any(map(h.facts.link, remove)):
        return
    yield Diff(path, content, exists=found is not None, note=f"(enable {link}, disable the default site)")
    staged = yield Upload(staged_name, content.encode())
    yield Command(h.shell(NGINX, "apply_site", staged, path, link, *remove))
    yield Notify(Handler.RELOAD_NGINX)


@step("nginx running")
def running(h: HostContext) -> Steps:
    """The handler of nginx: running with the current config, started if down, reloaded
    when a step changed a site; never without nginx -t passing first."""
    if h.facts.nginx_pid and Handler.RELOAD_NGINX not in h.notified:
        return
    yield Command(h.shell(NGINX, "nginx_running"))
    h.settle(Handler.RELOAD_NGINX)


@step("nginx {0}")
def control(h: HostContext, action: str) -> Steps:
    """The guide's `service nginx ACTION`, refused when nginx -t fails; a dry run only
    tests the config. configtest changes nothing."""
    if action == "configtest":
        yield Probe(h.shell(NGINX, "nginx_control", "configtest"))
    else:
        test = None if action == "stop" else h.shell(NGINX, "nginx_test_for", action)
        yield Command(h.shell(NGINX, "nginx_control", action), rehearse=test)
