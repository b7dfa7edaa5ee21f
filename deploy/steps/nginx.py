"""nginx: the site from templates/, the guide's default.bak, and configtest-guarded control.

nginx never runs with a config that failed `nginx -t`: a new site is written, tested,
and on failure the previous files are put back before anything reloads.
"""

from __future__ import annotations

from deploy.inventory import Member
from deploy.layout import Layout
from deploy.render import environment, render
from deploy.runner import HostRun, StepFailed
from deploy.steps.files import file_matches, file_state, unified_diff

CONFIGTEST = "nginx -t -q"
# Seconds an idle keepalive connection lives at each end of the lb -> app host hop. The
# server (the app host's nginx) waits longer than the client (the lb), so an idle
# connection is always closed by the side that would send the next request on it.
IDLE_TIMEOUTS = {"lb_idle_timeout": 10, "app_idle_timeout": 15}


def member(h: HostRun) -> Member | None:
    return h.settings.inventory.find(h.host)


def app_port(h: HostRun) -> int:
    """Where this host's app site listens: listen_port alone, app_port behind load balancers."""
    return h.settings.app_port if member(h) else h.settings.listen_port


def site_config(h: HostRun) -> str:
    s, layout, m = h.settings, Layout.of(h.settings), member(h)
    if m:  # behind load balancers: the private address and loopback only, lbs allowed
        listens = [f"{m.address}:{s.app_port}", f"127.0.0.1:{s.app_port}"]
        allow = [lb.address for lb in s.inventory.with_role("lb")] + ["127.0.0.1"]
    else:
        listens, allow = [f"{s.listen_port} default_server"], []
    return render(
        environment(s.templates_dir),
        "nginx-site.conf.j2",
        app_name=s.app_name,
        upstream=f"{s.app_name}_app",
        servers=[s.bind],
        listens=listens,
        allow=list(dict.fromkeys(allow)),
        server_name=s.server_name,
        static_url=s.static_url,
        static_root=f"{layout.current}/{s.static_dir}",
        media_url=s.media_url,
        media_root=layout.media,
        **IDLE_TIMEOUTS,
    )


def lb_config(h: HostRun, out: frozenset[str] = frozenset()) -> str:
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
        server_name=s.server_name,
        **IDLE_TIMEOUTS,
    )


def site(h: HostRun) -> bool:
    """The app's nginx site enabled and the default site disabled (backed up first)."""
    layout = Layout.of(h.settings)
    return _ensure_site(h, layout.nginx_site, layout.nginx_link, site_config(h), "nginx-site.conf")


def lb_site(h: HostRun, out: frozenset[str] = frozenset()) -> bool:
    """The load balancer's site: an upstream of every app host with its flags."""
    layout = Layout.of(h.settings)
    return _ensure_site(h, layout.nginx_lb_site, layout.nginx_lb_link, lb_config(h, out), "nginx-lb.conf")


def _links_to_remove(h: HostRun) -> list[str]:
    """The distribution's default site, and sites of roles this host does not have."""
    layout, role = Layout.of(h.settings), h.settings.inventory.roles_of(h.host)
    links = [layout.NGINX_DEFAULT_LINK]
    links += [layout.nginx_link] if "app" not in role else []
    links += [layout.nginx_lb_link] if "lb" not in role or not member(h) else []
    return links


def _ensure_site(h: HostRun, path: str, link: str, content: str, staged_name: str) -> bool:
    layout = Layout.of(h.settings)
    remove = _links_to_remove(h)
    up_to_date = (
        file_matches(h, path, content)
        and h.facts.get(f"link.{link}") == path
        and not any(f"link.{other}" in h.facts for other in remove)
    )
    if up_to_date:
        return False
    if h.wants_diffs:
        diff = unified_diff(h, path, content, bool(file_state(h, path)[0]))
        h.show_diff(diff or f"(enable {link}, disable the default site)\n")
    if h.dry_run:
        return True
    staged = h.stage(staged_name, content.encode())
    h.change(_apply_tested(layout, staged, path, link, remove))
    h.notify("reload_nginx")
    return True


def _apply_tested(layout: Layout, staged: str, site: str, link: str, remove: list[str]) -> str:
    """Shell that installs the site, disables the sites in remove, runs nginx -t, and puts
    every file and link back as it was when the test fails."""
    save = "; ".join(f"old{i}=$(readlink {other} || true)" for i, other in enumerate(remove))
    restore = "\n".join(f'  if [ -n "$old{i}" ]; then ln -sfn "$old{i}" {other}; fi' for i, other in enumerate(remove))
    return f"""set -e
if [ -e {layout.NGINX_DEFAULT} ] && [ ! -e {layout.NGINX_DEFAULT_BACKUP} ]; then cp -p {layout.NGINX_DEFAULT} {layout.NGINX_DEFAULT_BACKUP}; fi
rm -f {site}.fabstack-prev; if [ -e {site} ]; then cp -p {site} {site}.fabstack-prev; fi
had_link=$(readlink {link} || true); {save}
install -o root -g root -m 644 {staged} {site}
[ "$had_link" = {site} ] || ln -sfn {site} {link}
rm -f {" ".join(remove)}
if ! out=$({CONFIGTEST} 2>&1); then
  if [ -e {site}.fabstack-prev ]; then mv -f {site}.fabstack-prev {site}; else rm -f {site}; fi
  if [ "$had_link" = {site} ]; then :; elif [ -n "$had_link" ]; then ln -sfn "$had_link" {link}; else rm -f {link}; fi
{restore}
  echo "nginx -t rejected the new site, previous config restored: $(echo "$out" | grep -m1 emerg || echo "$out" | tail -n1)" >&2
  exit 1
fi
rm -f {site}.fabstack-prev"""


def running(h: HostRun) -> bool:
    """nginx running with the current config: started if down, reloaded if it changed."""
    if h.facts.get("nginx_pid") and "reload_nginx" not in h.notified:
        return False
    # Decided on the host: apt may have started nginx since the facts were read. A reload
    # is asynchronous: for a moment the old workers still accept connections with the old
    # config (a request right after the run went round robin under a new ip_hash). Done
    # means every old worker is gone or shutting down, accepting nothing.
    old_done = (
        'for i in $(seq 200); do busy=; for w in $old; do case $(tr "\\0" " " < /proc/$w/cmdline 2>/dev/null) in '
        '""|*"shutting down"*) ;; *) busy=1;; esac; done; [ -z "$busy" ] && break; sleep 0.05; done'
    )
    h.change(
        f"{CONFIGTEST} && if [ -s /run/nginx.pid ] && kill -0 $(cat /run/nginx.pid) 2>/dev/null; "
        f"then old=$(pgrep -P $(cat /run/nginx.pid) | tr '\\n' ' '); service nginx reload && {old_done}; "
        "else service nginx start; fi"
    )
    return True


def control(action: str) -> str:
    """The guide's `service nginx ACTION`, refused when the config test fails."""
    if action in ("stop", "configtest"):
        return "nginx -t" if action == "configtest" else "service nginx stop"
    return f"{CONFIGTEST} && service nginx {action}"


def run_control(h: HostRun, action: str) -> bool:
    """The action, refused when nginx -t fails; a dry run only tests the config."""
    command = control(action)
    if h.dry_run and action != "configtest":
        command = "true" if action == "stop" else CONFIGTEST
    try:
        h.run(command)
    except StepFailed as exc:
        if action != "stop":
            raise StepFailed(f"nginx {action} refused: {exc}", exc.command, exc.output) from None
        raise
    return action != "configtest"
