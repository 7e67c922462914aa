#!/usr/bin/env python3
"""Time from connect() to the complete 220 greeting, N times in a row (each session sends QUIT
and closes before the next connects), for each PORT on 127.0.0.1.

usage: greeting_latency.py N PORT...      e.g. greeting_latency.py 50 22101 22111 22121 22131
Shows proftpd's habit: right after a session ends, its master pauses ~200 ms before it accepts
the next connection (docs/servers.md).
"""

import socket
import sys
import time


def one(port):
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = b""
        while not any(ln[3:4] == b" " for ln in buf.split(b"\r\n")[:-1]):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        ms = (time.monotonic() - t) * 1000
        s.sendall(b"QUIT\r\n")
        try:
            s.recv(256)
        except OSError:
            pass
    return ms


def main():
    n = int(sys.argv[1])
    for port in map(int, sys.argv[2:]):
        ts = sorted(one(port) for _ in range(n))
        slow = sum(1 for x in ts if x > 100)
        print(
            f"port {port}: n={n} median {ts[n // 2]:.1f} ms, p90 {ts[int(n * 0.9)]:.1f} ms, "
            f"max {ts[-1]:.1f} ms, over 100 ms: {slow}"
        )


if __name__ == "__main__":
    main()
