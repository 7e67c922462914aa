#!/usr/bin/env python3
"""ftpseg side by side with lftp `pget`, aria2c, axel and curl on real FTP servers (issue 4).

Run through `cargo bench --bench peers` (benches/peers.rs builds ftpseg and starts this script)
or directly: `python3 benches/peers.py` (as root). See docs/benchmarks.md, "Peers".

Every run is a real process under `/usr/bin/time -f '%e %U %S %M'` (wall, user+sys CPU, peak
RSS), checked byte-exact with `cmp` against the served file. Server-side numbers (bytes sent,
refused logins) come from the server's own logs (vsftpd/proftpd xferlog and vsftpd.log) or from
`ftpseg serve --stats-file`. Tools alternate within each repetition (the order rotates).

Environment (all optional):
  FTPSEG_PEERS_BIN        ftpseg binary to measure [$CARGO_TARGET_DIR/release/ftpseg]
  FTPSEG_PEERS_SCENARIOS  comma list of even,uneven,stall,limit,resume,loopback,overshoot,
                          latency [all]
  FTPSEG_PEERS_TOOLS      comma list of ftpseg,lftp,aria2c,axel,curl [all]
  FTPSEG_PEERS_IO         comma list of mmap,splice,pwrite, or none: in the even and loopback
                          scenarios ftpseg also runs once per store, as ftpseg-mmap, ... (the
                          same binary with `--io X`) beside plain ftpseg (`--io auto`)
                          [mmap,splice,pwrite]
  FTPSEG_PEERS_REPS       repetitions [3]
  FTPSEG_PEERS_N1_REPS    repetitions of the even-caps N=1 runs (51 s each at 1 GiB) [1]
  FTPSEG_PEERS_SIZE       file size for every scenario (quick runs: 256M) [1G]
  FTPSEG_PEERS_BIG_SIZE   second size of the loopback scenario; 0 = none [4G, or 0 with SIZE]
  FTPSEG_PEERS_EVEN_NS    connection counts of the even-caps scenario [1,4,8,16]
  FTPSEG_PEERS_TIMEOUT    upper bound of any run's time limit, seconds [300]
  FTPSEG_PEERS_OUT        folder for peers.md and peers.json [docs/bench]
  FTPSEG_PEERS_KEEP_SERVERS=1  leave the FTP servers running at the end
  FTPSEG_SERVERS_DIR, FTPSEG_SERVERS_BASE_PORT  our own server instance [/tmp/ftpseg-bench, 12100]
"""

import atexit
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
GIB = 1 << 30
RATE = 20 * MIB  # per-connection cap of the -capped/-limited instances
MAX_PER_IP = 3
STALL_TIMEOUT = 30  # every tool's idle/stall timeout, seconds (ftpseg's default --stall-timeout)
ALL_SCENARIOS = ["even", "uneven", "stall", "limit", "resume", "loopback", "overshoot",
                 "latency"]
ALL_TOOLS = ["ftpseg", "lftp", "aria2c", "axel", "curl"]
ALL_IOS = ["mmap", "splice", "pwrite"]  # ftpseg --io; plain ftpseg is --io auto
PER_IO_SCENARIOS = ["even", "loopback"]
UNEVEN_SEED = 4
UNEVEN_N = 8
LATENCY_RTT_MS = 100
LATENCY_N = 8


def parse_size(s):
    s = s.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def human(size):
    for unit, m in (("G", GIB), ("M", MIB)):
        if size % m == 0 and size >= m:
            return f"{size // m}{unit}"
    return str(size)


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    return [x.strip() for x in v.split(",") if x.strip()] if v else list(default)


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Settings

SERVERS_DIR = os.environ.get("FTPSEG_SERVERS_DIR", "/tmp/ftpseg-bench")
BASE_PORT = int(os.environ.get("FTPSEG_SERVERS_BASE_PORT", "12100"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.abspath(os.environ.get("FTPSEG_PEERS_BIN") or os.path.join(TARGET, "release/ftpseg"))
SCENARIOS = env_list("FTPSEG_PEERS_SCENARIOS", ALL_SCENARIOS)
TOOLS = env_list("FTPSEG_PEERS_TOOLS", ALL_TOOLS)
IOS = [x for x in env_list("FTPSEG_PEERS_IO", ALL_IOS) if x != "none"]
REPS = max(1, int(os.environ.get("FTPSEG_PEERS_REPS", "3")))
N1_REPS = max(1, int(os.environ.get("FTPSEG_PEERS_N1_REPS", "1")))
SIZE_OVERRIDE = os.environ.get("FTPSEG_PEERS_SIZE")
SIZE = parse_size(SIZE_OVERRIDE) if SIZE_OVERRIDE else GIB
BIG_SIZE = parse_size(os.environ.get("FTPSEG_PEERS_BIG_SIZE", "0" if SIZE_OVERRIDE else "4G"))
LATENCY_SIZE = SIZE // 4  # the long-path scenario: start and end costs matter against 1.6 s
EVEN_NS = [int(x) for x in env_list("FTPSEG_PEERS_EVEN_NS", ["1", "4", "8", "16"])]
MAX_TIMEOUT = float(os.environ.get("FTPSEG_PEERS_TIMEOUT", "300"))
OUT_DIR = os.path.abspath(os.environ.get("FTPSEG_PEERS_OUT", os.path.join(ROOT, "docs/bench")))
KEEP_SERVERS = os.environ.get("FTPSEG_PEERS_KEEP_SERVERS") == "1"

for s in SCENARIOS:
    if s not in ALL_SCENARIOS:
        sys.exit(f"unknown scenario {s!r}; known: {','.join(ALL_SCENARIOS)}")
for t in TOOLS:
    if t not in ALL_TOOLS:
        sys.exit(f"unknown tool {t!r}; known: {','.join(ALL_TOOLS)}")
for x in IOS:
    if x not in ALL_IOS:
        sys.exit(f"unknown store {x!r} in FTPSEG_PEERS_IO; known: {','.join(ALL_IOS)} or none")


def time_limit(ideal):
    """A run is killed after 8 x its ideal time, at least 90 s, at most FTPSEG_PEERS_TIMEOUT."""
    return min(MAX_TIMEOUT, max(90.0, 8.0 * ideal))


# ---------------------------------------------------------------------------------------------
# Cleanup: every process group we start, frozen server processes, our `ftpseg serve`s.

LIVE_GROUPS = set()
FROZEN = set()
WORK = None
CLEANED = False


def cleanup():
    global CLEANED
    if CLEANED:
        return
    CLEANED = True
    for pid in list(FROZEN):
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    for pg in list(LIVE_GROUPS):
        try:
            os.killpg(pg, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if WORK and os.path.isdir(WORK):
        shutil.rmtree(WORK, ignore_errors=True)
    if not KEEP_SERVERS and SERVERS_STARTED:
        servers_script("stop")


def on_signal(signum, _frame):
    log(f"signal {signum}: cleaning up")
    cleanup()
    sys.exit(128 + signum)


SERVERS_STARTED = False
atexit.register(cleanup)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)


# ---------------------------------------------------------------------------------------------
# Setup: peer tools, servers

def ensure_tools():
    pkgs = {"lftp": "lftp", "aria2c": "aria2", "axel": "axel", "curl": "curl", "/usr/bin/time": "time"}
    missing = [p for b, p in pkgs.items() if not shutil.which(b)]
    if missing:
        log(f"apt-get install -y {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300"] + missing
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def servers_script(*args):
    env = dict(os.environ, FTPSEG_SERVERS_DIR=SERVERS_DIR, FTPSEG_SERVERS_BASE_PORT=str(BASE_PORT))
    return subprocess.run([os.path.join(ROOT, "scripts/ftp-servers.sh"), *args], env=env, check=True)


def greets(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(3)
            ok = s.recv(4).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def served_name(size):
    return f"peers-{human(size)}.bin"


def ensure_servers(sizes):
    """Our own instance of scripts/ftp-servers.sh (never the default one other tests use)."""
    global SERVERS_STARTED
    state = os.path.join(SERVERS_DIR, "servers.json")
    extra = sorted(set(s for s in sizes if s))
    ok = False
    if os.path.exists(state):
        st = json.load(open(state))
        names = {f["path"]: f["size"] for f in st["files"]}
        ok = (st["rate"] == RATE and st["max_per_ip"] == MAX_PER_IP
              and all(names.get(served_name(s)) == s for s in extra)
              and all(greets(srv["port"]) for srv in st["servers"]
                      if srv["name"] in ("vsftpd", "vsftpd-capped", "proftpd")))
    if not ok:
        args = ["start", "--rate", str(RATE), "--max-per-ip", str(MAX_PER_IP)]
        for s in extra:
            args += ["--file", served_name(s), str(s)]
        log("starting our FTP servers: FTPSEG_SERVERS_DIR=%s FTPSEG_SERVERS_BASE_PORT=%d "
            "scripts/ftp-servers.sh %s" % (SERVERS_DIR, BASE_PORT, " ".join(args)))
        homes = user_homes()
        try:
            servers_script(*args)
        finally:
            restore_homes(homes)
    SERVERS_STARTED = True
    st = json.load(open(state))
    return st, {srv["name"]: srv for srv in st["servers"]}


def user_homes():
    homes = {}
    for user in ("ftp", "ftpseg"):
        out = subprocess.run(["getent", "passwd", user], capture_output=True, text=True).stdout
        homes[user] = out.split(":")[5] if out.count(":") >= 6 else None
    return homes


def restore_homes(before):
    """ftp-servers.sh points the test users' home (pure-ftpd's anonymous root) at *our* served
    folder. Other instances (the default /tmp/ftpseg-servers that other tests use) expect theirs;
    we use only vsftpd, proftpd and `ftpseg serve`, whose roots are in their own configs, so we
    put the homes back as they were."""
    for user, home in before.items():
        if home and home != user_homes().get(user):
            subprocess.run(["usermod", "--home", home, user], check=False,
                           stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Server-side observation

def proc_children():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        kids.setdefault(int(fields[1]), []).append((int(d), int(fields[19])))
    return kids


def descendants(root):
    kids = proc_children()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c, start in kids.get(p, []):
            out.append((c, start, not kids.get(c)))
            todo.append(c)
    return out  # (pid, start ticks, is_leaf)


def rchar(pid):
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_sessions_gone(srv, limit=8.0):
    """Wait until the server's per-connection processes have ended (they log on the way out)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not [p for p, _, _ in descendants(srv["pid"]) if p not in FROZEN]:
            return True
        time.sleep(0.1)
    return False


class LogMark:
    """Lines a server appended to its transfer log and main log during one run."""

    def __init__(self, srv):
        self.srv = srv
        self.xfer = srv["transfer_log"]
        self.main = srv["log"] if srv["log"] != srv["transfer_log"] else None
        self.xpos = os.path.getsize(self.xfer) if os.path.exists(self.xfer) else 0
        self.mpos = os.path.getsize(self.main) if self.main and os.path.exists(self.main) else 0

    @staticmethod
    def _new(path, pos):
        if not path or not os.path.exists(path):
            return []
        with open(path, "rb") as f:
            f.seek(pos)
            return f.read().decode("utf-8", "replace").splitlines()

    def read(self, remote):
        wait_sessions_gone(self.srv)
        xfer = [l.split() for l in self._new(self.xfer, self.xpos)]
        # xferlog: day mon dd hh:mm:ss yyyy secs host BYTES /path b _ o a user svc 0 * c|i
        # vsftpd logs the path as the client sees it, proftpd the full local path.
        lines = [f for f in xfer if len(f) > 8 and f[8].endswith("/" + remote)]
        main = self._new(self.main, self.mpos)
        return {
            "bytes_sent": sum(int(f[7]) for f in lines),
            "transfers": len(lines),
            "incomplete_transfers": sum(1 for f in lines if f[-1] == "i"),
            "refused_logins": sum(1 for l in main if "too many sessions" in l.lower()
                                  or "too many connections" in l.lower()),
            "logins": sum(1 for l in main if "OK LOGIN" in l),
        }


# ---------------------------------------------------------------------------------------------
# Tools and their commands

def tool_versions():
    def first(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    def deb(pkg):
        return first(["dpkg-query", "-W", "-f=${Version}", pkg])

    v = {
        "ftpseg": first([BIN, "--version"]),
        "lftp": first(["lftp", "--version"]),
        "aria2c": first(["aria2c", "--version"]),
        "axel": first(["axel", "--version"]),
        "curl": first(["curl", "--version"]),
        "debian_packages": {p: deb(p) for p in ("lftp", "aria2", "axel", "curl")},
    }
    for srv in ("vsftpd", "proftpd-core"):
        debs = [d for d in os.listdir(os.path.join(SERVERS_DIR, "debs")) if d.startswith(srv + "_")]
        v[srv] = debs[0] if debs else None
    return v


def store_of(tool):
    """The `--io` store of a per-store ftpseg row (ftpseg-mmap -> mmap); None for the others."""
    return tool[len("ftpseg-"):] if tool.startswith("ftpseg-") else None


def tool_command(tool, n, url, out, resume=False, stall_tuned=False):
    """The exact command line of each tool (see SETTINGS below for why)."""
    if tool == "ftpseg":
        return [BIN, "-q", "-n", str(n), "-o", out, url]
    if store_of(tool):
        return [BIN, "-q", "-n", str(n), "--io", store_of(tool), "-o", out, url]
    if tool == "lftp":
        settings = [f"set net:timeout {STALL_TIMEOUT}", "set net:max-retries 0",
                    "set pget:save-status 1s", "set xfer:clobber on", "set cmd:fail-exit yes"]
        if stall_tuned:
            settings.append("set net:reconnect-interval-base 1")
        # lftp 4.9: `pget [OPTS] rfile [-o lfile]`; -o must follow the remote file.
        pget = f"pget -n {n}{' -c' if resume else ''} {shlex.quote(url)} -o {shlex.quote(out)}"
        return ["lftp", "-c", "; ".join(settings + [pget])]
    if tool == "aria2c":
        cmd = ["aria2c", f"-x{n}", f"-s{n}", "-k1M", "--file-allocation=falloc",
               f"--timeout={STALL_TIMEOUT}", "--connect-timeout=15", "--auto-save-interval=1",
               "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
               "-d", os.path.dirname(out), "-o", os.path.basename(out)]
        if resume:
            cmd.append("-c")
        return cmd + [url]
    if tool == "axel":
        # reconnect_delay / save_state_interval exist only in axelrc: HOME points at one.
        return ["axel", "-q", "-n", str(n), "-T", str(STALL_TIMEOUT), "-o", out, url]
    if tool == "curl":
        return ["curl", "-sS"] + (["-C", "-"] if resume else []) + ["-o", out, url]
    raise ValueError(tool)


SETTINGS = {
    "ftpseg": "defaults (`--stall-timeout 30`, `--straggler-timeout 3`, `--checkpoint-interval 1`,"
              " `--min-range 1M`); `-q` hides the progress bar",
    "lftp": "`net:timeout 30` (default 300 s) = ftpseg's stall timeout; `net:max-retries 0` "
            "(unlimited, default 1000); `pget:save-status 1s` (default 10 s; ftpseg checkpoints "
            "every 1 s) so that a crash loses no more than ftpseg's; `cmd:fail-exit` for an honest "
            "exit code. Stall scenario only: `net:reconnect-interval-base 1` (default 30 s) so the "
            "reconnect after the timeout is immediate",
    "aria2c": "`-x N -s N` (defaults 1 and 5), `-k 1M` (default 20M; 1M is the smallest, so free "
              "connections can split ranges as late as possible), `--file-allocation=falloc`, "
              "`--timeout=30` (default 60), `--connect-timeout=15`, `--auto-save-interval=1` "
              "(default 60 s); retries are immediate for FTP",
    "axel": "`-n N`, `-T 30` (default 45 s); `~/.axelrc` (HOME set per run): `save_state_interval = 1` "
            "(default 10 s); stall scenario only: `reconnect_delay = 1` (default 20 s)",
    "curl": "single stream, `-C -` to resume; the N = 1 and physical reference",
    "ftpseg-<store>": "the even and loopback scenarios only: ftpseg's defaults plus `--io "
                      "<store>` (mmap, splice or pwrite; FTPSEG_PEERS_IO); plain ftpseg is "
                      "`--io auto`, which picks one of them (docs/architecture.md, \"Stores\")",
}


def tool_env(tool, stall_tuned=False):
    env = dict(os.environ)
    env.pop("FTPSEG_PASSWORD", None)
    if tool == "axel":
        home = os.path.join(WORK, "axelhome-stall" if stall_tuned else "axelhome")
        os.makedirs(home, exist_ok=True)
        with open(os.path.join(home, ".axelrc"), "w") as f:
            f.write("save_state_interval = 1\n")
            if stall_tuned:
                f.write("reconnect_delay = 1\n")
        env["HOME"] = home
    if tool == "lftp":
        # No user rc file may change the settings above.
        home = os.path.join(WORK, "lftphome")
        os.makedirs(home, exist_ok=True)
        env["HOME"] = home
        env["LFTP_HOME"] = home
    return env


def clean_output(out):
    d, b = os.path.split(out)
    for name in os.listdir(d):
        if name == b or name.startswith(b + "."):
            p = os.path.join(d, name)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)


def busy_seconds():
    """CPU time the whole machine spent busy so far (user, nice, system, irq, softirq of
    /proc/stat's "cpu" line), in seconds."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def run_measured(cmd, env, limit, hook=None, tag="run", machine=False):
    """Runs cmd under /usr/bin/time in its own process group. hook(elapsed, pgid) is called
    about every 20 ms and may return "kill" (end the run now: the crash scenario).
    Returns wall (s, our clock), cpu (s), rss (KiB), rc, timed_out, killed.

    machine: also the machine-wide busy CPU from the start until the tool's output is on disk
    (`sync` after the run; a `sync` before it, not counted, so nothing earlier is written back
    in the window). Per-process CPU misses work the kernel does for a tool in other threads:
    the flusher writing back the dirty pages of a tool that never syncs is charged to nobody's
    process, while a tool that starts its own write-back is charged for it. The server's CPU
    (the same for every tool) and the harness's 20 ms polling are included."""
    if machine:
        subprocess.run(["sync"], check=False)
    busy0 = busy_seconds()
    timef = os.path.join(WORK, "time.txt")
    if os.path.exists(timef):
        os.unlink(timef)
    logf = open(os.path.join(WORK, f"{tag}.log"), "wb")
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", timef] + cmd
    load = float(open("/proc/loadavg").read().split()[0])
    t0 = time.monotonic()
    p = subprocess.Popen(full, env=env, stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=WORK)
    LIVE_GROUPS.add(p.pid)
    timed_out = killed = False
    try:
        while p.poll() is None:
            el = time.monotonic() - t0
            if el > limit:
                timed_out = True
                os.killpg(p.pid, signal.SIGKILL)
                break
            if hook and hook(el, p.pid) == "kill":
                killed = True
                os.killpg(p.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        p.wait()
        wall = time.monotonic() - t0
        durable = None
        if machine:
            subprocess.run(["sync"], check=False)
            durable = time.monotonic() - t0
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything the tool left behind
        except ProcessLookupError:
            pass
        LIVE_GROUPS.discard(p.pid)
        logf.close()
    cpu = rss = None
    try:
        f = open(timef).read().split()
        # "Command exited with non-zero status N" may precede the numbers.
        cpu, rss = float(f[-3]) + float(f[-2]), int(f[-1])
    except (OSError, ValueError, IndexError):
        pass
    machine_cpu = round(busy_seconds() - busy0, 2) if machine else None
    tail = open(os.path.join(WORK, f"{tag}.log"), "rb").read()[-600:].decode("utf-8", "replace")
    return {"wall_s": round(wall, 3), "cpu_s": cpu, "machine_cpu_s": machine_cpu,
            "durable_s": None if durable is None else round(durable, 3),
            "max_rss_kib": rss,
            "rc": None if (timed_out or killed) else p.returncode,
            "timed_out": timed_out, "killed": killed, "load1_at_start": load,
            "output_tail": tail.strip()[-400:]}


def same_bytes(out, src):
    if not os.path.exists(out) or os.path.getsize(out) != os.path.getsize(src):
        return False
    return subprocess.run(["cmp", "-s", out, src]).returncode == 0


RUNS = []


PROGRESS = None  # (path, meta): every run is saved as it ends, so a crash loses nothing


def record(run):
    RUNS.append(run)
    if PROGRESS:
        with open(PROGRESS[0] + ".tmp", "w") as f:
            json.dump({"meta": PROGRESS[1], "summaries": None, "runs": RUNS}, f, indent=1)
        os.replace(PROGRESS[0] + ".tmp", PROGRESS[0])
    bits = [f"{run['scenario']}", run.get("case", ""), f"{run['tool']}", f"N={run['n']}",
            f"{run['wall_s']:.2f}s"]
    if run.get("timed_out"):
        bits.append("TIMEOUT")
    if run.get("rc") not in (0, None):
        bits.append(f"rc={run['rc']}")
    if run.get("ok") is False:
        bits.append("BYTES DIFFER" if run.get("rc") == 0 else "FAILED")
    for k in ("bytes_sent", "refused_logins", "twice_bytes"):
        if run.get(k) is not None:
            bits.append(f"{k}={run[k]}")
    if run.get("cpu_s") is not None:
        bits.append(f"cpu={run['cpu_s']:.2f}s rss={run['max_rss_kib'] // 1024}MiB")
    log(" ".join(str(b) for b in bits if b != ""))


def one_run(scenario, tool, n, url, src, size, srv=None, case="", ideal=None, hook=None,
            stall_tuned=False, extra=None, after_run=None, machine=False):
    out = os.path.join(WORK, "dl", f"{scenario}-{tool}.bin")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    clean_output(out)
    cmd = tool_command(tool, n, url, out, stall_tuned=stall_tuned)
    mark = LogMark(srv) if srv else None
    limit = time_limit(ideal or 10)
    r = run_measured(cmd, tool_env(tool, stall_tuned), limit, hook, tag=f"{scenario}-{tool}",
                     machine=machine)
    if after_run:
        after_run()
    r.update({"scenario": scenario, "case": case, "tool": tool, "n": n, "size": size,
              "command": shlex.join(cmd), "time_limit_s": limit, "ideal_s": ideal})
    if extra:
        r.update(extra() if callable(extra) else extra)
    if mark:
        r.update(mark.read(os.path.basename(src)))
    r["ok"] = (r["rc"] == 0) and same_bytes(out, src)
    clean_output(out)
    record(r)
    return r


def rotated(tools, rep):
    k = rep % len(tools) if tools else 0
    return tools[k:] + tools[:k]


def peer_tools(n, per_io=False):
    """curl has one connection: it runs only where N = 1. per_io: ftpseg also once per store
    of FTPSEG_PEERS_IO (ftpseg-mmap, ...), right after plain ftpseg (`--io auto`)."""
    out = []
    for t in TOOLS:
        if t == "curl" and n != 1:
            continue
        out.append(t)
        if t == "ftpseg" and per_io:
            out += [f"ftpseg-{x}" for x in IOS]
    return out


# ---------------------------------------------------------------------------------------------
# Scenarios

def url_of(srv, name):
    return f"ftp://127.0.0.1:{srv['port']}/{name}"


def sc_even(S, served):
    srv = S["vsftpd-capped"]
    src = os.path.join(served, served_name(SIZE))
    for n in EVEN_NS:
        ideal = SIZE / (n * RATE)
        for rep in range(N1_REPS if n == 1 else REPS):
            for tool in rotated(peer_tools(n, per_io=True), rep):
                # machine: also the time until the file is on disk (peers never sync).
                one_run("even", tool, n, url_of(srv, served_name(SIZE)), src, SIZE, srv,
                        ideal=ideal, machine=True)


def uneven_rates():
    rng = random.Random(UNEVEN_SEED)
    return [int(round(rng.uniform(2, 40), 1) * MIB) for _ in range(UNEVEN_N)]


def run_on_serve(scenario, tool, n, folder, name, size, ideal, serve_args, extra=None):
    """One run of `tool` against a fresh `ftpseg serve FOLDER SERVE_ARGS...` (stopped after the
    run; its counters land in the run's record)."""
    stats = os.path.join(WORK, "serve-stats.json")
    if os.path.exists(stats):
        os.unlink(stats)
    port = free_port()
    scmd = [BIN, "serve", folder, "--port", str(port), "--stats-file", stats, *serve_args]
    serve_log = open(os.path.join(WORK, "serve.log"), "ab")
    sp = subprocess.Popen(scmd, stdout=subprocess.PIPE, stderr=serve_log,
                          start_new_session=True)
    serve_log.close()
    LIVE_GROUPS.add(sp.pid)
    try:
        line = sp.stdout.readline().decode().strip()  # the URL, once it listens
        if not line.startswith("ftp://"):
            sp.wait(5)
            raise RuntimeError(f"ftpseg serve did not start (exit {sp.returncode}): "
                               + open(os.path.join(WORK, "serve.log")).read()[-500:])
        r = one_run(scenario, tool, n, f"ftp://127.0.0.1:{port}/{name}",
                    os.path.join(folder, name), size, ideal=ideal,
                    extra={**(extra or {}), "serve_command": shlex.join(scmd)})
    finally:
        sp.send_signal(signal.SIGTERM)
        try:
            sp.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(sp.pid, signal.SIGKILL)
            sp.wait()
        LIVE_GROUPS.discard(sp.pid)
    try:
        st = json.load(open(stats))
        r["serve_stats"] = st
        r["bytes_sent"] = st.get("bytes_sent")
        r["refused_logins"] = st.get("connections_refused")
    except (OSError, ValueError):
        r["serve_stats"] = None
    return r


def sc_uneven(S, served):
    rates = uneven_rates()
    ideal = SIZE / sum(rates)
    for rep in range(REPS):
        for tool in rotated(peer_tools(UNEVEN_N), rep):
            # A fresh `ftpseg serve` per run: the k-th control connection of *this* tool gets
            # rates[k % 8], so any 8 consecutive connections together get the sum of the rates.
            run_on_serve("uneven", tool, UNEVEN_N, served, served_name(SIZE), SIZE, ideal,
                         ["--session-rates", ",".join(str(r) for r in rates)],
                         extra={"session_rates": rates})


def sc_latency(S, served):
    """A long path: every control round trip takes LATENCY_RTT_MS (`ftpseg serve --rtt-ms`),
    8 connections at the cap each. What separates the tools is how many round trips pass
    before all connections read data, and after the last byte."""
    size = LATENCY_SIZE
    folder = os.path.join(WORK, "latency")
    os.makedirs(folder, exist_ok=True)
    name = served_name(size)
    path = os.path.join(folder, name)
    if not os.path.exists(path) or os.path.getsize(path) != size:
        with open(os.path.join(served, served_name(SIZE)), "rb") as src, open(path, "wb") as dst:
            left = size
            while left:
                chunk = src.read(min(left, 8 * MIB))
                if not chunk:
                    raise RuntimeError(f"{served_name(SIZE)} is shorter than {size} bytes")
                dst.write(chunk)
                left -= len(chunk)
    n = LATENCY_N
    ideal = size / (n * RATE)
    for rep in range(REPS):
        for tool in rotated(peer_tools(n), rep):
            run_on_serve("latency", tool, n, folder, name, size, ideal,
                         ["--rate", str(RATE), "--rtt-ms", str(LATENCY_RTT_MS)],
                         extra={"rtt_ms": LATENCY_RTT_MS})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Freezer:
    """At `at` seconds, SIGSTOP the newest vsftpd session process that is sending file data
    (its rchar grows), and keep it stopped until the run ends (then SIGKILL)."""

    def __init__(self, srv, at):
        self.srv, self.at = srv, at
        self.pid = None
        self.frozen_at = None
        self.sample = None
        self.sampled_at = None

    def __call__(self, el, _pg):
        # The first sample is taken 0.2 s early, so that the freeze lands at `at`.
        if self.pid or el < self.at - 0.2:
            return None
        if self.sampled_at is not None and el - self.sampled_at < 0.2:
            return None
        leaves = [(p, st) for p, st, leaf in descendants(self.srv["pid"]) if leaf]
        now = {p: rchar(p) for p, _ in leaves}
        if self.sample is None:
            self.sample, self.sampled_at = now, el
            return None
        moving = [(st, p) for p, st in leaves
                  if now.get(p) is not None and self.sample.get(p) is not None
                  and now[p] > self.sample[p]]
        self.sample, self.sampled_at = now, el
        if moving:
            _, pid = max(moving)
            os.kill(pid, signal.SIGSTOP)
            FROZEN.add(pid)
            self.pid, self.frozen_at = pid, el
        return None

    def release(self):
        if self.pid and self.pid in FROZEN:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
            FROZEN.discard(self.pid)


def sc_stall(S, served):
    srv = S["vsftpd-capped"]
    n = 8
    ideal = SIZE / (n * RATE)
    at = 1.5 * ideal / 6.4  # 1.5 s into the 1 GiB download (6.4 s ideal); scaled for others
    src = os.path.join(served, served_name(SIZE))
    url = url_of(srv, served_name(SIZE))
    for rep in range(REPS):
        for tool in rotated(peer_tools(n), rep):
            one_run("stall", tool, n, url, src, SIZE, srv, case="no stall", ideal=ideal,
                    stall_tuned=True)
            fr = Freezer(srv, at)
            try:
                one_run("stall", tool, n, url, src, SIZE, srv, case="one session frozen",
                        ideal=ideal, hook=fr, stall_tuned=True, after_run=fr.release,
                        extra=lambda: {"frozen_pid": fr.pid, "frozen_at_s": fr.frozen_at})
            finally:
                fr.release()


def sc_limit(S, served):
    srv = S["vsftpd-limited"]
    n = 8
    ideal = SIZE / (MAX_PER_IP * RATE)
    src = os.path.join(served, served_name(SIZE))
    for rep in range(REPS):
        for tool in rotated(peer_tools(n), rep):
            one_run("limit", tool, n, url_of(srv, served_name(SIZE)), src, SIZE, srv,
                    ideal=ideal)


def sc_resume(S, served):
    srv = S["vsftpd-capped"]
    n = 8
    ideal = SIZE / (n * RATE)
    kill_at = 0.42 * ideal  # 2.7 s of the 1 GiB download's 6.4 s: about 40 %
    name = served_name(SIZE)
    src = os.path.join(served, name)
    url = url_of(srv, name)
    for rep in range(REPS):
        for tool in rotated(peer_tools(n), rep):
            out = os.path.join(WORK, "dl", f"resume-{tool}.bin")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            clean_output(out)
            env = tool_env(tool)
            first_cmd = tool_command(tool, n, url, out)
            resume_cmd = tool_command(tool, n, url, out, resume=True)
            m1 = LogMark(srv)
            r1 = run_measured(first_cmd, env, time_limit(ideal),
                              hook=lambda el, _pg: "kill" if el >= kill_at else None,
                              tag=f"resume1-{tool}")
            s1 = m1.read(name)
            m2 = LogMark(srv)
            r2 = run_measured(resume_cmd, env, time_limit(ideal), tag=f"resume2-{tool}")
            s2 = m2.read(name)
            ok = r2["rc"] == 0 and same_bytes(out, src)
            clean_output(out)
            sent = s1["bytes_sent"] + s2["bytes_sent"]
            run = {"scenario": "resume", "case": "", "tool": tool, "n": n, "size": SIZE,
                   "ideal_s": ideal, "command": shlex.join(first_cmd),
                   "resume_command": shlex.join(resume_cmd),
                   "killed_at_s": r1["wall_s"], "first_completed": not r1["killed"],
                   "first_bytes_sent": s1["bytes_sent"], "resume_wall_s": r2["wall_s"],
                   "resume_bytes_sent": s2["bytes_sent"], "wall_s": r1["wall_s"] + r2["wall_s"],
                   "cpu_s": (r1["cpu_s"] or 0) + (r2["cpu_s"] or 0) if r2["cpu_s"] else None,
                   "max_rss_kib": r2["max_rss_kib"], "rc": r2["rc"],
                   "timed_out": r2["timed_out"], "bytes_sent": sent,
                   "twice_bytes": sent - SIZE, "refused_logins": s1["refused_logins"] + s2["refused_logins"],
                   "ok": ok, "output_tail": r2["output_tail"]}
            record(run)


def reference_ok(r):
    """A reference row (`cat`, `dd`) counts only if its command finished and succeeded."""
    return r["rc"] == 0 and not r["timed_out"]


def sc_loopback(S, served):
    srv = S["vsftpd"]  # unthrottled, sendfile on (vsftpd's fast path)
    for size in [s for s in (SIZE, BIG_SIZE) if s]:
        name = served_name(size)
        src = os.path.join(served, name)
        for rep in range(REPS):
            # The physical reference: reading the served file from the page cache.
            r = run_measured(["cat", src], dict(os.environ), 120, tag="cat", machine=True)
            r.update({"scenario": "loopback", "case": human(size), "tool": "cat (file > /dev/null)",
                      "n": 1, "size": size, "command": f"cat {src} > /dev/null",
                      "ok": reference_ok(r)})
            record(r)
            # The write reference: the same bytes into a new file through the page cache,
            # with no network, in 128 KiB writes (ftpseg's largest, and more than most tools
            # make). On a VM whose host takes back the guest's free memory (free page
            # reporting), writing fresh page-cache pages is sometimes several times slower;
            # a slow row here marks a repetition where every tool paid that.
            copy = os.path.join(WORK, "copy.bin")
            try:
                r = run_measured(["dd", f"if={src}", f"of={copy}", "bs=128K", "status=none"],
                                 dict(os.environ), 120, tag="dd", machine=True)
                ok = reference_ok(r) and os.path.getsize(copy) == size
            finally:
                if os.path.exists(copy):
                    os.unlink(copy)
            r.update({"scenario": "loopback", "case": human(size), "tool": "dd (file > new file)",
                      "n": 1, "size": size, "command": f"dd if={src} of=NEW bs=128K", "ok": ok})
            record(r)
            for n in (1, 8):
                for tool in rotated(peer_tools(n, per_io=True), rep):
                    one_run("loopback", tool, n, url_of(srv, name), src, size, srv,
                            case=human(size), machine=True)


def sc_overshoot(S, served):
    n = 16
    name = served_name(SIZE)
    src = os.path.join(served, name)
    for rep in range(REPS):
        for sname in ("proftpd", "vsftpd"):
            srv = S[sname]
            for tool in rotated(peer_tools(n), rep):
                one_run("overshoot", tool, n, url_of(srv, name), src, SIZE, srv, case=sname)


# ---------------------------------------------------------------------------------------------
# Report

def single_stream_rate():
    """The fastest byte-exact single stream (N = 1) of the even-caps scenario, bytes/s: what
    vsftpd's throttle really delivers to one connection (a little under the nominal cap)."""
    n1 = [r for r in RUNS if r["scenario"] == "even" and r["n"] == 1 and r.get("ok")]
    return max((r["size"] / r["wall_s"] for r in n1), default=None)


def single_stream_column(summaries, rows, scenario, key, streams, at):
    """Inserts "of <streams> x 1-stream" at column `at` of each row of a std_rows table: the
    time streams(row) connections at the measured single stream would take / the tool's time,
    also kept in the row's summary under `key`. Returns the rate used, or None (no single-stream
    run: the rows are left as they were)."""
    eff = single_stream_rate()
    if eff:
        for row in rows:
            m = summaries[f"{scenario}//{row[1]}/{row[0]}"]
            m[key] = SIZE / (streams(row) * eff) / m["wall_s"]
            row.insert(at, f"{100 * m[key]:.1f} %")
    return eff


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def group(scenario, case=None):
    keys = []
    for r in RUNS:
        if r["scenario"] == scenario and (case is None or r.get("case") == case):
            k = (r.get("case", ""), r["n"], r["tool"])
            if k not in keys:
                keys.append(k)
    for k in keys:
        yield k, [r for r in RUNS if r["scenario"] == scenario
                  and (r.get("case", ""), r["n"], r["tool"]) == k]


def status(rs):
    bad = []
    t = sum(1 for r in rs if r.get("timed_out"))
    f = sum(1 for r in rs if not r.get("timed_out") and r.get("ok") is False)
    if t:
        bad.append(f"{t} killed at {rs[0]['time_limit_s']:.0f} s" if rs[0].get("time_limit_s")
                   else f"{t} timed out")
    if f:
        bad.append(f"{f} failed")
    return f"{len(rs)} runs" + (" (" + ", ".join(bad) + ")" if bad else ", all byte-exact")


def summarize(rs):
    size = rs[0]["size"]
    wall = med(r["wall_s"] for r in rs)
    m = {
        "runs": len(rs),
        "ok_runs": sum(1 for r in rs if r.get("ok")),
        "timed_out": sum(1 for r in rs if r.get("timed_out")),
        "wall_s": wall,
        "wall_all": [r["wall_s"] for r in rs],
        "mib_s": size / MIB / wall if wall else None,
        "cpu_s_per_gib": med((r["cpu_s"] / (size / GIB)) if r.get("cpu_s") is not None else None
                             for r in rs),
        "durable_s": med(r.get("durable_s") for r in rs),
        "machine_cpu_s_per_gib": med((r["machine_cpu_s"] / (size / GIB))
                                     if r.get("machine_cpu_s") is not None else None for r in rs),
        "max_rss_mib": med((r["max_rss_kib"] / 1024) if r.get("max_rss_kib") else None for r in rs),
        "sent_ratio": med((r["bytes_sent"] / size) if r.get("bytes_sent") is not None else None
                          for r in rs),
        "refused_logins": med(r.get("refused_logins") for r in rs),
        "transfers": med(r.get("transfers") for r in rs),
        "ideal_s": rs[0].get("ideal_s"),
    }
    if m["ideal_s"] and wall:
        m["of_ideal"] = m["ideal_s"] / wall
    return m


def stores_note(scenario):
    """What the ftpseg-<store> rows of a scenario are (empty if it has none)."""
    ios = []
    for r in RUNS:
        x = store_of(r["tool"]) if r["scenario"] == scenario else None
        if x and x not in ios:
            ios.append(x)
    if not ios:
        return ""
    return (" ftpseg is `--io auto` (the store ftpseg picks); "
            + ", ".join(f"ftpseg-{x}" for x in ios)
            + " are the same binary with `--io " + "`, `--io ".join(ios) + "`.")


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)

def targets(S):
    """Issue 4's targets, evaluated on this run's medians. Returns table rows."""
    rows = []

    def yn(ok):
        return "n/a" if ok is None else ("yes" if ok else "**no**")

    def std(scenario, case, n, tool):
        return S.get(f"{scenario}/{case}/{n}/{tool}")

    def peers(scenario, case, n):
        return {t: S[k] for t in ALL_TOOLS if t != "ftpseg"
                for k in [f"{scenario}/{case}/{n}/{t}"] if k in S}

    def complete(m):
        return m and m["ok_runs"] == m["runs"]

    for n in EVEN_NS:
        f = std("even", "", n, "ftpseg")
        if not f:
            continue
        p = {t: m for t, m in peers("even", "", n).items() if complete(m)}
        best = min(p.items(), key=lambda kv: kv[1]["wall_s"]) if p else None
        rel = f.get("of_single_stream_x_n")
        rows.append([f"even caps N={n}: >= 98 % of N x cap",
                     f"{100 * f['of_ideal']:.1f} %"
                     + (f" ({100 * rel:.1f} % of N x the measured single stream)" if rel else ""),
                     yn(f["of_ideal"] >= 0.98 and complete(f))])
        if best:
            rows.append([f"even caps N={n}: no slower than the best peer",
                         f"{f['wall_s']:.2f} s vs {best[0]} {best[1]['wall_s']:.2f} s",
                         yn(f["wall_s"] <= best[1]["wall_s"])])
            bd = min(((t, m) for t, m in p.items() if m.get("durable_s") is not None),
                     key=lambda kv: kv[1]["durable_s"], default=None)
            if bd and f.get("durable_s") is not None:
                rows.append([f"even caps N={n}: on disk no later than the best peer (not a target)",
                             f"{f['durable_s']:.2f} s vs {bd[0]} {bd[1]['durable_s']:.2f} s",
                             yn(f["durable_s"] <= bd[1]["durable_s"])])
    f = std("uneven", "", UNEVEN_N, "ftpseg")
    if f:
        p = peers("uneven", "", UNEVEN_N)
        rows.append(["uneven: >= 95 % of the sum of the rates", f"{100 * f['of_ideal']:.1f} %",
                     yn(f["of_ideal"] >= 0.95 and complete(f))])
        if p:
            best = min(p.items(), key=lambda kv: kv[1]["wall_s"])
            rows.append(["uneven: faster than every peer",
                         f"{f['wall_s']:.2f} s vs best peer {best[0]} {best[1]['wall_s']:.2f} s",
                         yn(f["wall_s"] < best[1]["wall_s"])])
    f = S.get("stall/ftpseg")
    if f:
        rows.append(["one stalled connection: <= 1.15 x the time without",
                     f"{f['ratio']:.2f} x ({f['stalled']['wall_s']:.2f} s vs "
                     f"{f['no_stall']['wall_s']:.2f} s)",
                     yn(f["ratio"] <= 1.15 and complete(f["stalled"]))])
    f = std("limit", "", 8, "ftpseg")
    if f:
        rel = f.get("of_single_stream_x_limit")
        rows.append(["per-IP limit: finishes at the speed of 3 connections (>= 95 % of 3 x cap)",
                     f"{100 * f['of_ideal']:.1f} %"
                     + (f" ({100 * rel:.1f} % of 3 x the measured single stream)" if rel else ""),
                     yn(f["of_ideal"] >= 0.95 and complete(f))])
        rows.append(["per-IP limit: no error storm (refused logins, median)",
                     f"{f['refused_logins']:.0f}", "see peers"])
    f = S.get("resume/ftpseg")
    if f:
        allowed = max(0.01 * SIZE, 8 * 4 * MIB)
        rows.append([f"resume: fetched twice <= max(1 % of file, N x 4 MiB) = {allowed / MIB:.1f} MiB",
                     f"{f['twice_bytes'] / MIB:.1f} MiB", yn(f["twice_bytes"] <= allowed
                                                            and f["ok_runs"] == f["runs"])])
    for srv in ("proftpd", "vsftpd"):
        f = std("overshoot", srv, 16, "ftpseg")
        if f and f["sent_ratio"] is not None:
            rows.append([f"overshoot N=16 on {srv}: <= 1 % of the file",
                         f"{100 * (f['sent_ratio'] - 1):.2f} %", yn(f["sent_ratio"] <= 1.01)])
    for size in [s for s in (SIZE, BIG_SIZE) if s]:
        for n in (1, 8):
            f = std("loopback", human(size), n, "ftpseg")
            if not f:
                continue
            p = {t: m for t, m in peers("loopback", human(size), n).items() if complete(m)}
            if p:
                bt = max(p.items(), key=lambda kv: kv[1]["mib_s"])
                rows.append([f"loopback {human(size)} N={n}: throughput >= best peer",
                             f"{f['mib_s']:.0f} vs {bt[0]} {bt[1]['mib_s']:.0f} MiB/s",
                             yn(f["mib_s"] >= bt[1]["mib_s"])])
                bc = min(p.items(), key=lambda kv: kv[1]["cpu_s_per_gib"])
                rows.append([f"loopback {human(size)} N={n}: CPU s/GiB <= best peer",
                             f"{f['cpu_s_per_gib']:.2f} vs {bc[0]} {bc[1]['cpu_s_per_gib']:.2f}",
                             yn(f["cpu_s_per_gib"] <= bc[1]["cpu_s_per_gib"])])
                pm = {t: m for t, m in p.items() if m.get("machine_cpu_s_per_gib") is not None}
                if pm and f.get("machine_cpu_s_per_gib") is not None:
                    bm = min(pm.items(), key=lambda kv: kv[1]["machine_cpu_s_per_gib"])
                    rows.append([f"loopback {human(size)} N={n}: machine CPU s/GiB <= best peer",
                                 f"{f['machine_cpu_s_per_gib']:.2f} vs {bm[0]} "
                                 f"{bm[1]['machine_cpu_s_per_gib']:.2f}",
                                 yn(f["machine_cpu_s_per_gib"] <= bm[1]["machine_cpu_s_per_gib"])])
            rows.append([f"loopback {human(size)} N={n}: peak RSS <= 64 MiB",
                         f"{f['max_rss_mib']:.1f} MiB", yn(f["max_rss_mib"] <= 64)])
    return rows


def report(meta):
    md = []
    summaries = {}
    md.append("# ftpseg and its peers, side by side\n")
    md.append(f"Generated by `benches/peers.py` (`cargo bench --bench peers`) on {meta['date']}; "
              f"host: {meta['host']['cpus']} CPUs, {meta['host']['mem_gib']} GiB RAM, "
              f"{meta['host']['kernel']}; load average at start {meta['host']['load_start']}, "
              f"at end {meta['host'].get('load_end')}. Shared 2-core VM: compare rows of one run, "
              "as ratios.\n")
    md.append(f"ftpseg: `{meta['binary']}` ({meta['versions']['ftpseg']}, git {meta['git']}). "
              f"Peers: {meta['versions']['lftp']}; {meta['versions']['aria2c']}; "
              f"{meta['versions']['axel']}; {meta['versions']['curl'].split(' (')[0]}. "
              f"Servers: {meta['versions'].get('vsftpd')}, {meta['versions'].get('proftpd-core')}, "
              "`ftpseg serve` for the uneven and long-path scenarios.\n")
    md.append(f"Repetitions: {REPS} (even caps at N = 1: {N1_REPS}); times are medians; every "
              "result is checked byte-exact with `cmp` against the served file. "
              "Server bytes = bytes the server logged as sent for the file (vsftpd/proftpd "
              "xferlog, or `ftpseg serve --stats-file`) / file size; RETRs = transfers the server logged "
              "(median; lftp `pget` on a fast link often finishes with the main stream before "
              "starting its chunks). Refused = logins the server "
              "refused (vsftpd.log \"too many sessions\" / serve's `connections_refused`).\n")

    def std_rows(scenario, case=None, machine=False):
        rows = []
        base = {}
        for (c, n, tool), rs in group(scenario, case):
            if tool == "ftpseg":
                base[(c, n)] = summarize(rs)["wall_s"]
        for (c, n, tool), rs in group(scenario, case):
            m = summarize(rs)
            summaries[f"{scenario}/{c}/{n}/{tool}"] = m
            b = base.get((c, n))
            m["time_vs_ftpseg"] = m["wall_s"] / b if b and m["wall_s"] else None
            rows.append([tool, n, fmt(m["wall_s"], ".2f"), fmt(m["time_vs_ftpseg"], ".2f") + " x"
                         if m["time_vs_ftpseg"] else "-", fmt(m["mib_s"]),
                         fmt(m.get("of_ideal") and 100 * m["of_ideal"], ".1f") + " %"
                         if m.get("of_ideal") else "-",
                         fmt(m["cpu_s_per_gib"], ".2f"), fmt(m["max_rss_mib"], ".1f"),
                         fmt(m["sent_ratio"], ".4f"), fmt(m["transfers"], ".0f"),
                         fmt(m["refused_logins"], ".0f"), status(rs)])
            if machine:
                rows[-1].insert(7, fmt(m["machine_cpu_s_per_gib"], ".2f"))
                rows[-1].insert(3, fmt(m["durable_s"], ".2f"))
        return rows

    H = ["tool", "N", "time s", "time / ftpseg's", "MiB/s", "of ideal", "CPU s/GiB", "peak RSS MiB",
         "server bytes / size", "RETRs", "refused", "runs"]
    # With the time until the file is on disk and the whole machine's CPU (std_rows machine).
    HM = H[:3] + ["on disk s"] + H[3:7] + ["machine CPU s/GiB"] + H[7:]
    size_s = human(SIZE)
    if any(r["scenario"] == "even" for r in RUNS):
        md.append(f"\n## 1. Even caps: vsftpd, {RATE // MIB} MiB/s per connection "
                  f"(`use_sendfile=NO`), {size_s}\n")
        rows = std_rows("even", machine=True)
        # After "of ideal" (column 7 of HM).
        eff = single_stream_column(summaries, rows, "even", "of_single_stream_x_n",
                                   lambda row: row[1], 7)
        md.append("Ideal: size / (N x cap). vsftpd's throttle (it sleeps between writes) delivers a "
                  "little less than the nominal cap; the fastest single stream (N = 1) of this run "
                  + (f"reached {eff / MIB:.2f} MiB/s, so \"of 1-stream x N\" = time of N x that "
                     "rate / time." if eff else "is the reference.") + " On disk s: until the "
                  "tool's file is on disk (the tool's time + a `sync`): ftpseg syncs as it goes "
                  "and before it renames the file, the peers leave the writing to the kernel. "
                  "Machine CPU s/GiB: the whole machine's busy time until then (section 6); on a "
                  "throttled link that is mostly what else the machine runs meanwhile, so it "
                  "compares tools only on a quiet machine."
                  + stores_note("even") + "\n")
        if eff:
            md.append(table(HM[:7] + ["of 1-stream x N"] + HM[7:], rows))
        else:
            md.append(table(HM, rows))
    if any(r["scenario"] == "uneven" for r in RUNS):
        rates = uneven_rates()
        md.append(f"\n\n## 2. Uneven connections: `ftpseg serve --session-rates`, N = {UNEVEN_N}, "
                  f"{size_s}\n")
        md.append(f"Rates (MiB/s, seed {UNEVEN_SEED}, uniform 2-40): "
                  f"{', '.join(f'{r / MIB:.1f}' for r in rates)}; sum {sum(rates) / MIB:.1f} MiB/s. "
                  "A fresh server per run; the k-th control connection it accepts gets rate "
                  "k mod 8, so any 8 consecutive connections together get the sum. Ideal = "
                  "size / sum of the 8 rates (a tool that holds 8 connections at once can reach "
                  "it only if it keeps all of them busy to the end).\n")
        md.append(table(H, std_rows("uneven")))
    if any(r["scenario"] == "stall" for r in RUNS):
        md.append(f"\n\n## 3. One stalled connection: vsftpd, 8 x {RATE // MIB} MiB/s, {size_s}\n")
        md.append("At about 1.5 s (scaled to the file: 23 % of the ideal time; the column says when) "
                  "the newest vsftpd session "
                  "process that is sending file data gets SIGSTOP and stays stopped until the "
                  "tool ends (then SIGKILL). Every tool's idle timeout is 30 s. "
                  "Ratio = median time with the freeze / median time without, same tool, "
                  "same repetitions.\n")
        rows = []
        for tool in TOOLS:
            a = [r for r in RUNS if r["scenario"] == "stall" and r["tool"] == tool
                 and r["case"] == "no stall"]
            b = [r for r in RUNS if r["scenario"] == "stall" and r["tool"] == tool
                 and r["case"] == "one session frozen"]
            if not a or not b:
                continue
            ma, mb = summarize(a), summarize(b)
            summaries[f"stall/{tool}"] = {"no_stall": ma, "stalled": mb,
                                          "ratio": mb["wall_s"] / ma["wall_s"]}
            frozen = [r.get("frozen_at_s") for r in b]
            rows.append([tool, 8, fmt(ma["wall_s"], ".2f"), fmt(mb["wall_s"], ".2f"),
                         fmt(mb["wall_s"] / ma["wall_s"], ".2f") + " x",
                         fmt(ma["sent_ratio"], ".4f"), fmt(mb["sent_ratio"], ".4f"),
                         ", ".join("-" if f is None else f"{f:.2f}" for f in frozen),
                         status(a), status(b)])
        md.append(table(["tool", "N", "no stall s", "one frozen s", "ratio",
                         "server bytes / size (no stall)", "(frozen; without the frozen session's)",
                         "frozen at s", "runs (no stall)", "runs (frozen)"], rows))
    if any(r["scenario"] == "limit" for r in RUNS):
        md.append(f"\n\n## 4. Per-IP limit: vsftpd `max_per_ip={MAX_PER_IP}`, "
                  f"{RATE // MIB} MiB/s per connection, tools asked for 8, {size_s}\n")
        md.append(f"Ideal: size / ({MAX_PER_IP} x cap). vsftpd answers a 4th connection `421 There "
                  "are too many connections from your internet address.`; refused = those, from "
                  "vsftpd.log.\n")
        rows = std_rows("limit")
        # After "of ideal" (column 6 of H).
        eff = single_stream_column(summaries, rows, "limit", "of_single_stream_x_limit",
                                   lambda row: MAX_PER_IP, 6)
        if eff:
            md.append(f"Of {MAX_PER_IP} x 1-stream: the time {MAX_PER_IP} connections at the "
                      f"fastest single stream of section 1 ({eff / MIB:.2f} MiB/s) would take / "
                      "time.\n")
            md.append(table(H[:6] + [f"of {MAX_PER_IP} x 1-stream"] + H[6:], rows))
        else:
            md.append(table(H, rows))
    if any(r["scenario"] == "resume" for r in RUNS):
        md.append(f"\n\n## 5. Crash and resume: vsftpd, 8 x {RATE // MIB} MiB/s, {size_s}\n")
        md.append("SIGKILL (the whole process group) at 42 % of the ideal time (2.7 s for 1 GiB), "
                  "then the tool's resume command. Fetched twice = server bytes over both runs "
                  "(xferlog) - file size. Target: at most max(1 % of the file, N x 4 MiB).\n")
        rows = []
        for (_c, n, tool), rs in group("resume"):
            tw = med(r["twice_bytes"] for r in rs)
            summaries[f"resume/{tool}"] = {
                "runs": len(rs), "ok_runs": sum(1 for r in rs if r["ok"]),
                "killed_at_s": med(r["killed_at_s"] for r in rs),
                "first_bytes_sent": med(r["first_bytes_sent"] for r in rs),
                "resume_wall_s": med(r["resume_wall_s"] for r in rs),
                "total_wall_s": med(r["wall_s"] for r in rs), "twice_bytes": tw,
                "twice_all": [r["twice_bytes"] for r in rs]}
            s = summaries[f"resume/{tool}"]
            rows.append([tool, n, fmt(s["killed_at_s"], ".2f"),
                         fmt(s["first_bytes_sent"] / SIZE * 100, ".1f") + " %",
                         fmt(s["resume_wall_s"], ".2f"), fmt(s["total_wall_s"], ".2f"),
                         fmt(tw / MIB, ".1f"), fmt(100 * tw / SIZE, ".2f") + " %", status(rs)])
        md.append(table(["tool", "N", "killed at s", "sent before kill", "resume s", "total s",
                         "fetched twice MiB", "of file", "runs"], rows))
    if any(r["scenario"] == "loopback" for r in RUNS):
        md.append("\n\n## 6. Unthrottled loopback: vsftpd (sendfile on)\n")
        md.append("Client and server share the 2 cores. `cat` is the physical reference (the "
                  "served file from the page cache to /dev/null), `dd` the write reference "
                  "(the served file copied to a new file: no network, the page-cache writes "
                  "every tool makes; a slow `dd` marks a disturbed repetition); `curl` "
                  "(N = 1) the plain "
                  "single-stream FTP reference. On disk s: until the tool's file is on disk (the "
                  "tool's time + a `sync`; ftpseg syncs as it goes, the peers never). "
                  "CPU s/GiB is the tool's own (user + system, "
                  "`/usr/bin/time`); machine CPU s/GiB is the whole machine's busy time from "
                  "the start until the file is on disk (`sync` after each run): the server's "
                  "share, and the write-back the kernel's flusher threads do for a tool that "
                  "never syncs, which per-process CPU charges to nobody." + stores_note("loopback")
                  + "\n")
        for size in [s for s in (SIZE, BIG_SIZE) if s]:
            md.append(f"\n### {human(size)}\n")
            md.append(table(HM, std_rows("loopback", human(size), machine=True)))
    if any(r["scenario"] == "overshoot" for r in RUNS):
        md.append(f"\n\n## 7. Overshoot: N = 16, unthrottled, {size_s}\n")
        md.append("Server bytes / size from the server's xferlog. proftpd advertises `RANG STREAM` "
                  "(ftpseg asks for exact ranges); vsftpd does not (every tool ends ranges early).\n")
        for sname in ("proftpd", "vsftpd"):
            md.append(f"\n### {sname}\n")
            md.append(table(H, std_rows("overshoot", sname)))

    if any(r["scenario"] == "latency" for r in RUNS):
        ls = next(r["size"] for r in RUNS if r["scenario"] == "latency")
        md.append(f"\n\n## 8. A long path: `ftpseg serve --rtt-ms {LATENCY_RTT_MS}`, "
                  f"{LATENCY_N} x {RATE // MIB} MiB/s, {human(ls)}\n")
        md.append(f"Every exchange on a control connection takes {LATENCY_RTT_MS} ms more (half "
                  "each way; the greeting two round trips after the connect); data connections "
                  "are not delayed. Ideal = size / (N x cap), the transfer alone; over = time - "
                  "ideal, in round trips: the logins, questions and transfer starts before all "
                  "connections read, and what a tool waits for after the last byte. Not one of "
                  "the issue's scenarios: added with ftpseg's early logins (docs/benchmarks.md).\n")
        rows = std_rows("latency")
        for row in rows:
            m = summaries[f"latency//{row[1]}/{row[0]}"]
            over = (m["wall_s"] - m["ideal_s"]) / (LATENCY_RTT_MS / 1000) if m["wall_s"] else None
            m["over_rtts"] = over
            row.insert(6, fmt(over, ".1f"))
        md.append(table(H[:6] + ["over, RTTs"] + H[6:], rows))

    md.append("\n\n## Targets of issue 4 (ftpseg, this run)\n")
    md.append(table(["target", "measured", "met"], targets(summaries)))
    md.append("\n\n## Commands\n")
    md.append("Reproduce: `cargo bench --bench peers` (as root; see docs/benchmarks.md). "
              "Per-tool settings and why:\n")
    for t in TOOLS:
        md.append(f"* **{t}**: {SETTINGS[t]}.")
    if any(store_of(r["tool"]) for r in RUNS):
        md.append(f"* **ftpseg-<store>**: {SETTINGS['ftpseg-<store>']}.")
    md.append("\nExact command lines (one run of each tool per scenario; paths are the harness's "
              "temp folder):\n")
    seen = set()
    lines = []
    for r in RUNS:
        k = (r["scenario"], r.get("case"), r["tool"], r["n"])
        if k in seen:
            continue
        seen.add(k)
        extra = f"\n  resume: `{r['resume_command']}`" if r.get("resume_command") else ""
        lines.append(f"* {r['scenario']} {r.get('case') or ''} N={r['n']} {r['tool']}: "
                     f"`{r['command']}`{extra}")
    md += lines
    for sc in ("uneven", "latency"):
        u = next((r for r in RUNS if r["scenario"] == sc), None)
        if u:
            md.append(f"* {sc} server: `{u['serve_command']}`")
    return "\n".join(md) + "\n", summaries


# ---------------------------------------------------------------------------------------------

def write_report(meta):
    md, summaries = report(meta)
    print(md)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "peers.md"), "w") as f:
        f.write(md)
    with open(os.path.join(OUT_DIR, "peers.json"), "w") as f:
        json.dump({"meta": meta, "summaries": summaries, "runs": RUNS}, f, indent=1)


def main():
    global WORK, PROGRESS, SIZE, BIG_SIZE, REPS, N1_REPS, TOOLS, IOS
    if os.environ.get("FTPSEG_PEERS_REPORT_ONLY") == "1":
        # Re-render peers.md from the runs saved in peers.json (e.g. after changing the report).
        d = json.load(open(os.path.join(OUT_DIR, "peers.json")))
        RUNS.extend(d["runs"])
        st = d["meta"]["settings"]
        SIZE, BIG_SIZE, REPS, N1_REPS, TOOLS = (st["size"], st["big_size"], st["reps"],
                                                st["n1_reps"], st["tools"])
        IOS = st.get("io", [])
        write_report(d["meta"])
        return
    if os.geteuid() != 0:
        sys.exit("benches/peers.py must run as root (it starts FTP servers that switch users)")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no ftpseg binary at {BIN} (set FTPSEG_PEERS_BIN or run cargo build --release)")
    log(f"ftpseg binary: {BIN} (built {time.ctime(os.path.getmtime(BIN))})")
    if IOS and "ftpseg" in TOOLS and set(SCENARIOS) & set(PER_IO_SCENARIOS):
        helptext = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
        if "--io" not in helptext:
            sys.exit(f"{BIN} has no --io option: build a newer one, or FTPSEG_PEERS_IO=none")
        log(f"ftpseg per store in {','.join(PER_IO_SCENARIOS)}: "
            + ", ".join(f"ftpseg-{x}" for x in IOS))
    ensure_tools()
    WORK = tempfile.mkdtemp(prefix="ftpseg-peers-")
    sizes = [SIZE] + ([BIG_SIZE] if "loopback" in SCENARIOS and BIG_SIZE else [])
    st, S = ensure_servers(sizes)
    served = st["served"]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "binary": BIN,
        "git": subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip(),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
                 "load_start": " ".join(open("/proc/loadavg").read().split()[:3])},
        "versions": tool_versions(),
        "settings": {"reps": REPS, "n1_reps": N1_REPS, "size": SIZE, "big_size": BIG_SIZE,
                     "rate_per_connection": RATE, "max_per_ip": MAX_PER_IP,
                     "stall_timeout_s": STALL_TIMEOUT, "scenarios": SCENARIOS, "tools": TOOLS,
                     "io": IOS, "io_scenarios": PER_IO_SCENARIOS,
                     "servers_dir": SERVERS_DIR, "base_port": BASE_PORT,
                     "uneven_rates": uneven_rates(), "tool_settings": SETTINGS},
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    PROGRESS = (os.path.join(OUT_DIR, "peers.json"), meta)
    t0 = time.monotonic()
    fns = {"even": sc_even, "uneven": sc_uneven, "stall": sc_stall, "limit": sc_limit,
           "resume": sc_resume, "loopback": sc_loopback, "overshoot": sc_overshoot,
           "latency": sc_latency}
    for s in SCENARIOS:
        log(f"scenario {s}")
        fns[s](S, served)
    meta["host"]["load_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    write_report(meta)
    log(f"wrote {OUT_DIR}/peers.md and peers.json ({meta['duration_s']} s)")


if __name__ == "__main__":
    main()
