"""Facts: everything a run needs to know about a host, read in one remote command.

Like pyinfra's facts, this only reads; steps compare these values with the wanted
state and emit commands only where something must change. One round trip per host
per task instead of one per check.
"""

from __future__ import annotations

import shlex

from deploy import scripts
from deploy.layout import Layout

PACKAGES = ("nginx", "python3", "python3-venv")
OPTIONAL_PACKAGES = ("supervisor",)


def master_sh(layout: Layout) -> str:
    """Shell functions: `alive` sets $pid to the app's gunicorn master, found as root may
    trust it (deploy/remote/master.sh); `live PID` skips zombies."""
    return scripts.prelude(
        "master.sh", APP=layout.app, UNIT=layout.unit, UNIT_FILE=layout.unit_file, PROGRAM=layout.program,
        PROGRAM_FILE=layout.program_file, RECORD=layout.master_record, CONFIG=layout.gunicorn_conf,
    )  # fmt: skip


def _file_reads(files: list[str]) -> str:
    """Shell: `sha.PATH=` and `meta.PATH=` lines for the regular files among files (a
    symlink is not one: it is reported missing, so a step replaces it)."""
    listed = " ".join(map(shlex.quote, files))
    return (
        f'found=; for f in {listed}; do [ -f "$f" ] && [ ! -L "$f" ] && found="$found $f"; done; '
        "if [ -n \"$found\" ]; then sha256sum $found | sed 's/^\\([0-9a-f]*\\)  \\(.*\\)$/sha.\\2=\\1/'; "
        "stat -c 'meta.%n=%U:%G %a' $found; fi"
    )


def script(layout: Layout, files: list[str], app_files: list[str] = ()) -> str:
    """The facts as key=value lines. Shell builtins where they do, and one process for
    each kind of read (all checksums, all modes, all links): with many hosts on a small
    machine, the processes a read spawns are what it costs."""
    q = shlex.quote
    dirs = " ".join(q(d[0]) for d in layout.directories())
    links = " ".join(map(q, (layout.nginx_link, layout.nginx_lb_link, layout.NGINX_DEFAULT_LINK, layout.current)))
    lines = [
        "set +e",
        '. /etc/os-release 2>/dev/null; echo "os=$ID $VERSION_ID"',
        'echo "nproc=$(nproc)"',
        'echo "addresses=$(hostname -I 2>/dev/null)"',
        'echo "now=$(date +%s)"',
        'v=$(python3 --version 2>/dev/null); echo "python=${v#Python }"',
        'read -r pid1 < /proc/1/comm; echo "pid1=$pid1"',
        '[ "$pid1" = systemd ] && echo "systemd=$(systemctl is-system-running 2>/dev/null)"',
        f'[ -f {layout.unit_file} ] && echo "unit_state=$(systemctl is-active {layout.unit} 2>/dev/null)" '
        f'&& echo "unit_enabled=$(systemctl is-enabled {layout.unit} 2>/dev/null)"',
        f'[ -f {layout.program_file} ] && echo "supervisor_state=$(supervisorctl status {layout.program} 2>/dev/null'
        " | awk '{print $2}')\"",
        f'echo "apt_stamp=$(stat -c %Y {layout.APT_STAMP} 2>/dev/null)"',
        f'uid=; while IFS=: read -r name _ id _; do [ "$name" = {q(layout.app)} ] && uid=$id; done < /etc/passwd',
        '[ -n "$uid" ] && echo "user=$uid"',
        f"dpkg-query -W -f='pkg.${{Package}}=${{db:Status-Status}}\\n' {' '.join(PACKAGES + OPTIONAL_PACKAGES)} "
        "2>/dev/null",
        _file_reads(files),
        # the app's own files (secrets in its data directory) are read as the app user
        *([f'[ -n "$uid" ] && {layout.as_app("sh -c " + q(_file_reads(list(app_files))))}'] if app_files else []),
        f'found=; for d in {dirs}; do [ -d "$d" ] && found="$found $d"; done',
        "[ -n \"$found\" ] && stat -c 'dir.%n=%U:%G %a' $found",
        f"find {links} -maxdepth 0 -type l -printf 'link.%p=%l\\n' 2>/dev/null",
        f'[ -e {layout.NGINX_DEFAULT_BACKUP} ] && echo "default_backup=yes"',
        f"echo \"venv_version=$(sed -n 's/^version *= *//p' {layout.venv}/pyvenv.cfg 2>/dev/null)\"",
        f'm=; read -r m 2>/dev/null < {layout.venv_marker}; echo "venv_marker=$m"',
        f'm=; read -r m 2>/dev/null < {layout.requirements_marker}; echo "requirements_marker=$m"',
        f'm=; read -r m 2>/dev/null < {layout.passed}; echo "passed=$m"',
        f'set -- $(ls -t {layout.releases} 2>/dev/null); echo "releases=$*"',
        master_sh(layout),
        "if alive; then",
        '  echo "app_pid=$pid"',
        '  echo "app_listen=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," \'index($0, p) {printf "%s ", $4}\')"',
        "fi",
        'pid=; read -r pid 2>/dev/null < /run/nginx.pid; [ -n "$pid" ] && [ -d /proc/$pid ] && echo "nginx_pid=$pid"',
        "true",
    ]
    return "\n".join(lines)


def parse(output: str) -> dict[str, str]:
    """key=value lines into a dict; a file's checksum and mode become one
    `file.PATH` = 'SHA OWNER:GROUP MODE' fact."""
    facts: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value.strip()
    for key in [k for k in facts if k.startswith("sha.")]:
        path = key.removeprefix("sha.")
        facts[f"file.{path}"] = f"{facts.pop(key)} {facts.pop(f'meta.{path}', '')}"
    return facts
