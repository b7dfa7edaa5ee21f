# Health check run on the host: GET PATH from ADDRESS (HOST:PORT or unix:/path) with
# a Host header, as nginx sends it (X-Forwarded-Proto SCHEME: https when the site is
# served over HTTPS), waiting at most TIMEOUT seconds. With STRICT 1 (a health_path was
# set) only 2xx/3xx is healthy; with 0 any answer below 500 is (a stock Django project
# has no view at / and answers 404: it runs). A redirect is followed on the same
# address (at most 5): to another host it counts as an answer; to https:// when the site
# has no HTTPS it fails, naming it (a project that redirects every page to HTTPS serves
# nothing without it). Exit 0 healthy, 1 on any other answer (the app runs and said no:
# judged at once), 2 when nothing answers yet (refused, timed out, or 502/504 from the
# host's own nginx while gunicorn starts: worth waiting for).
# With MASTER (a pid) the check asks gunicorn which master's worker answered
# (X-Fabstack-Probe, answered by gunicorn.conf.py with preload_app): an answer from
# another master's worker is exit 2 too (the new master's workers are not serving yet).
# Uses only the standard library.
import http.client
import socket
import sys
import urllib.parse

address, path, host, timeout, strict = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
scheme = sys.argv[6] if len(sys.argv) > 6 else "http"
master = sys.argv[7] if len(sys.argv) > 7 else ""
probe = {"X-Fabstack-Probe": "1"} if master else {}


class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(address[5:])


def get(path: str) -> tuple[int, str]:
    """The status of GET path, and where a redirect leads ('' when it is none); with
    MASTER, exit 2 when a worker of another master answered."""
    conn: http.client.HTTPConnection
    if address.startswith("unix:"):
        conn = UnixConnection("localhost", timeout=timeout)
    else:
        name, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(name, int(port), timeout=timeout)
    conn.request("GET", path, headers={"Host": host, "X-Forwarded-Proto": scheme, **probe})
    answer = conn.getresponse()
    if master and answer.getheader("X-Fabstack-Master", "") != master:
        print(f"GET {path} on {address}: a worker of the master before answered", file=sys.stderr)
        sys.exit(2)
    return answer.status, answer.getheader("Location", "") if 300 <= answer.status < 400 else ""


first = path
try:
    for _ in range(6):
        status, location = get(path)
        if not location:
            break
        to = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{path}", location))
        if to.scheme == "https" and scheme != "https":
            print(
                f"GET {first} on {address}: HTTP {status} to {location}, and this site serves no HTTPS "
                "(set tls, or stop the project redirecting to HTTPS: SECURE_SSL_REDIRECT)",
                file=sys.stderr,
            )
            sys.exit(1)
        if to.hostname and to.hostname != host.split(":")[0]:
            break  # another site's page: this one answered
        path = to.path + (f"?{to.query}" if to.query else "") or "/"
except (OSError, http.client.HTTPException) as exc:
    print(f"GET {path} on {address}: {exc}", file=sys.stderr)
    sys.exit(2)
if status in (502, 504):
    print(f"GET {path} on {address}: HTTP {status} (nothing behind nginx answers yet)", file=sys.stderr)
    sys.exit(2)
if status >= (400 if strict else 500):
    print(f"GET {path} on {address}: HTTP {status}", file=sys.stderr)
    sys.exit(1)
