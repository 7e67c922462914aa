#!/usr/bin/env python3
"""One network outage, measured for ftpseg and its peers, side by side.

In a network namespace of its own (loopback only), the built-in server (`ftpseg serve`) serves
a 40 MiB file at 2 MiB/s per connection; each tool downloads it with 4 connections; after 4 s
the loopback goes down (plus an `unreachable` route, so connects fail at once as they do when a
laptop's route goes) for OUTAGE seconds, then comes back. `--at-start`: the network is down
when the tool starts. For each tool: the exit code, the seconds from the network's return to
the first byte read after it (the tool's `rchar` in /proc/PID/io, sampled every 20 ms), the
seconds from the return to the tool's exit, and whether the file is byte-exact.

    sudo python3 benches/outage.py 15                     # all tools, outage mid-download
    sudo python3 benches/outage.py 6 --at-start --tools ftpseg,aria2c
    FTPSEG=target/release/ftpseg ...                       # the binary measured

Needs root (unshare, nsenter, ip). Every run is bounded (OUTAGE + 200 s) and cleans up.
"""
import argparse, hashlib, os, shutil, subprocess, sys, tempfile, time

BIN = os.path.abspath(os.environ.get("FTPSEG", "target/release/ftpseg"))
PORT = 2121


def command(tool, url, out):
    d, name = os.path.dirname(out), os.path.basename(out)
    return {
        "ftpseg": [BIN, "-q", "-n", "4", "-o", out, url],
        # lftp: its own defaults for retries; pget with 4 connections.
        "lftp": ["lftp", "-c", f"set xfer:clobber on; set net:timeout 30; pget -n 4 {url} -o {out}"],
        "aria2c": ["aria2c", "-x4", "-s4", "-k1M", "--timeout=30", "--console-log-level=warn",
                   "--summary-interval=0", "--download-result=hide", "-d", d, "-o", name, url],
        "axel": ["axel", "-q", "-n", "4", "-T", "30", "-o", out, url],
    }[tool]


def rchar(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None


def one(tool, outage, at_start, work, digest):
    hold = subprocess.Popen(["unshare", "-n", "sleep", str(outage + 400)])
    time.sleep(0.3)
    ns = ["nsenter", "-t", str(hold.pid), "-n"]
    run = lambda *a: subprocess.run(ns + list(a), stderr=subprocess.DEVNULL)
    down = lambda: (run("ip", "link", "set", "lo", "down"),
                    run("ip", "route", "add", "unreachable", "127.0.0.0/8", "table", "main"))
    up = lambda: (run("ip", "route", "del", "unreachable", "127.0.0.0/8", "table", "main"),
                  run("ip", "link", "set", "lo", "up"))
    run("ip", "link", "set", "lo", "up")
    server = subprocess.Popen(ns + [BIN, "serve", f"{work}/root", "--port", str(PORT),
                                    "--rate", "2M"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1)
    out = f"{work}/out/{tool}.bin"
    if at_start:
        down()
    t0 = time.monotonic()
    p = subprocess.Popen(ns + command(tool, f"ftp://127.0.0.1:{PORT}/f.bin", out),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples, back, deadline = [], None, t0 + outage + 200
    cut_at = t0 if at_start else t0 + 4
    while p.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        if not at_start and back is None and now >= cut_at and not samples_cut(samples):
            down()
            samples.append((now, "cut"))
        if back is None and now >= cut_at + outage:
            up()
            back = time.monotonic()
        samples.append((now, rchar(p.pid)))
        time.sleep(0.02)
    if p.poll() is None:
        p.kill()
    end = time.monotonic()
    code = p.wait()
    err = p.stderr.read().decode(errors="replace").strip().splitlines()
    server.kill(); hold.kill(); server.wait(); hold.wait()
    first = None
    if back is not None:
        at_back = next((r for t, r in samples if t >= back and isinstance(r, int)), None)
        first = next((t - back for t, r in samples
                      if t > back and isinstance(r, int) and at_back is not None and r > at_back),
                     None)
    exact = os.path.exists(out) and sha(out) == digest
    return code, first, (end - back) if back else None, exact, err[-1] if err else ""


def samples_cut(samples):
    return any(r == "cut" for _, r in samples)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outage", type=float)
    ap.add_argument("--at-start", action="store_true")
    ap.add_argument("--tools", default="ftpseg,lftp,aria2c,axel")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ftpseg-outage-")
    try:
        os.makedirs(f"{work}/root"); os.makedirs(f"{work}/out")
        with open(f"{work}/root/f.bin", "wb") as f:
            f.write(os.urandom(40 << 20))
        digest = sha(f"{work}/root/f.bin")
        where = "at the start" if a.at_start else "after 4 s"
        print(f"outage of {a.outage:g} s {where}; 40 MiB, 4 x 2 MiB/s; {BIN}")
        print(f"{'tool':8} {'exit':>4} {'first byte after return (s)':>28} "
              f"{'end after return (s)':>21}  byte-exact  last message")
        for tool in a.tools.split(","):
            if tool != "ftpseg" and not shutil.which(tool):
                print(f"{tool:8} not installed"); continue
            code, first, end, exact, msg = one(tool, a.outage, a.at_start, work, digest)
            f = f"{first:.2f}" if first is not None else "-"
            e = f"{end:.2f}" if end is not None else "-"
            print(f"{tool:8} {code:>4} {f:>28} {e:>21}  {str(exact):10}  {msg[:60]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
