#!/usr/bin/env python3
"""Per-IP limit probe: hold N logged-in sessions open on HOST:PORT, then open one more and
report how the server refuses it (greeting, or the reply to USER/PASS).

usage: limit_probe.py HOST PORT N [USER PASSWORD]
Prints one line per step; exits 0 if the extra session was refused (4xx/5xx before 230),
1 if it logged in. Every socket has a 10 s timeout.
"""

import socket
import sys


def reply(sock_file):
    """Read one FTP reply (multi-line aware); return its lines."""
    lines = []
    while True:
        line = sock_file.readline()
        if not line:
            lines.append("<connection closed>")
            return lines
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) >= 4 and line[:3].isdigit() and line[3] == " " and (
            len(lines) == 1 or lines[0][:3] == line[:3]
        ):
            return lines


def login(host, port, user, password):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    steps = [("greeting", reply(f))]
    if not steps[-1][1][-1].startswith("220"):
        return s, steps, False
    s.sendall(f"USER {user}\r\n".encode())
    steps.append((f"USER {user}", reply(f)))
    last = steps[-1][1][-1]
    if last.startswith("331"):
        s.sendall(f"PASS {password}\r\n".encode())
        steps.append(("PASS ***", reply(f)))
        last = steps[-1][1][-1]
    return s, steps, last.startswith("230")


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "anonymous"
    password = sys.argv[5] if len(sys.argv) > 5 else "probe@example.org"
    held = []
    for i in range(n):
        s, steps, ok = login(host, port, user, password)
        held.append(s)
        if not ok:
            print(f"session {i + 1} of {n} did not log in: {steps}")
            return 2
    print(f"{n} sessions logged in as {user}")
    s, steps, ok = login(host, port, user, password)
    for what, lines in steps:
        print(f"extra session, {what}: " + " | ".join(lines))
    for sock in held + [s]:
        sock.close()
    return 1 if ok else 0


if __name__ == "__main__":
    sys.exit(main())
