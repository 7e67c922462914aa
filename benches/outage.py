#!/usr/bin/env python3
"""One network outage (or freeze), measured for ftpseg and its peers, side by side.

In a network namespace of its own (loopback only), the built-in server (`ftpseg serve`) serves
a 40 MiB file at 2 MiB/s per connection; each tool downloads it with 4 connections; after 4 s
the loopback goes down (plus an `unreachable` route, so connects fail at once as they do when a
laptop's route goes) for OUTAGE seconds, then comes back. `--at-start`: the network is down
when the tool starts. `--freeze SECS`: after 4 s the tool's processes (its process group and
every descendant) get SIGSTOP and the loopback goes down; SIGCONT after SECS, the network back
5 s after the thaw (a wake onto a Wi-Fi still reconnecting); the positional OUTAGE is then
ignored (the network is down SECS + 5 s). `--server-idle SECS`: the server closes sessions
idle that long on their control connection (`ftpseg serve --idle-timeout`, as vsftpd's
idle_session_timeout; issue 18's freeze has 10); by default it never does.

For each tool and run: the scenario, the exit code, the seconds from the network's return to
the first byte after it, the seconds from the return to the tool's exit (negative: it exited
before the return), and whether the file is byte-exact. "First byte": the first 20 ms sample
after the return at which the tool's `rchar` + `wchar` (/proc/PID/io, summed over the tool and
its descendants) is 16 KiB past its value at the return. `rchar` alone misses tools that read
sockets with recv(2) (aria2c, lftp), which the kernel does not count there; their writes of
the file are counted in `wchar`; the 16 KiB keep log lines and control files from counting.
With `--runs N` (N > 1), each tool's medians follow (exit codes listed, byte-exact as k/N).

    sudo python3 benches/outage.py 15                     # all tools, outage mid-download
    sudo python3 benches/outage.py 6 --at-start --tools ftpseg,aria2c
    sudo python3 benches/outage.py 0 --freeze 60          # frozen 60 s, network back 5 s later
    sudo python3 benches/outage.py 60 --runs 3            # 3 runs per tool, then medians
    FTPSEG=target/release/ftpseg ...                       # the binary measured
    OUTAGE_STDERR=/tmp/errs ...                            # keep each run's stderr there

Needs root (unshare, nsenter, ip). Every run is bounded (the network's return + 200 s) and
cleans up (a tool still running is continued and killed; the server and the namespace's
holder are killed).
"""
import argparse, hashlib, os, shutil, signal, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath(os.environ.get("FTPSEG", "target/release/ftpseg"))
PORT = 2121
THRESHOLD = 16 << 10  # bytes of rchar + wchar past the value at the return = "first byte"


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


def io_chars(pid):
    """rchar + wchar of one process, or None once it is gone."""
    try:
        n = 0
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith(("rchar:", "wchar:")):
                    n += int(line.split()[1])
        return n
    except (OSError, ValueError):
        return None


def descendants(pid):
    """pid and every process below it (from /proc/*/stat; no /proc/PID/task/*/children here)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                parent[int(d)] = int(st[st.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids; todo += kids
    return found


def signal_all(pids, sig):
    for q in pids:
        try:
            os.kill(q, sig)
        except OSError:
            pass


def one(tool, outage, at_start, freeze, work, digest, idle=0):
    hold = subprocess.Popen(["unshare", "-n", "sleep", str(outage + freeze + 400)])
    time.sleep(0.3)
    ns = ["nsenter", "-t", str(hold.pid), "-n"]
    run = lambda *a: subprocess.run(ns + list(a), stderr=subprocess.DEVNULL)
    down = lambda: (run("ip", "link", "set", "lo", "down"),
                    run("ip", "route", "add", "unreachable", "127.0.0.0/8", "table", "main"))
    up = lambda: (run("ip", "route", "del", "unreachable", "127.0.0.0/8", "table", "main"),
                  run("ip", "link", "set", "lo", "up"))
    run("ip", "link", "set", "lo", "up")
    idle_args = ["--idle-timeout", str(idle)] if idle else []
    server = subprocess.Popen(ns + [BIN, "serve", f"{work}/root", "--port", str(PORT),
                                    "--rate", "2M"] + idle_args, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1)
    out = f"{work}/out/{tool}.bin"
    for leftover in os.listdir(f"{work}/out"):
        os.unlink(f"{work}/out/{leftover}")
    if at_start:
        down()
    t0 = time.monotonic()
    # nsenter without --fork execs the tool: p.pid is the tool's pid. Its own session, so that
    # the freeze can stop its process group too.
    p = subprocess.Popen(ns + command(tool, f"ftp://127.0.0.1:{PORT}/f.bin", out),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    cut_at = t0 if at_start else t0 + 4
    # freeze: stopped at cut_at, continued at thaw_at, network back 5 s later
    thaw_at = cut_at + freeze if freeze else None
    back_at = thaw_at + 5 if freeze else cut_at + outage
    samples, back, cut, frozen, deadline = [], None, at_start, [], back_at + 200
    pids, pids_at = [p.pid], 0.0
    while p.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        if now - pids_at >= 1 and not frozen:
            pids, pids_at = descendants(p.pid), now
        if not cut and now >= cut_at:
            if freeze:
                frozen = descendants(p.pid)
                try:
                    os.killpg(p.pid, signal.SIGSTOP)
                except OSError:
                    pass
                signal_all(frozen, signal.SIGSTOP)
            down()
            cut = True
        if frozen and now >= thaw_at:
            signal_all(frozen, signal.SIGCONT)
            try:
                os.killpg(p.pid, signal.SIGCONT)
            except OSError:
                pass
            pids, frozen = frozen, []
        if back is None and now >= back_at:
            up()
            back = time.monotonic()
        counts = [io_chars(q) for q in pids]
        samples.append((now, sum(c for c in counts if c is not None)))
        time.sleep(0.02)
    if p.poll() is None:
        signal_all(descendants(p.pid), signal.SIGCONT)
        signal_all(descendants(p.pid), signal.SIGKILL)
    end = time.monotonic()
    code = p.wait()
    err = [l.strip() for l in p.stderr.read().decode(errors="replace").splitlines()]
    err = [l for l in err if l]
    if os.environ.get("OUTAGE_STDERR"):  # a folder: each run's stderr kept there
        with open(f"{os.environ['OUTAGE_STDERR']}/{tool}-{time.time():.0f}.txt", "w") as f:
            f.write("\n".join(err) + "\n")
    server.kill(); hold.kill(); server.wait(); hold.wait()
    first = None
    if back is not None:
        at_back = next((r for t, r in samples if t >= back), None)
        first = next((t - back for t, r in samples
                      if t > back and at_back is not None and r >= at_back + THRESHOLD), None)
    exact = os.path.exists(out) and sha(out) == digest
    # a tool that exits before the network returns: the end is negative (seconds before the
    # planned return)
    return code, first, end - (back if back else back_at), exact, err[-1] if err else ""


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outage", type=float, help="seconds the network is gone (ignored with --freeze)")
    ap.add_argument("--at-start", action="store_true", help="the network is down at the start")
    ap.add_argument("--freeze", type=float, default=0, metavar="SECS",
                    help="after 4 s: SIGSTOP and network down; SIGCONT after SECS, network "
                         "back 5 s later")
    ap.add_argument("--tools", default="ftpseg,lftp,aria2c,axel")
    ap.add_argument("--runs", type=int, default=1, help="runs per tool (then medians)")
    ap.add_argument("--server-idle", type=int, default=0, metavar="SECS",
                    help="the server closes sessions idle this long (0: never)")
    a = ap.parse_args()
    if a.freeze and a.at_start:
        ap.error("--freeze and --at-start exclude each other")
    work = tempfile.mkdtemp(prefix="ftpseg-outage-")
    if a.freeze:
        scenario = f"freeze {a.freeze:g} s+5"
        print(f"frozen {a.freeze:g} s after 4 s, network down from the freeze to 5 s after the "
              f"thaw; 40 MiB, 4 x 2 MiB/s; {BIN}")
    else:
        where = "at the start" if a.at_start else "after 4 s"
        scenario = f"outage {a.outage:g} s" + (" at start" if a.at_start else "")
        print(f"outage of {a.outage:g} s {where}; 40 MiB, 4 x 2 MiB/s; {BIN}")
    try:
        os.makedirs(f"{work}/root"); os.makedirs(f"{work}/out")
        with open(f"{work}/root/f.bin", "wb") as f:
            f.write(os.urandom(40 << 20))
        digest = sha(f"{work}/root/f.bin")
        print(f"{'scenario':22} {'run':>3} {'tool':8} {'exit':>4} {'first byte after return (s)':>28} "
              f"{'end after return (s)':>21}  byte-exact  last message")
        rows = {}
        for r in range(1, a.runs + 1):
            for tool in a.tools.split(","):
                if tool != "ftpseg" and not shutil.which(tool):
                    print(f"{tool:8} not installed"); continue
                code, first, end, exact, msg = one(tool, a.outage, a.at_start, a.freeze, work,
                                                   digest, a.server_idle)
                rows.setdefault(tool, []).append((code, first, end, exact))
                f = f"{first:.2f}" if first is not None else "-"
                e = f"{end:.2f}" if end is not None else "-"
                print(f"{scenario:22} {r:>3} {tool:8} {code:>4} {f:>28} {e:>21}  {str(exact):10}  "
                      f"{msg[:100]}", flush=True)
        if a.runs > 1:
            med = lambda xs: (f"{statistics.median(xs):.2f}" if xs else "-")
            for tool, rs in rows.items():
                codes = ",".join(str(c) for c, *_ in rs)
                firsts = med([x for _, x, _, _ in rs if x is not None])
                ends = med([x for _, _, x, _ in rs if x is not None])
                exact = f"{sum(1 for *_, x in rs if x)}/{len(rs)}"
                print(f"{scenario:22} {'med':>3} {tool:8} {codes:>4} {firsts:>28} {ends:>21}  "
                      f"{exact:10}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
