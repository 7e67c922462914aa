#!/usr/bin/env python3
"""Small helpers for scripts/ftp-servers.sh that are awkward in bash: waiting for FTP greetings,
probing ports, checking a shadow password, writing and reading servers.json.

Standard library only; run with the system python3. Every network wait has a timeout and only
127.0.0.1 / ::1 style addresses given by the caller are contacted.
"""

import json
import os
import socket
import sys
import time


def read_greeting(host, port, timeout):
    """Connect, read the greeting (all lines of a multi-line reply). Returns (code, text) or
    raises OSError / socket.timeout. Sends QUIT so that the server frees the slot at once."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete greeting")
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
            lines = buf.split(b"\r\n")
            # A reply ends with a line "DDD text" (space after the code), possibly after "DDD-" lines.
            done = [ln for ln in lines[:-1] if len(ln) >= 4 and ln[:3].isdigit() and ln[3:4] == b" "]
            if done:
                break
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    text = buf.decode("utf-8", "replace").strip()
    code = int(text[:3]) if text[:3].isdigit() else 0
    return code, text


def up_codes(busy_ok):
    # 421 is how vsftpd, pure-ftpd and pyftpdlib greet a connection over the per-IP (or total)
    # limit: the server runs, tests just hold all its slots.
    return (220, 421) if busy_ok == "busy-ok" else (220,)


def cmd_greet(host, port, timeout="3", busy_ok=""):
    """Exit 0 and print the greeting if the server answers 220 (or 421 with busy-ok) within
    TIMEOUT seconds."""
    try:
        code, text = read_greeting(host, int(port), float(timeout))
    except OSError as e:
        print(f"no greeting: {e}")
        return 1
    print(text.splitlines()[-1] if text else "(empty)")
    return 0 if code in up_codes(busy_ok) else 1


def cmd_port_free(host, port):
    """Exit 0 if nothing accepts connections on HOST:PORT (connection refused)."""
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return 1
    except ConnectionRefusedError:
        return 0
    except OSError:
        # Timeouts or other errors: something odd is there; treat as busy.
        return 1


def pid_alive(pid, start):
    """True if process PID exists and started at START (clock ticks since boot, field 22 of
    /proc/PID/stat), so a recycled pid never counts as ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); field 22 is fields[19]
    if fields[0] == "Z":
        return False
    return fields[19] == str(start)


def cmd_wait(timeout, *specs):
    """SPECS are NAME:HOST:PORT:PID:START. Wait until each answers a 220 greeting, at most
    TIMEOUT seconds in all. Prints the names that did not (and why) and exits 1 if any.
    A first spec "busy-ok" also accepts a 421 greeting (all per-IP slots taken)."""
    codes = up_codes(specs[0] if specs else "")
    if specs and specs[0] == "busy-ok":
        specs = specs[1:]
    deadline = time.monotonic() + float(timeout)
    pending = {}
    for spec in specs:
        name, host, port, pid, start = spec.rsplit(":", 4)
        pending[name] = (host, int(port), int(pid), start)
    why = {}
    while pending and time.monotonic() < deadline:
        for name, (host, port, pid, start) in list(pending.items()):
            if not pid_alive(pid, start):
                why[name] = f"process {pid} exited"
                del pending[name]
                continue
            try:
                code, text = read_greeting(host, port, 2.0)
            except OSError as e:
                why[name] = f"no greeting on {host}:{port} ({e})"
                continue
            if code in codes:
                why.pop(name, None)
                del pending[name]
            else:
                why[name] = f"greeting on {host}:{port} was {text!r}"
        if pending:
            time.sleep(0.2)
    for name in pending:
        why.setdefault(name, "timed out")
    for name, reason in why.items():
        print(f"{name}\t{reason}")
    return 1 if why else 0


def cmd_alive(pid, start):
    return 0 if pid_alive(int(pid), start) else 1


def cmd_check_password(user, password_env):
    """Exit 0 if USER's shadow hash matches the password in environment variable PASSWORD_ENV."""
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still present; only used here

    password = os.environ[password_env]
    try:
        with open("/etc/shadow") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if parts[0] == user and len(parts) > 1:
                    h = parts[1]
                    return 0 if h and h[0] == "$" and crypt.crypt(password, h) == h else 1
    except OSError:
        pass
    return 1


def cmd_write_json(path, served, user, password_env, rate, max_per_ip, base_port, table, files):
    """TABLE: TSV lines name kind variant host port pid start log transfer_log pasv_min pasv_max
    rate max_per_ip config. FILES: TSV lines path size."""
    servers = []
    with open(table) as f:
        for line in f:
            (name, kind, variant, host, port, pid, start, log, xfer, pmin, pmax, r, m, conf) = (
                line.rstrip("\n").split("\t")
            )
            servers.append(
                {
                    "name": name,
                    "kind": kind,
                    "variant": variant,
                    "host": host,
                    "port": int(port),
                    "pid": int(pid),
                    "pid_start_ticks": int(start),
                    "log": log,
                    "transfer_log": xfer,
                    "config": conf,
                    "passive_ports": [int(pmin), int(pmax)],
                    "rate": int(r),
                    "max_per_ip": int(m),
                }
            )
    file_list = []
    with open(files) as f:
        for line in f:
            p, size = line.rstrip("\n").split("\t")
            file_list.append({"path": p, "size": int(size)})
    state = {
        "served": served,
        "user": user,
        "password": os.environ[password_env],
        "rate": int(rate),
        "max_per_ip": int(max_per_ip),
        "base_port": int(base_port),
        "servers": servers,
        "files": file_list,
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return 0


def cmd_read_state(path):
    """Print 'rate max_per_ip base_port served' then one TSV line per server:
    name kind variant host port pid start log."""
    with open(path) as f:
        state = json.load(f)
    print(state["rate"], state["max_per_ip"], state.get("base_port", 0), state["served"], sep="\t")
    for s in state["servers"]:
        print(
            s["name"], s["kind"], s["variant"], s["host"], s["port"], s["pid"],
            s.get("pid_start_ticks", 0), s["log"], sep="\t",
        )
    return 0


COMMANDS = {
    "greet": cmd_greet,
    "port-free": cmd_port_free,
    "wait": cmd_wait,
    "alive": cmd_alive,
    "check-password": cmd_check_password,
    "write-json": cmd_write_json,
    "read-state": cmd_read_state,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: helper.py {{{'|'.join(COMMANDS)}}} ARGS...")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
