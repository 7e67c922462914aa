#!/usr/bin/env python3
"""Raw-protocol probe of the servers in servers.json: prints, per instance, the exact replies
to the commands a segmented client depends on (the source of the quirk tables in
docs/servers.md).

usage: quirks.py [STATE_JSON] [NAME...]     (default: $FTPSEG_SERVERS_DIR/servers.json, the
                                             three plain instances... all "plain" ones)
Only 127.0.0.1 / the hosts in the state file are contacted; every read has a timeout.
"""

import json
import os
import re
import socket
import sys
import time


class Session:
    def __init__(self, host, port):
        self.host = host
        self.s = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(4096)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self, timeout=10):
        """One reply (multi-line aware) as a list of lines; [] on timeout."""
        first = self._line(timeout)
        if first is None:
            return []
        lines = [first]
        if len(first) >= 4 and first[3] == "-":
            while True:
                ln = self._line(timeout)
                if ln is None:
                    break
                lines.append(ln)
                if len(ln) >= 4 and ln[:3] == first[:3] and ln[3] == " ":
                    break
        return lines

    def replies_within(self, secs):
        """Every reply that arrives within SECS."""
        out = []
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            r = self.reply(timeout=max(0.05, deadline - time.monotonic()))
            if not r:
                break
            out.append(r)
        return out

    def cmd(self, line, timeout=10):
        self.s.sendall((line + "\r\n").encode())
        return self.reply(timeout)

    def epsv(self):
        r = self.cmd("EPSV")
        m = re.search(r"\(\|\|\|(\d+)\|\)", r[-1] if r else "")
        if not m:
            raise RuntimeError(f"EPSV: {r}")
        return socket.create_connection((self.host, int(m.group(1))), timeout=10)


def show(label, lines):
    if not lines:
        print(f"  {label}: <no reply>")
    elif len(lines) == 1:
        print(f"  {label}: {lines[0]}")
    else:
        print(f"  {label}: " + " | ".join(lines))


def retr(sess, name, rest=None, stop_after=None):
    """EPSV, optional REST, RETR. Reads all data (or STOP_AFTER bytes then closes the data
    connection). Returns (bytes read, final replies)."""
    data = sess.epsv()
    if rest is not None:
        show(f"REST {rest}", sess.cmd(f"REST {rest}"))
    pre = sess.cmd(f"RETR {name}")
    show(f"RETR {name}", pre)
    if not pre or pre[-1][:1] != "1":
        data.close()
        return 0, []
    got = 0
    data.settimeout(30)
    while True:
        want = 65536 if stop_after is None else min(65536, stop_after - got)
        if want <= 0:
            break
        chunk = data.recv(want)
        if not chunk:
            break
        got += len(chunk)
    data.close()
    if stop_after:
        return got, sess.replies_within(3)
    # Complete transfer: the final reply, then anything extra within 0.5 s.
    return got, [sess.reply()] + sess.replies_within(0.5)


def probe(srv, state):
    host, port = srv["host"], srv["port"]
    print(f"== {srv['name']} ({host}:{port})")
    s = Session(host, port)
    show("greeting", s.reply())
    r = s.cmd("USER anonymous")
    show("USER anonymous", r)
    if r and r[-1].startswith("331"):
        show("PASS <email>", s.cmd("PASS probe@example.org"))
    elif r and r[-1].startswith("230"):
        show("PASS after 230", s.cmd("PASS probe@example.org"))
    show("FEAT", s.cmd("FEAT"))
    show("TYPE A", s.cmd("TYPE A"))
    show("SIZE in TYPE A", s.cmd("SIZE big.bin"))
    show("TYPE I", s.cmd("TYPE I"))
    show("SIZE", s.cmd("SIZE big.bin"))
    show("SIZE of a folder", s.cmd("SIZE sub dir"))
    show("SIZE missing", s.cmd("SIZE nope.bin"))
    show("MDTM", s.cmd("MDTM big.bin"))
    show("OPTS UTF8 ON", s.cmd("OPTS UTF8 ON"))
    show("RANG 0 99", s.cmd("RANG 0 99"))
    show("REST 0 (then nothing)", s.cmd("REST 0"))
    n, fin = retr(s, "prime.bin", rest=1000)
    print(f"  -> {n} bytes (file {1000003} - 1000 = {1000003 - 1000})")
    for r in fin:
        show("after data", r)
    n, fin = retr(s, "prime.bin", rest=1000003 + 10)
    print(f"  -> {n} bytes")
    for r in fin:
        show("after data", r)
    n, fin = retr(s, "empty.bin")
    print(f"  -> {n} bytes")
    for r in fin:
        show("after data", r)
    n, fin = retr(s, "sub dir/name with spaces.bin")
    print(f"  -> {n} bytes")
    for r in fin:
        show("after data", r)
    n, fin = retr(s, "big.bin", rest=0, stop_after=1 << 20)
    print(f"  -> closed the data connection after {n} bytes; replies within 3 s:")
    for r in fin:
        show("after close", r)
    show("NOOP", s.cmd("NOOP"))
    extra = s.replies_within(1)
    for r in extra:
        show("then", r)
    show("QUIT", s.cmd("QUIT"))
    # The password user
    s = Session(host, port)
    s.reply()
    show(f"USER {state['user']}", s.cmd(f"USER {state['user']}"))
    show("PASS <password>", s.cmd(f"PASS {state['password']}"))
    show("PWD", s.cmd("PWD"))
    show("QUIT", s.cmd("QUIT"))
    # A wrong password
    s = Session(host, port)
    s.reply()
    s.cmd(f"USER {state['user']}")
    t = time.monotonic()
    r = s.cmd("PASS wrong-password", timeout=20)
    show(f"wrong PASS ({time.monotonic() - t:.1f} s)", r)
    s.s.close()


def main():
    args = sys.argv[1:]
    path = os.path.join(os.environ.get("FTPSEG_SERVERS_DIR", "/tmp/ftpseg-servers"), "servers.json")
    if args and args[0].endswith(".json"):
        path = args.pop(0)
    state = json.load(open(path))
    for srv in state["servers"]:
        if (args and srv["name"] in args) or (not args and srv["variant"] == "plain"):
            try:
                probe(srv, state)
            except Exception as e:  # keep going with the next server
                print(f"  probe failed: {e!r}")


if __name__ == "__main__":
    main()
