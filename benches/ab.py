#!/usr/bin/env python3
"""Rotated A/B runs of shell commands that write one file: medians, ranges, CPU, "on disk".

The small series in docs/benchmarks.md (two builds, or ftpseg against a peer, on one server)
come from this: each repetition runs every command once, in an order rotated by one per
repetition, each after removing the output and `sync; sleep 1`, so no command always follows
the same one and none inherits another's dirty pages. Wall time is measured around the command,
CPU time is the command's own (user + system of the shell and what it waited for), peak RSS the
largest resident set among them, and with
--on-disk also the time until a `sync` after it returns (the tool's file on disk) and the whole
machine's busy CPU time until then (the server's share, and the write-back the kernel's flusher
threads do for a tool that never syncs, which the tool's own CPU time does not show).

  python3 benches/ab.py --reps 6 --out /tmp/ab.bin \\
      'ftpseg=target/release/ftpseg -q -n 8 -o {out} ftp://127.0.0.1:12101/peers-1G.bin' \\
      "lftp=lftp -c 'set xfer:clobber on; pget -n 8 ftp://127.0.0.1:12101/peers-1G.bin -o {out}'"

`NAME=COMMAND`; `{out}` in a command is replaced by --out. Environment switches go in front of
the command (`big=FTPSEG_X=1 target/release/ftpseg ...`). A command that fails or outlives
--timeout is reported and stops the series (exit 1): a number from a failed run is no number.
Prints a markdown table; --json FILE writes every run as well.
"""

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from peers import busy_seconds  # the same "machine CPU" as the peers harness


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    p.add_argument("--reps", type=int, default=5, help="repetitions of every command [5]")
    p.add_argument("--out", default="/tmp/ftpseg-ab.bin", help="the file the commands write")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run [600]")
    p.add_argument("--pause", type=float, default=1.0, help="seconds after the sync [1]")
    p.add_argument("--on-disk", action="store_true", help="also time a sync after each run")
    p.add_argument("--json", help="write every run here")
    a = p.parse_args()
    if not 1 <= a.reps <= 100:
        p.error("--reps must be 1-100")
    cmds = []
    for c in a.commands:
        name, sep, cmd = c.partition("=")
        if not sep or not name or not cmd.strip() or " " in name:
            p.error(f"{c!r}: expected NAME=COMMAND (a name without spaces, then the command)")
        if name in (n for n, _ in cmds):
            p.error(f"{name!r} is given twice")
        cmds.append((name, cmd.replace("{out}", shlex.quote(a.out))))
    return a, cmds


def clear(out):
    for path in (out, out + ".part", out + ".ftpseg", out + ".aria2", out + ".st"):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def run_once(cmd, timeout, on_disk):
    """Wall, CPU (user + system) and on-disk seconds of one run, or an error string."""
    start = time.monotonic()
    busy0 = busy_seconds()
    errf = tempfile.TemporaryFile()
    proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=errf,
                            start_new_session=True)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            errf.close()
            return None, f"did not finish within {timeout:.0f} s (killed)"
        time.sleep(0.005)
    wall = time.monotonic() - start
    errf.seek(0)
    err = errf.read().decode(errors="replace").strip()
    errf.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return None, f"exit code {code}: {err.splitlines()[-1] if err else '(no message)'}"
    disk = machine = None
    if on_disk:
        subprocess.run(["sync"], check=True)
        disk = round(time.monotonic() - start, 3)
        machine = round(busy_seconds() - busy0, 3)
    # ru_maxrss of the shell: the largest of it and every process it waited for (KiB).
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "rss_mib": round(usage.ru_maxrss / 1024, 1),
            "on_disk_s": disk, "machine_cpu_s": machine}, None


def main():
    a, cmds = parse_args()
    runs = []
    for rep in range(a.reps):
        order = cmds[rep % len(cmds):] + cmds[:rep % len(cmds)]
        for name, cmd in order:
            clear(a.out)
            subprocess.run(["sync"], check=True)
            time.sleep(a.pause)
            result, error = run_once(cmd, a.timeout, a.on_disk)
            if error:
                clear(a.out)
                print(f"ab: {name} (repetition {rep + 1}): {error}; command: {cmd}", file=sys.stderr)
                sys.exit(1)
            result.update({"name": name, "rep": rep + 1})
            runs.append(result)
            print(f"ab: {rep + 1}/{a.reps} {name}: {result['wall_s']:.2f} s, "
                  f"{result['cpu_s']:.2f} CPU-s", file=sys.stderr)
    clear(a.out)

    def med(xs):
        return statistics.median(xs) if xs else None

    print("| command | runs | wall median s | wall range s | CPU median s | peak RSS MiB |"
          + (" on disk median s | machine CPU median s |" if a.on_disk else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if a.on_disk else ""))
    summary = {}
    for name, cmd in cmds:
        mine = [r for r in runs if r["name"] == name]
        walls = [r["wall_s"] for r in mine]
        s = {"command": cmd, "runs": len(mine), "wall_median_s": med(walls),
             "wall_min_s": min(walls), "wall_max_s": max(walls),
             "cpu_median_s": med([r["cpu_s"] for r in mine]),
             "rss_max_mib": max(r["rss_mib"] for r in mine)}
        line = (f"| {name} | {s['runs']} | {s['wall_median_s']:.2f} | "
                f"{s['wall_min_s']:.2f}-{s['wall_max_s']:.2f} | {s['cpu_median_s']:.2f} | "
                f"{s['rss_max_mib']:.0f} |")
        if a.on_disk:
            s["on_disk_median_s"] = med([r["on_disk_s"] for r in mine])
            s["machine_cpu_median_s"] = med([r["machine_cpu_s"] for r in mine])
            line += f" {s['on_disk_median_s']:.2f} | {s['machine_cpu_median_s']:.2f} |"
        summary[name] = s
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"reps": a.reps, "out": a.out, "summary": summary, "runs": runs}, f,
                      indent=1)


if __name__ == "__main__":
    main()
