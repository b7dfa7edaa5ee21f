"""nginx: the site from templates/, the guide's default.bak, and configtest-guarded control.

nginx never runs with a config that failed `nginx -t`: a new site is written, tested,
and on failure the previous files are put back before anything reloads.
"""

from __future__ import annotations

import hashlib

from deploy.layout import Layout
from deploy.render import environment, render
from deploy.runner import HostRun, StepFailed
from deploy.steps.files import file_state, unified_diff

CONFIGTEST = "nginx -t -q"


def site_config(h: HostRun) -> str:
    s, layout = h.settings, Layout.of(h.settings)
    return render(
        environment(s.templates_dir),
        "nginx-site.conf.j2",
        app_name=s.app_name,
        upstream=f"{s.app_name}_app",
        servers=[s.bind],
        listen_port=s.listen_port,
        server_name=s.server_name,
        static_url=s.static_url,
        static_root=f"{layout.current}/{s.static_dir}",
        media_url=s.media_url,
        media_root=layout.media,
    )


def site(h: HostRun) -> bool:
    """The app's nginx site enabled and the default site disabled (backed up first)."""
    layout = Layout.of(h.settings)
    content = site_config(h)
    sha, meta = file_state(h, layout.nginx_site)
    up_to_date = (
        sha == hashlib.sha256(content.encode()).hexdigest()
        and meta == "root:root 644"
        and h.facts.get(f"link.{layout.nginx_link}") == layout.nginx_site
        and f"link.{layout.NGINX_DEFAULT_LINK}" not in h.facts
    )
    if up_to_date:
        return False
    diff = unified_diff(h, layout.nginx_site, content, bool(sha))
    if h.dry_run:
        h.change("", diff=diff or f"(enable {layout.nginx_link}, disable the default site)\n")
        return True
    staged = h.stage("nginx-site.conf", content.encode())
    h.change(_apply_tested(layout, staged))
    h.notify("reload_nginx")
    return True


def _apply_tested(layout: Layout, staged: str) -> str:
    """Shell that installs the site, runs nginx -t, and restores the old files on failure."""
    site, link, dlink = layout.nginx_site, layout.nginx_link, layout.NGINX_DEFAULT_LINK
    return f"""set -e
if [ -e {layout.NGINX_DEFAULT} ] && [ ! -e {layout.NGINX_DEFAULT_BACKUP} ]; then cp -p {layout.NGINX_DEFAULT} {layout.NGINX_DEFAULT_BACKUP}; fi
rm -f {site}.fabstack-prev; if [ -e {site} ]; then cp -p {site} {site}.fabstack-prev; fi
had_link=$(readlink {link} || true); had_default=$(readlink {dlink} || true)
install -o root -g root -m 644 {staged} {site}
ln -sfn {site} {link}
rm -f {dlink}
if ! out=$({CONFIGTEST} 2>&1); then
  if [ -e {site}.fabstack-prev ]; then mv -f {site}.fabstack-prev {site}; else rm -f {site}; fi
  if [ -n "$had_link" ]; then ln -sfn "$had_link" {link}; else rm -f {link}; fi
  if [ -n "$had_default" ]; then ln -sfn "$had_default" {dlink}; fi
  echo "nginx -t rejected the new site, previous config restored: $(echo "$out" | grep -m1 emerg || echo "$out" | tail -n1)" >&2
  exit 1
fi
rm -f {site}.fabstack-prev"""


def running(h: HostRun) -> bool:
    """nginx running with the current config: started if down, reloaded if it changed."""
    if h.facts.get("nginx_pid") and "reload_nginx" not in h.notified:
        return False
    # Decided on the host: apt may have started nginx since the facts were read.
    h.change(
        f"{CONFIGTEST} && if [ -s /run/nginx.pid ] && kill -0 $(cat /run/nginx.pid) 2>/dev/null; "
        "then service nginx reload; else service nginx start; fi"
    )
    return True


def control(action: str) -> str:
    """The guide's `service nginx ACTION`, refused when the config test fails."""
    if action in ("stop", "configtest"):
        return "nginx -t" if action == "configtest" else "service nginx stop"
    return f"{CONFIGTEST} && service nginx {action}"


def run_control(h: HostRun, action: str) -> bool:
    try:
        h.run(control(action))
    except StepFailed as exc:
        if action != "stop":
            raise StepFailed(f"nginx {action} refused: {exc}", exc.command, exc.output) from None
        raise
    return action != "configtest"
