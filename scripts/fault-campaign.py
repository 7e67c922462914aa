#!/usr/bin/env python3
"""Fault campaign: many seeded downloads, each hit by 1-3 faults, every claim checked.

    python3 scripts/fault-campaign.py [--runs 1000] [--seed S] [--only RUN] [--time-limit SECS]
        [--servers vsftpd,proftpd,pure-ftpd,pyftpdlib,builtin] [--ftpseg PATH] [--json FILE]
        [--quiet]

Each run picks (from the seed and its number only, so `--seed S --only RUN` replays it) a
server, a file, a connection count (1-8), a store (--io) and a checkpoint interval, then 1-3
faults:

  kill      SIGKILL of ftpseg at a random moment; the manifest's claims are then checked
            against the source (every byte of [start, done) of every range, the manifest's
            invariants, a chunk hash only where its chunk is wholly done), and the same command
            is run again to resume.
  freeze    SIGSTOP of ftpseg for 0.3-2.5 s, then SIGCONT.
  session   SIGSTOP for 1-4 s of the server processes serving this download (proftpd and
            pure-ftpd fork per session; only the processes holding a socket connected to this
            ftpseg are stopped, so other users of the servers are not touched; the built-in
            server, private to the run, is stopped as a whole). Not on vsftpd, whose sessions
            can deadlock on their log file's lock when a session process is stopped (see
            plan_run), and not on pyftpdlib (one process for every session).
  refused   more connections asked than the server allows: the real servers' -limited
            instances (4 per IP, from scripts/ftp-servers.sh) with -n 5-8, or the built-in
            server with --max-connections below -n. Refused logins wait --busy-retry 1.
  outage    the built-in server and ftpseg run in a network namespace of their own (only
            loopback); the loopback is cut for 1-3 s (`ip link set lo down` and an
            `unreachable` rule, as tests/it/netns_support.rs does), then restored.

A fault's moment ("kill@0.42s") counts from the start of the command it hits or from the end of
the previous fault; the throttle (ftpseg's --limit-rate on the real servers, the built-in
server's per-connection --rate) makes the transfer alone take 0.8-2 s, so most faults land
mid-transfer. A fault that comes after ftpseg has finished did not land (counted apart). Every
command gets -q --stall-timeout 5 --straggler-timeout 2 --busy-retry 1 --max-tries 50.

A run passes when the last command exits 0, the output is byte-exact (SHA-256) and no .part,
manifest or manifest .tmp is left. The summary counts runs, faults by kind (and those that
landed while ftpseg was still running), corrupt claims and bad files; exit 1 if there is any
corrupt claim, bad file or failed run. Python 3 standard library only; run as root for the
namespaces and the session freezes (without them those faults are skipped, and said so).

The real servers are the ones of scripts/ftp-servers.sh ($FTPSEG_SERVERS_DIR/servers.json);
the campaign's files are generated into their served folder, under fault-campaign/, readable by
all (as the script makes its own files). The built-in server is `ftpseg serve`.
"""

import argparse
import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
# Sizes that are not multiples of anything the engine uses (chunks are 4 MiB, min range 1 MiB).
FILES = [
    ("fc-2m.bin", 2 * MIB + 4321),
    ("fc-5m.bin", 5 * MIB + 777),
    ("fc-11m.bin", 11 * MIB + 3),
    ("fc-24m.bin", 24 * MIB - 999),
]
REAL = ["vsftpd", "proftpd", "pure-ftpd", "pyftpdlib"]
ALL_SERVERS = REAL + ["builtin"]
IOS = ["pwrite", "splice", "mmap", "auto"]
FAULT_KINDS = ["kill", "freeze", "session", "refused", "outage"]
FILES_MTIME = 1704164645  # 2024-01-02 03:04:05 UTC, as scripts/ftp-servers.sh
CUT = "link set lo down\nrule add prio 1 to 127.0.0.0/8 unreachable\nrule add prio 100 lookup local\nrule del prio 0\n"
UNCUT = "rule add prio 0 lookup local\nrule del prio 100\nrule del prio 1\nlink set lo up\n"


def log(msg):
    print(msg, flush=True)


def warn(msg):
    print(f"fault-campaign: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Cleanup: everything started or stopped is recorded here and undone at exit, whatever happens.

class Cleanup:
    def __init__(self):
        self.stopped = set()      # pids we sent SIGSTOP to: SIGCONT at exit
        self.groups = set()       # process groups we started: SIGKILL at exit
        self.netns = None         # the Netns, lo up again at exit
        self.dirs = []            # folders to remove at exit
        self.done = False

    def cont(self, pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
        self.stopped.discard(pid)

    def run(self):
        if self.done:
            return
        self.done = True
        for pid in list(self.stopped):
            self.cont(pid)
        if self.netns is not None:
            try:
                self.netns.up()
            except Exception:
                pass
        for pgid in list(self.groups):
            kill_group(pgid)
        if self.netns is not None:
            self.netns.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


CLEAN = Cleanup()


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGCONT)
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    CLEAN.groups.discard(pgid)


def spawn(argv, **kw):
    """A child in a session (and process group) of its own, recorded for cleanup."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    CLEAN.groups.add(p.pid)
    return p


def reap(p, timeout=10):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        p.wait()
    CLEAN.groups.discard(p.pid)


# ----------------------------------------------------------------------------------------------
# Network namespace (as tests/it/netns_support.rs): `unshare -n sleep` holds it, nsenter enters.

class Netns:
    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "86400"], start_new_session=True,
                                       stderr=subprocess.PIPE)
        CLEAN.groups.add(self.holder.pid)
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.time() + 5
        while True:
            if self.holder.poll() is not None:
                why = self.holder.stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"unshare -n exited with {self.holder.returncode}: {why}")
            try:
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("unshare -n made no namespace within 5 s")
            time.sleep(0.01)
        self.down_now = False
        self.ip("link set lo up\n")

    def prefix(self):
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def ip(self, script):
        r = subprocess.run(self.prefix() + ["ip", "-batch", "-"], input=script.encode(),
                           capture_output=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"ip -batch in the namespace failed: {r.stderr.decode().strip()}")

    def down(self):
        self.down_now = True
        self.ip(CUT)

    def up(self):
        if self.down_now:
            self.ip(UNCUT)
            self.down_now = False

    def close(self):
        kill_group(self.holder.pid)
        try:
            self.holder.wait(5)
        except Exception:
            pass


# ----------------------------------------------------------------------------------------------
# Processes and sockets (/proc)

def proc_table():
    """pid -> ppid for every process."""
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                s = f.read()
            out[int(e)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


def descendants(root):
    table = proc_table()
    keep, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in table.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                grew = True
    keep.discard(root)
    return keep


def socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def tcp_table(pid_for_ns="self"):
    """inode -> (local port, remote port) of every TCP socket in the namespace of a pid."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid_for_ns}/net/{name}") as f:
                next(f)
                for line in f:
                    p = line.split()
                    out[p[9]] = (int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            pass
    return out


def sessions_of(server_pid, client_pid):
    """Processes under server_pid holding a TCP socket whose peer is a socket of client_pid."""
    tcp = tcp_table()
    mine = {tcp[i][0] for i in socket_inodes(client_pid) if i in tcp}
    if not mine:
        return []
    found = []
    for pid in descendants(server_pid):
        if any(i in tcp and tcp[i][1] in mine for i in socket_inodes(pid)):
            found.append(pid)
    return found


def alive(pid, start_ticks=None):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return False
    fields = s[s.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == int(start_ticks)


# ----------------------------------------------------------------------------------------------
# Source files

def source_bytes(name, size):
    return random.Random(f"ftpseg-fault-campaign:{name}").randbytes(size)


def ensure_files(folder):
    """Writes the campaign's files into folder (once), root-owned, 644, fixed mtime."""
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, 0o755)
    data = {}
    for name, size in FILES:
        path = os.path.join(folder, name)
        want = source_bytes(name, size)
        have_ok = False
        try:
            if os.path.getsize(path) == size:
                with open(path, "rb") as f:
                    have_ok = f.read() == want
        except OSError:
            pass
        if not have_ok:
            tmp = f"{path}.tmp.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(want)
            os.chmod(tmp, 0o644)
            os.utime(tmp, (FILES_MTIME, FILES_MTIME))
            os.replace(tmp, path)
        data[name] = (want, hashlib.sha256(want).hexdigest())
    return data


# ----------------------------------------------------------------------------------------------
# The manifest's claims (docs/manifest.md)

def check_claims(out, src):
    """After a kill: returns (problems, claimed_bytes). Every problem is a corrupt claim."""
    mpath, part = out + ".ftpseg", out + ".part"
    problems = []
    if os.path.exists(out):
        # The kill came after the rename: the output must already be exact.
        with open(out, "rb") as f:
            if f.read() != src:
                problems.append("output present after the kill but not equal to the source")
        return problems, 0
    if not os.path.exists(mpath):
        if os.path.exists(part):
            problems.append(".part without a manifest")
        return problems, 0
    try:
        with open(mpath, "rb") as f:
            m = json.loads(f.read())
    except (OSError, ValueError) as e:
        return [f"manifest unreadable: {e}"], 0
    size = len(src)
    if m.get("format") != "ftpseg-manifest" or m.get("version") != 2:
        problems.append(f"format/version {m.get('format')!r}/{m.get('version')!r}")
    if m.get("size") != size:
        return problems + [f"size {m.get('size')} != {size}"], 0
    ranges = m.get("ranges") or []
    pos, claimed = 0, 0
    for r in ranges:
        s, e, d = r.get("start"), r.get("end"), r.get("done")
        if not all(isinstance(x, int) for x in (s, e, d)) or s != pos or not s < e or not s <= d <= e:
            problems.append(f"bad range {r} (expected start {pos})")
            return problems, 0
        pos = e
        claimed += d - s
    if pos != size:
        problems.append(f"ranges end at {pos}, not {size}")
    cs, chunks = m.get("chunk_size"), m.get("chunks") or []
    if cs:
        if cs & (cs - 1) or cs < 1024 or len(chunks) != -(-size // cs):
            problems.append(f"chunk_size {cs} with {len(chunks)} chunks")
        else:
            for k, h in enumerate(chunks):
                if h is None:
                    continue
                lo, hi = k * cs, min((k + 1) * cs, size)
                # Every byte of the chunk must lie in the done part of some range.
                covered = sum(max(0, min(hi, r["done"]) - max(lo, r["start"])) for r in ranges)
                if covered != hi - lo:
                    problems.append(f"chunk {k} hashed but only {covered} of {hi - lo} bytes done")
    if claimed == 0:
        return problems, 0
    try:
        with open(part, "rb") as f:
            for r in ranges:
                if r["done"] > r["start"]:
                    f.seek(r["start"])
                    got = f.read(r["done"] - r["start"])
                    if got != src[r["start"]:r["done"]]:
                        bad = next((i for i in range(len(got)) if i >= len(src) or got[i] != src[r["start"] + i]),
                                   len(got))
                        problems.append(f"range [{r['start']}, {r['done']}) claimed, first wrong byte at "
                                        f"{r['start'] + bad}")
    except OSError as e:
        problems.append(f"{claimed} bytes claimed but .part unreadable: {e}")
    return problems, claimed


# ----------------------------------------------------------------------------------------------
# Servers

class RealServers:
    def __init__(self):
        d = os.environ.get("FTPSEG_SERVERS_DIR", "/tmp/ftpseg-servers")
        self.state_path = os.path.join(d, "servers.json")
        with open(self.state_path) as f:
            st = json.load(f)
        self.served = st["served"]
        self.user, self.password = st["user"], st["password"]
        self.by_name = {s["name"]: s for s in st["servers"]}

    def available(self, kind):
        for name in (kind, kind + "-limited"):
            s = self.by_name.get(name)
            if not s or not alive(s["pid"], s.get("pid_start_ticks")):
                return False
        return True


def greets(port, timeout=5.0):
    """True if 127.0.0.1:port sends a reply line (any code: a full -limited instance says 421)."""
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.settimeout(timeout)
            line = c.recv(512)
            try:
                c.sendall(b"QUIT\r\n")
            except OSError:
                pass
            return line[:1].isdigit()
    except OSError:
        return False


def start_builtin(ftpseg, root, netns, rate, max_conn, deadline):
    argv = [ftpseg, "serve", root, "--port", "0", "--rate", str(rate)]
    if max_conn:
        argv += ["--max-connections", str(max_conn)]
    if netns:
        argv = netns.prefix() + argv
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.set_blocking(p.stdout.fileno(), False)
    buf = b""
    while time.time() < deadline:
        try:
            chunk = p.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            buf += chunk
        if b"\n" in buf:
            return p, buf.split(b"\n", 1)[0].decode().strip().rstrip("/")
        if p.poll() is not None:
            break
        time.sleep(0.01)
    kill_group(p.pid)
    reap(p)
    raise RuntimeError(f"ftpseg serve did not print its URL (got {buf!r})")


# ----------------------------------------------------------------------------------------------
# One run

class Plan:
    pass


def plan_run(seed, run, servers, caps):
    rng = random.Random(f"{seed}:{run}")
    p = Plan()
    p.server = rng.choice(servers)
    p.file, p.size = rng.choice(FILES)
    p.n = rng.randint(1, 8)
    p.io = rng.choice(IOS)
    p.checkpoint = rng.choice([0.05, 0.2, 1.0])
    p.transfer_s = rng.uniform(0.8, 2.0)      # how long the throttled transfer alone takes
    kinds = ["kill", "freeze"]
    # Not vsftpd: a vsftpd session is two processes, and the privileged parent answers the
    # SIGCHLD of its stopped child with a blocking wait, sometimes while it holds the fcntl lock
    # of the log file; every later session then blocks on that lock before its greeting, and
    # the whole instance hangs until it is restarted (seen in this campaign's first attempt).
    if p.server in ("proftpd", "pure-ftpd", "builtin") and caps["session"]:
        kinds.append("session")
    kinds.append("refused")
    if p.server == "builtin" and caps["netns"]:
        kinds.append("outage")
    weights = {"kill": 5, "freeze": 2, "session": 2, "refused": 1, "outage": 2}
    count = rng.choice([1, 1, 2, 2, 3])
    p.faults = []
    refused = False
    for _ in range(count):
        k = rng.choices(kinds, [weights[x] for x in kinds])[0]
        if k == "refused":
            if refused:
                k = "kill"
            else:
                refused = True
                continue
        p.faults.append(k)
    p.refused = refused
    p.max_conn = 0
    if refused:
        if p.server == "builtin":
            p.n = max(p.n, 2)
            p.max_conn = rng.randint(1, p.n - 1)
        else:
            p.n = rng.randint(5, 8)
            p.max_conn = 4
    # Connections that can work at once (ranges are at least 1 MiB).
    eff = max(1, min(p.n, p.max_conn or p.n, p.size // MIB))
    p.rate = max(64 * 1024, int(p.size / p.transfer_s))          # all connections together
    p.conn_rate = max(32 * 1024, int(p.size / p.transfer_s / eff))  # built-in server, each
    p.events = []
    for k in p.faults:
        at = rng.uniform(0.1, 0.85) * p.transfer_s
        if k == "kill":
            p.events.append((k, at, 0.0))
        elif k == "freeze":
            p.events.append((k, at, rng.uniform(0.3, 2.5)))
        elif k == "session":
            p.events.append((k, at, rng.uniform(1.0, 4.0)))
        elif k == "outage":
            p.events.append((k, at, rng.uniform(1.0, 3.0)))
    p.netns = p.server == "builtin" and caps["netns"]
    return p


def describe(p):
    parts = []
    for k, at, d in p.events:
        parts.append(f"{k}@{at:.2f}s" + (f"+{d:.1f}s" if d else ""))
    if p.refused:
        parts.append(f"refused(max {p.max_conn})")
    return ",".join(parts) or "none"


class RunResult:
    def __init__(self):
        self.ok = False
        self.reason = ""
        self.corrupt = []
        self.bad_file = False
        self.landed = {k: 0 for k in FAULT_KINDS}
        self.kills_checked = 0
        self.claimed_bytes = 0
        self.attempts = 0
        self.busy_start = 0          # resumes refused at the first contact (see busy_at_start)
        self.busy_start_retries = 0
        self.last_busy_attempt = -1


def do_run(seed, run, plan, ftpseg, srcdata, real, workdir, caps, deadline):
    res = RunResult()
    src, sha = srcdata[plan.file]
    rundir = os.path.join(workdir, f"run-{run}")
    os.makedirs(rundir, exist_ok=True)
    out = os.path.join(rundir, plan.file)
    server_proc = None
    netns = caps["netns_obj"] if plan.netns else None
    try:
        if plan.server == "builtin":
            server_proc, base = start_builtin(ftpseg, caps["src_dir"], netns, plan.conn_rate, plan.max_conn,
                                              min(deadline, time.time() + 10))
            url = f"{base}/{plan.file}"
            server_pid = server_proc.pid
        else:
            name = plan.server + ("-limited" if plan.refused else "")
            s = real.by_name[name]
            url = f"ftp://{real.user}:{real.password}@127.0.0.1:{s['port']}/fault-campaign/{plan.file}"
            server_pid = s["pid"]
        argv = [ftpseg, "-q", "-n", str(plan.n), "--io", plan.io, "--checkpoint-interval", str(plan.checkpoint),
                "--stall-timeout", "5", "--straggler-timeout", "2", "--busy-retry", "1", "--max-tries", "50",
                "-o", out, url]
        if plan.server != "builtin":
            argv[1:1] = ["--limit-rate", str(plan.rate)]
        if netns:
            argv = netns.prefix() + argv
        events = list(plan.events)
        errlog = os.path.join(rundir, "stderr")

        def start():
            res.attempts += 1
            with open(errlog, "ab") as e:
                e.write(f"--- attempt {res.attempts}\n".encode())
                return spawn(argv, stdin=subprocess.DEVNULL, stdout=e, stderr=e, cwd=rundir), time.time()

        def busy_at_start(rc):
            """Exit 7 at the first contact because the per-IP limit is still full (the killed
            process's sessions not yet gone): ftpseg does not wait --busy-retry there. Counted,
            then the same command is run again after 0.5 s, as a user would."""
            if rc != 7 or not plan.refused or res.busy_start_retries >= 40:
                return False
            with open(errlog, errors="replace") as f:
                last = f.read().rsplit("--- attempt", 1)[-1]
            if "refused service" not in last:
                return False
            if res.last_busy_attempt != res.attempts - 1:
                res.busy_start += 1
            res.last_busy_attempt = res.attempts
            res.busy_start_retries += 1
            time.sleep(0.5)
            return True

        proc, t0 = start()
        while True:
            if not events:
                left = deadline - time.time()
                try:
                    rc = proc.wait(max(0.1, left))
                except subprocess.TimeoutExpired:
                    kill_group(proc.pid)
                    proc.wait()
                    res.reason = "timeout (the command did not end in time)"
                    break
                CLEAN.groups.discard(proc.pid)
                if busy_at_start(rc):
                    proc, t0 = start()
                    continue
                if rc != 0:
                    res.reason = f"exit {rc}: {tail(errlog)}"
                break
            kind, at, dur = events[0]
            # Wait for the fault's moment (from this attempt's start or the previous fault's end)
            # unless ftpseg ends first.
            try:
                proc.wait(max(0.0, t0 + at - time.time()))
                CLEAN.groups.discard(proc.pid)
                rc = proc.returncode
                if busy_at_start(rc):
                    proc, t0 = start()
                    continue
                # It ended before the fault: the fault did not land; the rest are skipped too.
                if rc != 0:
                    res.reason = f"exit {rc}: {tail(errlog)}"
                events.clear()
                break
            except subprocess.TimeoutExpired:
                pass
            events.pop(0)
            res.landed[kind] += 1
            if kind == "kill":
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                CLEAN.groups.discard(proc.pid)
                problems, claimed = check_claims(out, src)
                res.kills_checked += 1
                res.claimed_bytes += claimed
                if problems:
                    res.corrupt += [f"after kill {res.kills_checked}: {x}" for x in problems]
                proc, t0 = start()
            elif kind == "freeze":
                CLEAN.stopped.add(proc.pid)
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(dur)
                CLEAN.cont(proc.pid)
            elif kind == "session":
                if plan.server == "builtin":
                    pids = [server_pid]
                else:
                    pids = sessions_of(server_pid, proc.pid)
                if not pids:
                    res.landed[kind] -= 1   # no session of ours open at that moment
                for pid in pids:
                    CLEAN.stopped.add(pid)
                    try:
                        os.kill(pid, signal.SIGSTOP)
                    except OSError:
                        pass
                time.sleep(dur)
                for pid in pids:
                    CLEAN.cont(pid)
            elif kind == "outage":
                netns.down()
                time.sleep(dur)
                netns.up()
            if kind != "kill":
                t0 = time.time()    # the next fault's moment counts from this one's end
            if time.time() > deadline:
                kill_group(proc.pid)
                proc.wait()
                res.reason = "timeout (the run's time ran out during its faults)"
                break
        if plan.refused:
            res.landed["refused"] += 1
        if not res.reason:
            leftovers = [x for x in (".part", ".ftpseg", ".ftpseg.tmp") if os.path.exists(out + x)]
            try:
                with open(out, "rb") as f:
                    got = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                got = None
            if got != sha:
                res.bad_file = True
                res.reason = "output missing" if got is None else "output differs from the source"
            elif leftovers:
                res.reason = "left over: " + ", ".join(os.path.basename(out) + x for x in leftovers)
        res.ok = not res.reason and not res.corrupt
        if res.corrupt and not res.reason:
            res.reason = "corrupt claim"
        return res
    finally:
        if netns:
            try:
                netns.up()
            except Exception:
                pass
        if server_proc is not None:
            kill_group(server_proc.pid)
            reap(server_proc)
        if res.ok:
            shutil.rmtree(rundir, ignore_errors=True)


def tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            lines = [x.strip() for x in f if x.strip() and not x.startswith("--- attempt")]
        return " | ".join(lines[-n:]) or "(no message)"
    except OSError:
        return "(no stderr)"


# ----------------------------------------------------------------------------------------------

def find_ftpseg(arg):
    if arg:
        path = arg if os.path.isabs(arg) or os.sep in arg else shutil.which(arg) or arg
        if not os.access(path, os.X_OK):
            sys.exit(f"fault-campaign: --ftpseg {arg}: not an executable")
        return os.path.abspath(path)
    roots = [os.environ["CARGO_TARGET_DIR"]] if os.environ.get("CARGO_TARGET_DIR") else []
    roots.append(os.path.join(REPO, "target"))
    for root in roots:
        for profile in ("release", "debug"):
            p = os.path.join(root, profile, "ftpseg")
            if os.access(p, os.X_OK):
                return p
    sys.exit("fault-campaign: no ftpseg binary (build with `cargo build --release`, or pass --ftpseg PATH)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None, help="default: random (always printed)")
    ap.add_argument("--only", type=int, default=None, metavar="RUN", help="replay this one run of --seed")
    ap.add_argument("--ftpseg", default=None, help="binary (default: target/release/ftpseg, else target/debug)")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS))
    ap.add_argument("--time-limit", type=float, default=3600.0, metavar="SECS",
                    help="hard bound on the whole campaign (default 3600)")
    ap.add_argument("--run-timeout", type=float, default=90.0, metavar="SECS",
                    help="bound on one run, faults and resumes included (default 90)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    ap.add_argument("--quiet", action="store_true", help="print failed runs only (and the summary)")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**32)
    started = time.time()
    hard_end = started + args.time_limit
    ftpseg = find_ftpseg(args.ftpseg)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    log(f"fault campaign: seed {seed}, {args.runs} runs, time limit {args.time_limit:.0f} s, "
        f"binary {ftpseg} (repo at {commit})")

    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in wanted:
        if s not in ALL_SERVERS:
            sys.exit(f"fault-campaign: unknown server {s!r} (known: {', '.join(ALL_SERVERS)})")
    real = None
    if any(s in REAL for s in wanted):
        try:
            real = RealServers()
        except (OSError, ValueError, KeyError) as e:
            warn(f"no real servers ({e}); start them with `bash scripts/ftp-servers.sh start`")
    servers, skipped = [], []
    for s in wanted:
        if s == "builtin" or (real and real.available(s)):
            servers.append(s)
        else:
            skipped.append(s)
    if skipped:
        warn(f"skipped (not running): {', '.join(skipped)}; start them with `bash scripts/ftp-servers.sh start`")
    if not servers:
        sys.exit("fault-campaign: no server to run against")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(CLEAN.run)

    workdir = tempfile.mkdtemp(prefix="ftpseg-fault-campaign-")
    caps = {"netns": False, "netns_obj": None, "session": os.geteuid() == 0}
    if not caps["session"]:
        warn("not root: session freezes skipped (the servers' session processes belong to root)")
    if real:
        src_dir = os.path.join(real.served, "fault-campaign")
    else:
        src_dir = os.path.join(workdir, "served")
        CLEAN.dirs.append(workdir)
    try:
        srcdata = ensure_files(src_dir)
    except OSError as e:
        sys.exit(f"fault-campaign: cannot write the served files into {src_dir}: {e}")
    caps["src_dir"] = src_dir
    if "builtin" in servers:
        try:
            ns = Netns()
            CLEAN.netns = ns
            caps["netns"], caps["netns_obj"] = True, ns
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            warn(f"network namespaces not available ({e}): outages skipped, the built-in server runs "
                 "without one")

    runs = [args.only] if args.only is not None else list(range(1, args.runs + 1))
    totals = {"runs": 0, "ok": 0, "failed": 0, "corrupt_claims": 0, "bad_files": 0, "kills_checked": 0,
              "claimed_bytes_checked": 0, "attempts": 0, "busy_at_start": 0, "busy_at_start_reruns": 0}
    busy_runs = []
    drawn = {k: 0 for k in FAULT_KINDS}
    landed = {k: 0 for k in FAULT_KINDS}
    by_server = {s: 0 for s in servers}
    failures = []
    interrupted = stopped_by_limit = False
    server_stuck = None
    me = os.path.relpath(os.path.abspath(__file__))
    try:
        for run in runs:
            if time.time() + min(args.run_timeout, 30) > hard_end:
                stopped_by_limit = True
                break
            plan = plan_run(seed, run, servers, caps)
            if plan.server in REAL:
                name = plan.server + ("-limited" if plan.refused else "")
                if not greets(real.by_name[name]["port"]):
                    log(f"run {run}: {name} on port {real.by_name[name]['port']} does not greet within "
                        f"5 s: the server is stuck, stopping the campaign (restart it with "
                        f"`bash scripts/ftp-servers.sh stop; bash scripts/ftp-servers.sh start`)")
                    server_stuck = name
                    break
            t = time.time()
            res = do_run(seed, run, plan, ftpseg, srcdata, real, workdir, caps,
                         min(hard_end, t + args.run_timeout))
            dt = time.time() - t
            totals["runs"] += 1
            by_server[plan.server] += 1
            totals["attempts"] += res.attempts
            totals["busy_at_start"] += res.busy_start
            totals["busy_at_start_reruns"] += res.busy_start_retries
            if res.busy_start:
                busy_runs.append(run)
            totals["kills_checked"] += res.kills_checked
            totals["claimed_bytes_checked"] += res.claimed_bytes
            for k in plan.faults:
                drawn[k] += 1
            if plan.refused:
                drawn["refused"] += 1
            for k in FAULT_KINDS:
                landed[k] += res.landed[k]
            totals["corrupt_claims"] += len(res.corrupt)
            totals["bad_files"] += int(res.bad_file)
            status = "ok" if res.ok else f"FAILED ({res.reason})"
            if res.busy_start:
                status += f" [exit 7 at the first contact x{res.busy_start_retries}, run again]"
            line = (f"run {run} seed={seed} server={plan.server} file={plan.file} n={plan.n} io={plan.io} "
                    f"ckpt={plan.checkpoint} faults={describe(plan)}: {status} {dt:.1f} s")
            if res.ok:
                totals["ok"] += 1
                if not args.quiet:
                    log(line)
            else:
                totals["failed"] += 1
                for c in res.corrupt:
                    line += f"\n    corrupt claim: {c}"
                line += f"\n    files kept in {os.path.join(workdir, f'run-{run}')}"
                log(line)
                failures.append({"run": run, "reason": res.reason, "corrupt": res.corrupt,
                                 "replay": f"python3 {me} --seed {seed} --only {run} --ftpseg {ftpseg}"})
    except KeyboardInterrupt:
        interrupted = True
    finally:
        CLEAN.run()
    wall = time.time() - started
    if not failures and os.path.isdir(workdir):
        shutil.rmtree(workdir, ignore_errors=True)

    log("")
    log(f"fault campaign summary: seed {seed}, binary {ftpseg} (repo at {commit}), wall {wall:.0f} s")
    if interrupted:
        log(f"  interrupted after {totals['runs']} runs")
    if server_stuck:
        log(f"  stopped after {totals['runs']} runs: {server_stuck} stopped answering")
    if stopped_by_limit:
        log(f"  --time-limit {args.time_limit:.0f} s reached: {totals['runs']} of {len(runs)} runs ran")
    log(f"  runs: {totals['runs']} ({totals['ok']} ok, {totals['failed']} failed); by server: "
        + ", ".join(f"{s} {c}" for s, c in by_server.items()))
    log("  faults drawn (landed while ftpseg ran): "
        + ", ".join(f"{k} {drawn[k]} ({landed[k]})" for k in FAULT_KINDS))
    if not caps["netns"]:
        log("  outages: skipped (no network namespace)")
    log(f"  kills checked: {totals['kills_checked']} ({totals['claimed_bytes_checked'] / MIB:.1f} MiB of "
        f"claims compared with the source); ftpseg commands: {totals['attempts']}")
    if totals["busy_at_start"]:
        log(f"  note: {totals['busy_at_start']} times (runs {', '.join(map(str, busy_runs[:20]))}"
            f"{', ...' if len(busy_runs) > 20 else ''}) a command right after a kill exited 7 at once "
            f"(421 at the first contact: the server's per-IP slots still held by the killed "
            f"process's sessions) and was run again after 0.5 s ({totals['busy_at_start_reruns']} reruns)")
    log(f"  corrupt claims: {totals['corrupt_claims']}; bad files: {totals['bad_files']}; "
        f"failed runs: {totals['failed']}")
    for f in failures:
        log(f"  FAILED run {f['run']}: {f['reason']}\n    replay: {f['replay']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": seed, "binary": ftpseg, "commit": commit, "wall_s": round(wall, 1),
                       "runs_planned": len(runs), "interrupted": interrupted,
                       "stopped_by_time_limit": stopped_by_limit, "server_stuck": server_stuck, **totals, "by_server": by_server,
                       "faults_drawn": drawn, "busy_at_start_runs": busy_runs, "faults_landed": landed, "outages_possible": caps["netns"],
                       "failures": failures}, fh, indent=2)
            fh.write("\n")
    bad = totals["corrupt_claims"] or totals["bad_files"] or totals["failed"] or interrupted or server_stuck
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
