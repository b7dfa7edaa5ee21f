"""Benchmark: cold and no-op runs of provision + deploy on 1, 3 and 8 lab hosts.

Run as root from the repo: .venv/bin/python bench/run.py [--sizes 1,3,8] [--repeat 3]
[--kinds cold,change,serve] [--preload]. --kinds change times the run a team makes most: one file of
the app edited, then `fab deploy`, on 1 and 3 hosts and on 1 lb + 2 app hosts, with each
step's seconds on the first app host, beside the plain script run again. --kinds serve
measures the site itself: a stock project (startproject, made here) served the guide's
way and fabstack's, requests per second by wrk (apt-get install wrk).
Each size runs the guide's steps as a plain script (bench/plain.sh) on fresh hosts, the
yardstick, then fabstack cold twice on fresh hosts: first with the controller's build cache empty
(one host builds the virtualenv, the others wait for it), then with it warm (no host
builds: what the next run, or another host of the kind, costs); with the CPU seconds
the hosts spent.
It uses its own lab (FABSTACK_LAB_DIR=/var/lib/fabstack-lab-bench on 10.79.0.0/24), so a
user's lab is left alone. It prints a table for people and one `bench ...` line per
figure for scripts. Nothing here asserts: figures are for reading, not for passing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("FABSTACK_LAB_DIR", "/var/lib/fabstack-lab-bench")
os.environ.setdefault("FABSTACK_LAB_SUBNET", "10.79.0.0/24")
os.environ.setdefault("FABSTACK_LAB_CACHE", "/var/lib/fabstack-lab/images")

from deploy.connection import connect  # noqa: E402
from deploy.lab import default_lab  # noqa: E402

FAB = str(Path(sys.executable).parent / "fab")


# fab as a user runs it: its modules byte-compiled, as pip does for an installed wheel and
# Python does on an editable install's first run. (An environment with
# PYTHONDONTWRITEBYTECODE -- this machine's -- would otherwise compile every module of
# deploy/ at every start: ~0.3 s of each no-op.)
def fab_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([FAB, *args], cwd=REPO, capture_output=True, text=True, env=fab_env())
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"fab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def per_host_counts(output: str) -> tuple[int, int]:
    """Remote commands (summed over tasks) and connections of the first host, from -v output."""
    lines = [line for line in output.splitlines() if "remote commands:" in line]
    first = lines[0].split("]")[0]
    mine = [line for line in lines if line.startswith(first)]
    commands = sum(int(line.split("remote commands: ")[1].split(",")[0]) for line in mine)
    connections = int(mine[-1].rsplit(" ", 1)[1])
    return commands, connections


def ssh_floor(target: str, repeat: int = 10) -> tuple[float, float]:
    """Median seconds of a new SSH connection + `true`, and of `true` on an open one."""
    fresh, reused = [], []
    for _ in range(repeat):
        started = time.monotonic()
        conn = connect(target, None, [], 10)
        conn.run("true", hide=True, in_stream=False)
        fresh.append(time.monotonic() - started)
        started = time.monotonic()
        conn.run("true", hide=True, in_stream=False)
        reused.append(time.monotonic() - started)
        conn.close()
    return statistics.median(fresh), statistics.median(reused)


def host_cpu(host) -> float:
    """CPU seconds spent in an sshd-only lab host so far: its sshd (PID 1 there) and every
    process it has reaped (pip, tar, the shells fab runs) -- what a run cost the host."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{host.pid}/task/{host.pid}/children").read_text().split()
    total = 0.0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def machine_cpu() -> float:
    """CPU seconds this whole machine has spent busy (every lab host shares its cores):
    over a run against its wall time, whether the cores were the limit."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cold_run(lab, size: int, prefix: str) -> tuple[list, float, float]:
    """Fresh hosts, one cold provision + deploy: (hosts, seconds, CPU seconds on the hosts)."""
    lab.down()
    hosts = lab.up(count=size, init="sshd", prefix=prefix)
    before = sum(host_cpu(h) for h in hosts)
    seconds, _ = timed("-H", ",".join(h.target for h in hosts), "provision", "deploy")
    return hosts, seconds, sum(host_cpu(h) for h in hosts) - before


def plain_run(lab, size: int) -> tuple[float, float]:
    """Fresh hosts, the guide's steps as a plain script (bench/plain.sh) on each at once:
    (seconds, CPU seconds on the hosts) -- the yardstick for the cold runs."""
    lab.down()
    hosts = lab.up(count=size, init="sshd", prefix="p")
    before = sum(host_cpu(h) for h in hosts)
    seconds = plain_script(lab, hosts, REPO / "templates/sample")
    return seconds, sum(host_cpu(h) for h in hosts) - before


def plain_script(lab, hosts: list, project: Path) -> float:
    """bench/plain.sh with project on hosts at once: its seconds."""
    started = time.monotonic()
    script = [str(REPO / "bench/plain.sh"), str(project), str(lab.known_hosts)]
    proc = subprocess.run([*script, *(h.target for h in hosts)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench/plain.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


def plain_change_run(lab, size: int, repeat: int) -> float:
    """The guide's way to ship a one-file change: the whole plain script again on hosts
    it set up once (median seconds)."""
    lab.down()
    hosts = lab.up(count=size, init="sshd", prefix="pc")
    project = lab.home / "bench-plain-change"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(REPO / "templates" / "sample", project)
    plain_script(lab, hosts, project)
    views = project / "sample" / "views.py"
    runs = []
    for n in range(repeat):
        views.write_text(views.read_text() + f"\n# change {n}\n")
        runs.append(plain_script(lab, hosts, project))
    return statistics.median(runs)


STEP_RE = re.compile(r"^\[(?P<host>[^\]]+)\] (?P<step>[^:]+): (?:ok|changed) (?P<seconds>[\d.]+)s$")


def step_times(output: str, host: str) -> dict[str, float]:
    """Seconds of each step of host in a --verbose run's output (a step run twice: summed)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        m = STEP_RE.match(line.strip())
        if m and m["host"] == host:
            found[m["step"]] = found.get(m["step"], 0.0) + float(m["seconds"])
    return found


def slowest_during(address: str, action) -> tuple[float, int, int]:
    """Run action() while 4 clients ask for the site's / without pause: (seconds of the
    slowest answer, answers, failures). A reload that leaves no worker ready for a while
    shows here as a slow answer, not a failure (requests wait in gunicorn's backlog)."""
    import threading
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    done, lock, found = threading.Event(), threading.Lock(), [0.0, 0, 0]

    def client() -> None:
        while not done.is_set():
            started, ok = time.monotonic(), True
            try:
                opener.open(f"http://{address}/", timeout=30).read()
            except OSError:
                ok = False
            with lock:
                found[0] = max(found[0], time.monotonic() - started)
                found[1 if ok else 2] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1)  # the clients at work before the run
    action()
    time.sleep(1)
    done.set()
    for thread in clients:
        thread.join()
    return found[0], int(found[1]), int(found[2])


def change_run(
    lab, size: int, repeat: int, farm: bool = False, static_files: int = 0, preload: bool = False
) -> tuple[float, dict[str, float]]:
    """The run a team makes most: one file of the app edited, then `fab deploy`, on hosts
    provisioned and deployed once (size single hosts, or with farm 1 lb + size app hosts;
    static_files more static files in the project):
    (median seconds, median seconds of each step on the first app host, and the CPU
    seconds the whole machine spent during the run: "machine CPU")."""
    lab.down()
    hosts = lab.up(count=size + (1 if farm else 0), init="sshd", prefix="ch")
    project = lab.home / "bench-change"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(REPO / "templates" / "sample", project)
    for n in range(static_files):  # a project's many static files (its own, then its apps')
        path = project / "static" / f"part{n // 100}" / f"file{n}.css"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f".rule-{n} {{ margin: {n % 17}px }}\n" * 20)
    settings = lab.home / "bench-change.yaml"
    inventory = [{"host": hosts[0].target, "roles": ["lb"]}, *({"host": h.target} for h in hosts[1:])]
    settings.write_text(
        json.dumps(
            {
                "project_path": str(project),
                **({"hosts": inventory} if farm else {}),
                **({"preload_app": True} if preload else {}),
            }
        )
    )
    targets = [] if farm else ["-H", ",".join(h.target for h in hosts)]
    first = hosts[1 if farm else 0].target
    os.environ["FABSTACK_SETTINGS"] = str(settings)
    try:
        timed(*targets, "provision", "deploy")
        runs = []
        views = project / "sample" / "views.py"
        for n in range(repeat):
            views.write_text(views.read_text() + f"\n# change {n}\n")  # one file of the app changed
            busy = machine_cpu()
            seconds, out = timed(*targets, "deploy", "--verbose")
            runs.append((seconds, {**step_times(out, first), "machine CPU": machine_cpu() - busy}))
        # one more change, deployed under load: the slowest answer meanwhile
        views.write_text(views.read_text() + "\n# change under load\n")
        slowest, answered, failed = slowest_during(hosts[0].address, lambda: timed(*targets, "deploy"))
        under_load = {"slowest answer under load": slowest}
        print(f"  a deploy under 4 clients: {answered} answers, {failed} failed, slowest {slowest:.2f} s")
    finally:
        del os.environ["FABSTACK_SETTINGS"]
    steps = sorted({name for _, found in runs for name in found})
    medians = {name: statistics.median(found.get(name, 0.0) for _, found in runs) for name in steps}
    medians.update(under_load)
    return statistics.median(seconds for seconds, _ in runs), medians


def many_hosts_noop(lab, count: int, repeat: int) -> tuple[float, int, int]:
    """count hosts from a snapshot of a provisioned one, converged once (an sshd-only host
    starts nothing at boot), then no-op runs: (median seconds, commands and connections per host)."""
    lab.down()
    (first,) = lab.up(count=1, init="sshd", prefix="s")
    timed("-H", first.target, "provision", "deploy")
    lab.snapshot("benchprv", first.name)
    lab.down()
    hosts = lab.up(count=count, init="sshd", prefix="n", snapshot="benchprv")
    targets = ",".join(h.target for h in hosts)
    settings = lab.home / "bench-parallel.yaml"  # every host at once (the default is 10 at a time)
    settings.write_text(f"parallel: {count}\n")
    os.environ["FABSTACK_SETTINGS"] = str(settings)
    try:
        timed("-H", targets, "provision", "deploy")
        runs = [timed("-H", targets, "provision", "--verbose", "deploy", "--verbose") for _ in range(repeat)]
    finally:
        del os.environ["FABSTACK_SETTINGS"]
    commands, connections = per_host_counts(runs[-1][1])
    return statistics.median(seconds for seconds, _ in runs), commands, connections


# what --kinds serve asks for: the admin's page, and one of its static files
SERVED: tuple[tuple[str, dict[str, str]], ...] = (
    ("/admin/login/", {}),
    ("/static/admin/css/base.css", {}),
    ("/static/admin/css/base.css", {"Accept-Encoding": "gzip"}),
)


def stock_project(root: Path) -> Path:
    """startproject's layout, in a git repository (fabstack ships what git keeps)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run([Path(sys.executable).parent / "django-admin", "startproject", "mysite", str(root)], check=True)
    (root / "requirements.txt").write_text("django>=5.2,<6\n")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "startproject"]):
        subprocess.run(["git", *identity, *args], cwd=root, check=True)
    return root


def requests_per_second(url: str, headers: dict[str, str]) -> float:
    """wrk -t2 -c32 for 8 s: requests per second (every answer must be a 2xx)."""
    flags = [f for name, value in headers.items() for f in ("-H", f"{name}: {value}")]
    out = subprocess.run(["wrk", "-t2", "-c32", "-d8s", *flags, url], capture_output=True, text=True, check=True)
    if "Non-2xx" in out.stdout:
        sys.exit(f"wrk {url}: answers other than 2xx\n{out.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not found:
        sys.exit(f"wrk {url}: no figure\n{out.stdout}")
    return float(found[1])


def serve(args) -> None:
    """--kinds serve: the same stock project on two fresh hosts, one the guide's way
    (bench/plain.sh, then bench/guide-stock.sh), one by fabstack; each path asked in
    turns, args.repeat rounds."""
    if not shutil.which("wrk"):
        sys.exit("--kinds serve needs wrk: apt-get install wrk")
    lab = default_lab()
    lab.down()
    guide, ours = lab.up(count=2, init="sshd", prefix="sv")
    project = stock_project(lab.home / "bench-serve")
    plain_script(lab, [guide], REPO / "templates/sample")
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}", guide.target]
    archive = subprocess.run(["tar", "-czf", "-", "-C", str(project), "."], capture_output=True, check=True).stdout
    subprocess.run([*ssh, "cat > /tmp/stock-app.tgz"], input=archive, check=True)
    with open(REPO / "bench/guide-stock.sh", "rb") as script:
        subprocess.run([*ssh, "sh", "-s", "mysite"], stdin=script, check=True)
    settings = lab.home / "bench-serve.yaml"
    settings.write_text(json.dumps({"project_path": str(project)}))
    timed("-H", ours.target, "--settings", str(settings), "provision", "deploy")
    found: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.repeat):
        for index, (path, headers) in enumerate(SERVED):
            for name, host in (("guide", guide), ("fabstack", ours)):
                found.setdefault((index, name), []).append(requests_per_second(f"http://{host.address}{path}", headers))
    lab.down()
    print(f"{'path':<42} {'guide req/s':>16} {'fabstack req/s':>16} {'fabstack / guide':>17}")
    for index, (path, headers) in enumerate(SERVED):
        shown = path + (" (gzip)" if headers else "")
        g, f = found[(index, "guide")], found[(index, "fabstack")]
        ratio = statistics.median(f) / statistics.median(g)
        print(f"{shown:<42} {min(g):>7.0f}-{max(g):<8.0f} {min(f):>7.0f}-{max(f):<8.0f} {ratio:>17.2f}")
        print(f"bench serve={shown.replace(' ', '')} guide_rps={statistics.median(g):.0f} fabstack_rps={statistics.median(f):.0f}")  # fmt: skip
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noop-hosts", type=int, default=0, help="also: a no-op on this many hosts from a snapshot")
    parser.add_argument(
        "--kinds",
        default="cold",
        help="cold (cold and no-op runs, the plain script), change (a one-file deploy), serve (the site under load)",
    )
    parser.add_argument("--preload", action="store_true", help="--kinds change with preload_app: true")
    parser.add_argument("--no-farms", action="store_true", help="--kinds change on single hosts only")
    args = parser.parse_args()
    if "serve" in args.kinds.split(","):
        serve(args)
    if "change" in args.kinds.split(","):
        changes(args)
    if "cold" not in args.kinds.split(","):
        return
    lab = default_lab()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "deploy"), str(REPO / "fabfile.py")], check=True
    )
    rows, builds, plains = [], [], []
    startup = statistics.median(timed("--list")[0] for _ in range(5))
    cache = Path(os.environ.setdefault("FABSTACK_CACHE", "/var/lib/fabstack-lab-bench/build-cache"))
    for size in [int(n) for n in args.sizes.split(",") if n]:
        plains.append((size, *plain_run(lab, size)))
        shutil.rmtree(cache, ignore_errors=True)  # the first cold run builds the virtualenv
        _, first, first_cpu = cold_run(lab, size, "b")
        hosts, cold, cold_cpu = cold_run(lab, size, "c")  # fresh hosts again, the build cached
        targets = ",".join(h.target for h in hosts)
        noops, out = [], ""
        for _ in range(args.repeat):
            seconds, out = timed("-H", targets, "provision", "--verbose", "deploy", "--verbose")
            noops.append(seconds)
        commands, connections = per_host_counts(out)
        rows.append((size, cold, statistics.median(noops), commands, connections))
        builds.append((size, first, first_cpu, cold, cold_cpu))
        if size == 1:
            fresh, reused = ssh_floor(hosts[0].target)
    lab.down()
    print(f"{'hosts':>5} {'cold s':>8} {'no-op s (median)':>17} {'cmds/host':>10} {'ssh conns/host':>15}")
    for size, cold, noop, commands, connections in rows:
        print(f"{size:>5} {cold:>8.1f} {noop:>17.2f} {commands:>10} {connections:>15}")
    print(
        f"{'hosts':>5} {'cold, no build cached s':>24} {'host CPU s':>11} {'cold, build cached s':>21} {'host CPU s':>11}"
    )
    for size, first, first_cpu, cold, cold_cpu in builds:
        print(f"{size:>5} {first:>24.1f} {first_cpu:>11.1f} {cold:>21.1f} {cold_cpu:>11.1f}")
        print(f"bench hosts={size} cold_uncached_s={first:.2f} cold_uncached_host_cpu_s={first_cpu:.1f} "
              f"cold_cached_host_cpu_s={cold_cpu:.1f}")  # fmt: skip
    print(f"{'hosts':>5} {'plain script s':>15} {'host CPU s':>11} {'fabstack cached / plain':>24}")
    cached = {size: cold for size, _, _, cold, _ in builds}
    for size, seconds, cpu in plains:
        print(f"{size:>5} {seconds:>15.1f} {cpu:>11.1f} {cached[size] / seconds:>24.2f}")
        print(f"bench hosts={size} plain_s={seconds:.2f} plain_host_cpu_s={cpu:.1f}")  # fmt: skip
    sys.stdout.flush()
    if args.noop_hosts:
        seconds, commands, connections = many_hosts_noop(lab, args.noop_hosts, args.repeat)
        lab.down()
        print(
            f"no-op on {args.noop_hosts} hosts started from a provisioned one's snapshot: {seconds:.2f} s "
            f"(median of {args.repeat}), {commands} remote command(s) and {connections} connection(s) per host"
        )
        print(f"bench noop_hosts={args.noop_hosts} noop_s={seconds:.3f} commands_per_host={commands}")  # fmt: skip
    print(f"fab start-up (fab --list, median of 5): {startup:.2f} s")
    if any(r[0] == 1 for r in rows):
        print(
            f"SSH floor: new connection + command {fresh * 1000:.0f} ms, command on an open one {reused * 1000:.1f} ms"
        )
    for size, cold, noop, commands, connections in rows:
        print(f"bench hosts={size} cold_s={cold:.2f} noop_s={noop:.3f} commands_per_host={commands} "
              f"connections_per_host={connections}")  # fmt: skip
    print(f"bench fab_startup_s={startup:.3f}")
    cold = {size: c for size, c, *_ in rows}
    for size in sorted(cold):
        if size > 1 and 1 in cold:
            print(f"bench cold_ratio_{size}_to_1={cold[size] / cold[1]:.2f}")
    if any(r[0] == 1 for r in rows):
        print(f"bench ssh_connect_s={fresh:.4f} ssh_command_s={reused:.4f}")


def changes(args) -> None:
    """--kinds change: a one-file deploy on 1 and 3 single hosts and a 1 lb + 2 app farm,
    with the first app host's steps (median seconds)."""
    lab = default_lab()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "deploy"), str(REPO / "fabfile.py")], check=True
    )
    shapes = [(f"{n} host(s)", n, False, 0) for n in (int(s) for s in args.sizes.split(",") if s)]
    if not args.no_farms:
        shapes += [("1 lb + 2 app", 2, True, 0), ("1 lb + 2 app, 2,000 static files", 2, True, 2000)]
    for name, size, farm, static_files in shapes:
        plain = None if farm else plain_change_run(lab, size, args.repeat)
        seconds, steps = change_run(lab, size, args.repeat, farm, static_files, args.preload)
        lab.down()
        shown = ", ".join(f"{step} {t:.2f}" for step, t in sorted(steps.items(), key=lambda s: -s[1]) if t >= 0.05)
        beside = f"; the plain script again {plain:.2f} s" if plain else ""
        name += ", preload_app" if args.preload else ""
        print(f"change deploy, {name}: {seconds:.2f} s (median of {args.repeat}){beside}; steps: {shown}")
        key = re.sub(r"\W+", "_", name.replace("(s)", "").replace("+", "plus")).strip("_")
        print(f"bench change={key} seconds={seconds:.3f}" + (f" plain_s={plain:.3f}" if plain else ""))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
