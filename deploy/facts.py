"""Facts: everything a run needs to know about a host, read in one remote command.

Like pyinfra's facts, this only reads; steps compare these values with the wanted
state and emit commands only where something must change. One round trip per host
per task instead of one per check.
"""

from __future__ import annotations

import shlex

from deploy.layout import Layout

PACKAGES = ("nginx", "python3", "python3-venv")
OPTIONAL_PACKAGES = ("supervisor",)


def script(layout: Layout, files: list[str]) -> str:
    q = shlex.quote
    lines = [
        "set +e",
        'echo "os=$(. /etc/os-release 2>/dev/null; echo $ID $VERSION_ID)"',
        'echo "nproc=$(nproc)"',
        'echo "now=$(date +%s)"',
        "echo \"python=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null)\"",
        'echo "pid1=$(cat /proc/1/comm)"',
        'echo "systemd=$(systemctl is-system-running 2>/dev/null)"',
        f'[ -f {layout.unit_file} ] && echo "unit_state=$(systemctl is-active {layout.unit} 2>/dev/null)" '
        f'&& echo "unit_enabled=$(systemctl is-enabled {layout.unit} 2>/dev/null)"',
        f'[ -f {layout.program_file} ] && echo "supervisor_state=$(supervisorctl status {layout.program} 2>/dev/null'
        " | awk '{print $2}')\"",
        f'echo "apt_stamp=$(stat -c %Y {layout.APT_STAMP} 2>/dev/null)"',
        f'echo "user=$(id -u {q(layout.app)} 2>/dev/null)"',
        f"for p in {' '.join(PACKAGES + OPTIONAL_PACKAGES)}; do echo \"pkg.$p=$(dpkg-query -W -f='${{db:Status-Status}}' $p 2>/dev/null)\"; done",
        f'for f in {" ".join(map(q, files))}; do [ -f "$f" ] && echo "file.$f=$(sha256sum < "$f" | cut -c1-64) $(stat -c \'%U:%G %a\' "$f")"; done',
        f'for d in {" ".join(q(d[0]) for d in layout.directories())}; do [ -d "$d" ] && echo "dir.$d=$(stat -c \'%U:%G %a\' "$d")"; done',
        f'for l in {q(layout.nginx_link)} {q(layout.nginx_lb_link)} {q(layout.NGINX_DEFAULT_LINK)} {q(layout.current)}; do [ -L "$l" ] && echo "link.$l=$(readlink "$l")"; done',
        f'[ -e {layout.NGINX_DEFAULT_BACKUP} ] && echo "default_backup=yes"',
        f"echo \"venv_version=$(sed -n 's/^version *= *//p' {layout.venv}/pyvenv.cfg 2>/dev/null)\"",
        f'echo "venv_marker=$(cat {layout.venv_marker} 2>/dev/null)"',
        f'echo "requirements_marker=$(cat {layout.requirements_marker} 2>/dev/null)"',
        f"echo \"releases=$(ls -t {layout.releases} 2>/dev/null | grep -v '^\\.' | tr '\\n' ' ')\"",
        f"pid=$(cat {layout.pidfile} 2>/dev/null); "
        '[ -n "$pid" ] && tr "\\0" " " < /proc/$pid/cmdline 2>/dev/null | grep -q gunicorn && echo "app_pid=$pid" '
        "&& echo \"app_listen=$(ss -Hltnp 2>/dev/null | grep \"pid=$pid,\" | awk '{print $4}' | sort -u | tr '\\n' ' ')\"",
        'pid=$(cat /run/nginx.pid 2>/dev/null); [ -n "$pid" ] && [ -d /proc/$pid ] && echo "nginx_pid=$pid"',
        "true",
    ]
    return "\n".join(lines)


def parse(output: str) -> dict[str, str]:
    facts = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value.strip()
    return facts
