# Health check run on the host: GET PATH from ADDRESS (HOST:PORT or unix:/path) with
# a Host header, waiting at most TIMEOUT seconds. With STRICT 1 (a health_path was set)
# only 2xx/3xx is healthy; with 0 any answer below 500 is (a stock Django project has no
# view at / and answers 404: it runs). Exit 0 healthy, 1 on any other answer (the app
# runs and said no: judged at once), 2 when nothing answers yet (refused, timed out, or
# 502/504 from the host's own nginx while gunicorn starts: worth waiting for).
# Uses only the standard library.
import http.client
import socket
import sys

address, path, host, timeout, strict = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"


class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(address[5:])


conn: http.client.HTTPConnection
if address.startswith("unix:"):
    conn = UnixConnection("localhost", timeout=timeout)
else:
    name, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=timeout)
try:
    conn.request("GET", path, headers={"Host": host})
    status = conn.getresponse().status
except (OSError, http.client.HTTPException) as exc:
    print(f"GET {path} on {address}: {exc}", file=sys.stderr)
    sys.exit(2)
if status in (502, 504):
    print(f"GET {path} on {address}: HTTP {status} (nothing behind nginx answers yet)", file=sys.stderr)
    sys.exit(2)
if status >= (400 if strict else 500):
    print(f"GET {path} on {address}: HTTP {status}", file=sys.stderr)
    sys.exit(1)
