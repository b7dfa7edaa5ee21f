# Can this host get into PostgreSQL? Sends a StartupMessage (protocol 3.0) to HOST:PORT
# for USER and DATABASE and prints what the server does: `asks for a password` (this
# host may log in with one), `rejected` (pg_hba.conf lets it not in), or `refused`
# (nothing listens for it). Standard library only.
import socket
import struct
import sys

host, port, user, database = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
try:
    conn = socket.create_connection((host, port), timeout=5)
except OSError:
    print("refused")
    sys.exit()
conn.sendall(struct.pack("!i", len(body) + 4) + body)
answer = conn.recv(1)
print({b"R": "asks for a password", b"E": "rejected"}.get(answer, "refused"))
