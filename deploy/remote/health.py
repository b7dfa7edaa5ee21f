# Health check run on the host: GET PATH from ADDRESS (HOST:PORT or unix:/path) with
# a Host header, waiting at most TIMEOUT seconds; exit 0 on a 2xx/3xx answer.
# Uses only the standard library.
import http.client
import socket
import sys

address, path, host, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(address[5:])


if address.startswith("unix:"):
    conn = UnixConnection("localhost", timeout=timeout)
else:
    name, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=timeout)
try:
    conn.request("GET", path, headers={"Host": host})
    status = conn.getresponse().status
except OSError as exc:
    sys.exit(f"{address}{path}: {exc}")
sys.exit(0 if status < 400 else f"{address}{path}: HTTP {status}")
