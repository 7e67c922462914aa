#!/usr/bin/env python3
"""One file from three mirrors at once, ftpseg side by side with aria2c (issue 19 benchmark).

Three `ftpseg serve` instances on 127.0.0.1 serve the same file, each allowing 3 control
connections (a 4th is answered 421) and throttling every RETR to --rate (20 MiB/s). Scenarios:

  even   three mirrors at --rate each; target 9 x the measured single stream
  slow   the third mirror at --slow-rate (5 MiB/s, 4 x slower); target the summed rate,
         6 x single + 3 x single x slow-rate/rate (2 x 3 x 20 + 3 x 5 = 135 MiB/s nominal)

The single stream is measured first on one mirror at --rate (ftpseg -n 1 and curl; the larger
median is the reference, so the target is the harder one). Then each scenario runs every tool
--reps times in an order rotated by one per repetition, each run after `rm; sync; sleep 1`, on
servers started fresh for that run (so their --stats-file counters are the run's own: 421
refusals, peak live connections, bytes sent per mirror). Every output is checked byte-exact
(sha256 against the served file). Wall time is around the tool's process; CPU is its own user +
system (os.wait4); "servers CPU" the three servers' own (/proc/PID/stat); "machine CPU" is
the whole machine's busy time over the run (/proc/stat: servers and write-back included).

Tools:
  ftpseg          ftpseg --no-config -q -n 9 --max-connections-per-host 3 -o OUT
                         --mirror URL2 --mirror URL3 URL1
  aria2c          aria2c -x 3 -s 9 -k 1M --file-allocation=falloc URL1 URL2 URL3
                  (--uri-selector=feedback, aria2c's default)
  aria2c-adaptive the same with --uri-selector=adaptive
  aria2c-1host    aria2c as above but all three URIs spelled ftp://127.0.0.1:PORT (not default)

aria2c counts -x (--max-connection-per-server) per host *name*, ignoring the port, so with three
ftp://127.0.0.1:PORT URIs it opens 3 connections in all (aria2c-1host shows it). The URIs are
therefore spelled with three names of the same address, ftp://127.0.0.1, ftp://127.1 and
ftp://2130706433 (inet_aton forms; every byte still goes over 127.0.0.1), for every tool.

  python3 benches/mirrors.py --bin /work/tgt-mirbench/release/ftpseg --reps 3 --json out.json

Prints markdown tables (single stream; per scenario: median s, MiB/s, % of target, CPU,
421 refusals, peak connections per mirror, share of bytes per mirror). Servers and temporary
files are removed at the end, whatever happens (--keep-dir keeps the folder, for traces).
--trace runs every ftpseg with FTPSEG_TRACE=1 and keeps its stderr in the work folder.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
HOSTS = ["127.0.0.1", "127.1", "2130706433"]  # one address, three names (see above)
DEFAULT_TOOLS = ["ftpseg", "aria2c", "aria2c-adaptive"]
ALL_TOOLS = DEFAULT_TOOLS + ["aria2c-1host"]


def log(msg):
    print(f"mirrors: {msg}", file=sys.stderr, flush=True)


def parse_rate(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # as ftpseg's own parser
    s = s.strip()
    if s[-1:].upper() in mult:
        return int(float(s[:-1]) * mult[s[-1:].upper()])
    return int(s)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default="target/release/ftpseg", help="the ftpseg binary")
    p.add_argument("--aria2c", default="aria2c")
    p.add_argument("--size-mib", type=int, default=512, help="served file size [512]")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool [3]")
    p.add_argument("--single-reps", type=int, default=None, help="single-stream reps [--reps]")
    p.add_argument("--rate", default="20M", help="per-connection rate of a mirror [20M]")
    p.add_argument("--slow-rate", default="5M", help="the slow mirror's rate [5M]")
    p.add_argument("--max-connections", type=int, default=3, help="per mirror [3]")
    p.add_argument("-n", type=int, default=9, help="total connections [9]")
    p.add_argument("--base-port", type=int, default=24101, help="mirrors on this port and the next two")
    p.add_argument("--scenarios", default="even,slow", help="comma list of even,slow")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS), help="comma list of " + ",".join(ALL_TOOLS))
    p.add_argument("--no-single", action="store_true", help="skip the single stream; use --single-mibs")
    p.add_argument("--single-mibs", type=float, help="single stream MiB/s to use as the reference")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run [600]")
    p.add_argument("--dir", help="work folder [a new one under /tmp]")
    p.add_argument("--keep-dir", action="store_true")
    p.add_argument("--trace", action="store_true", help="FTPSEG_TRACE=1 for ftpseg, stderr kept")
    p.add_argument("--json", help="write every run here")
    a = p.parse_args()
    a.rate_b, a.slow_b = parse_rate(a.rate), parse_rate(a.slow_rate)
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.tools = [t for t in a.tools.split(",") if t]
    for s in a.scenarios:
        if s not in ("even", "slow"):
            p.error(f"unknown scenario {s!r}")
    for t in a.tools:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r}")
    if a.no_single and not a.single_mibs:
        p.error("--no-single needs --single-mibs")
    a.bin = os.path.abspath(a.bin)
    return a


def busy_seconds():
    """CPU time the whole machine spent busy so far (as benches/peers.py)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Mirrors:
    """Three `ftpseg serve` processes; stop() returns each one's counters."""

    def __init__(self, a, work, rates):
        self.procs, self.stats = [], []
        LIVE.append(self)  # stopped on the way out even if a later one fails to start
        for i, rate in enumerate(rates):
            port = a.base_port + i
            stats = os.path.join(work, f"stats-{port}.json")
            if os.path.exists(stats):
                os.remove(stats)
            cmd = [a.bin, "serve", os.path.join(work, "root"), "--no-config", "--port", str(port),
                   "--rate", str(rate), "--max-connections", str(a.max_connections),
                   "--stats-file", stats]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            self.procs.append(proc)
            self.stats.append(stats)
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("ftp://"):
                raise RuntimeError(f"ftpseg serve on port {port} did not start: {line!r}")

    def cpu_seconds(self):
        """User + system CPU of the three servers so far (/proc/PID/stat)."""
        total = 0.0
        for proc in self.procs:
            try:
                with open(f"/proc/{proc.pid}/stat") as f:
                    v = f.read().rsplit(")", 1)[1].split()
                total += (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self):
        out = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, path in zip(self.procs, self.stats):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:
                with open(path) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                out.append(None)
        self.procs = []
        if self in LIVE:
            LIVE.remove(self)
        return out


LIVE = []  # Mirrors objects to stop on the way out


def urls(a, name, same_host=False):
    return [f"ftp://{'127.0.0.1' if same_host else HOSTS[i]}:{a.base_port + i}/{name}"
            for i in range(3)]


def command(a, tool, out, name, n=None, single=False):
    n = n or a.n
    if single:
        url = urls(a, name)[0]
        if tool == "ftpseg":
            return [a.bin, "--no-config", "-q", "-n", "1", "-o", out, url]
        if tool == "curl":
            return ["curl", "-sS", "-o", out, url]
        raise ValueError(tool)
    if tool == "ftpseg":
        u = urls(a, name)
        return [a.bin, "--no-config", "-q", "-n", str(n), "--max-connections-per-host",
                str(a.max_connections), "-o", out, "--mirror", u[1], "--mirror", u[2], u[0]]
    if tool.startswith("aria2c"):
        u = urls(a, name, same_host=tool == "aria2c-1host")
        cmd = [a.aria2c, f"--max-connection-per-server={a.max_connections}", f"--split={n}",
               "--min-split-size=1M", "--file-allocation=falloc", "-j", "1",
               "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
               "--allow-overwrite=true", "--auto-file-renaming=false",
               "-d", os.path.dirname(out), "-o", os.path.basename(out)]
        if tool == "aria2c-adaptive":
            cmd.append("--uri-selector=adaptive")
        return cmd + u
    raise ValueError(tool)


def clear(out):
    for path in (out, out + ".part", out + ".ftpseg", out + ".aria2"):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def run_once(a, cmd, env, errpath):
    """Wall, CPU (user + system of the process) and machine CPU of one run, or raises."""
    with open(errpath, "wb") as errf:
        busy0 = busy_seconds()
        start = time.monotonic()
        proc = subprocess.Popen(["nice", "-n", "5"] + cmd, stdout=subprocess.DEVNULL,
                                stderr=errf, env=env, start_new_session=True)
        deadline = start + a.timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"did not finish within {a.timeout:.0f} s (killed)")
            time.sleep(0.002)
        wall = time.monotonic() - start
        machine = busy_seconds() - busy0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        with open(errpath, errors="replace") as f:
            err = f.read().strip().splitlines()
        raise RuntimeError(f"exit code {code}: {err[-1] if err else '(no message)'}")
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "machine_cpu_s": round(machine, 3)}


def measure(a, work, tool, scenario, rep, rates, cmd, digest):
    out = os.path.join(work, "out", "file.bin")
    clear(out)
    subprocess.run(["sync"], check=True)
    time.sleep(1)
    env = dict(os.environ)
    errpath = os.path.join(work, f"stderr-{scenario}-{tool}-{rep}.txt")
    if a.trace and tool == "ftpseg":
        env["FTPSEG_TRACE"] = "1"
    m = Mirrors(a, work, rates)
    try:
        cpu0 = m.cpu_seconds()
        r = run_once(a, cmd, env, errpath)
        r["servers_cpu_s"] = round(m.cpu_seconds() - cpu0, 3)
    finally:
        stats = m.stop()
    if sha256(out) != digest:
        raise RuntimeError(f"{tool} ({scenario}, repetition {rep}): output differs from the source")
    clear(out)
    if not (a.trace and tool == "ftpseg"):
        os.remove(errpath)
    size = a.size_mib * MiB
    r.update({"tool": tool, "scenario": scenario, "rep": rep, "mibs": round(size / MiB / r["wall_s"], 2),
              "refused": [s["connections_refused"] if s else None for s in stats],
              "peak": [s["max_live_connections"] if s else None for s in stats],
              "logins": [s["connections_accepted"] if s else None for s in stats],
              "retrs": [s["retrs"] if s else None for s in stats],
              "bytes_sent": [s["bytes_sent"] if s else None for s in stats]})
    log(f"{scenario} {tool} #{rep}: {r['wall_s']:.2f} s, {r['mibs']:.1f} MiB/s, cpu {r['cpu_s']:.2f} s, "
        f"421 {r['refused']}, peak {r['peak']}, MiB sent {[round(b / MiB) for b in r['bytes_sent']]}")
    return r


def rotated(tools, rep):
    k = rep % len(tools)
    return tools[k:] + tools[:k]


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    a = parse_args()
    work = a.dir or tempfile.mkdtemp(prefix="ftpseg-mirrors-")
    os.makedirs(os.path.join(work, "root"), exist_ok=True)
    os.makedirs(os.path.join(work, "out"), exist_ok=True)
    name = f"mirrors-{a.size_mib}M.bin"
    src = os.path.join(work, "root", name)
    runs = []
    try:
        if not (os.path.exists(src) and os.path.getsize(src) == a.size_mib * MiB):
            log(f"writing {a.size_mib} MiB of random bytes to {src}")
            with open(src, "wb") as f:
                for _ in range(a.size_mib):
                    f.write(os.urandom(MiB))
        digest = sha256(src)
        r_even = [a.rate_b] * 3
        r_slow = [a.rate_b, a.rate_b, a.slow_b]
        # Single stream on mirror 1 (at --rate).
        single = {}
        if not a.no_single:
            stools = ["ftpseg", "curl"]
            for rep in range(a.single_reps or a.reps):
                for t in rotated(stools, rep):
                    out = os.path.join(work, "out", "file.bin")
                    runs.append(measure(a, work, t, "single", rep + 1, r_even,
                                        command(a, t, out, name, single=True), digest))
            for t in stools:
                single[t] = med([r for r in runs if r["tool"] == t and r["scenario"] == "single"], "mibs")
            ref = max(single.values())
        else:
            ref = a.single_mibs
        ratio = a.slow_b / a.rate_b
        targets = {"even": 3 * a.max_connections * ref,
                   "slow": 2 * a.max_connections * ref + a.max_connections * ref * ratio}
        nominal = {"even": 3 * a.max_connections * a.rate_b / MiB,
                   "slow": (2 * a.max_connections * a.rate_b + a.max_connections * a.slow_b) / MiB}
        for sc in a.scenarios:
            rates = r_even if sc == "even" else r_slow
            for rep in range(a.reps):
                for t in rotated(a.tools, rep):
                    out = os.path.join(work, "out", "file.bin")
                    runs.append(measure(a, work, t, sc, rep + 1, rates, command(a, t, out, name), digest))
        report(a, runs, single, ref, targets, nominal)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"size_mib": a.size_mib, "rate": a.rate_b, "slow_rate": a.slow_b,
                           "n": a.n, "max_connections": a.max_connections, "single_ref_mibs": ref,
                           "targets_mibs": targets, "nominal_mibs": nominal, "runs": runs}, f, indent=1)
    except Exception as e:
        log(f"failed: {e}")
        sys.exit(1)
    finally:
        for m in list(LIVE):
            m.stop()
        if a.keep_dir or a.trace:
            try:
                os.remove(src)
            except FileNotFoundError:
                pass
            log(f"kept {work} (the served file removed)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(a, runs, single, ref, targets, nominal):
    print(f"\nFile {a.size_mib} MiB; mirrors allow {a.max_connections} connections each, "
          f"{a.rate_b / MiB:g} MiB/s per connection (slow mirror {a.slow_b / MiB:g} MiB/s); "
          f"-n {a.n}; {a.reps} repetitions, medians.\n")
    if single:
        print("| single stream (mirror 1) | median s | MiB/s | CPU s |")
        print("|---|---:|---:|---:|")
        for t in single:
            rs = [r for r in runs if r["tool"] == t and r["scenario"] == "single"]
            print(f"| {t} -n 1 | {med(rs, 'wall_s'):.2f} | {med(rs, 'mibs'):.1f} | {med(rs, 'cpu_s'):.2f} |")
        print(f"\nReference single stream: {ref:.2f} MiB/s (the larger median).\n")
    print("| tool | scenario | median s (min-max) | MiB/s | % of target | CPU s | servers CPU s | machine CPU s "
          "| 421s (max of runs, per mirror) | peak conns per mirror | share of bytes sent |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    for sc in a.scenarios:
        for t in a.tools:
            rs = [r for r in runs if r["tool"] == t and r["scenario"] == sc]
            if not rs:
                continue
            mibs = a.size_mib / med(rs, "wall_s")
            pct = 100 * mibs / targets[sc]
            refused = "/".join(str(max(r["refused"][i] or 0 for r in rs)) for i in range(3))
            peak = "/".join(str(max(r["peak"][i] or 0 for r in rs)) for i in range(3))
            tot = [sum(r["bytes_sent"][i] or 0 for r in rs) for i in range(3)]
            share = "/".join(f"{100 * x / max(1, sum(tot)):.0f}%" for x in tot)
            walls = [r["wall_s"] for r in rs]
            print(f"| {t} | {sc} | {med(rs, 'wall_s'):.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
                  f"{mibs:.1f} | {pct:.1f} % of {targets[sc]:.1f} | {med(rs, 'cpu_s'):.2f} | "
                  f"{med(rs, 'servers_cpu_s'):.2f} | {med(rs, 'machine_cpu_s'):.2f} | {refused} | {peak} | {share} |")
    print(f"\nTargets: even = 9 x {ref:.2f}; slow = 6 x {ref:.2f} + 3 x {ref:.2f} x "
          f"{a.slow_b / a.rate_b:g} (nominal {nominal['even']:.0f} and {nominal['slow']:.0f} MiB/s).")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
