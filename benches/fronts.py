#!/usr/bin/env python3
"""Kernel cost of writing one new file from several fronts at once, with no network.

  python3 benches/fronts.py SIZE_GIB FRONTS falloc|plain early|late [lock] [--dir=DIR]

FRONTS threads each write their own 1/FRONTS of a new file in 128 KiB `pwrite`s (ftpseg's
largest write into the page cache); `falloc` reserves the whole file first (`posix_fallocate`,
as ftpseg does), `plain` leaves it sparse (as lftp and axel do); `early` starts each front's
write-back every 8 MiB (`sync_file_range`, as ftpseg does), `late` leaves it to the final
`fsync`; `lock` takes one lock around each write (ftpseg's writers do: ext4 serialises buffered
writes to a file, and waiters otherwise spin). Prints wall time and the process's user and
system CPU, `fsync` included. The file is created in DIR (default /tmp) and removed.
docs/benchmarks.md, "Session 7: what eight write fronts cost".
"""
import ctypes
import os
import resource
import sys
import threading
import time

args = [a for a in sys.argv[1:] if not a.startswith("--dir")]
folder = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--dir=")), "/tmp")
if len(args) < 4 or args[2] not in ("falloc", "plain") or args[3] not in ("early", "late"):
    sys.exit("usage: fronts.py SIZE_GIB FRONTS falloc|plain early|late [lock] [--dir=DIR]")
size = int(args[0]) << 30
fronts = int(args[1])
if not (1 <= int(args[0]) <= 64 and 1 <= fronts <= 64):
    sys.exit("fronts.py: SIZE_GIB and FRONTS must be 1-64")
falloc, early = args[2] == "falloc", args[3] == "early"
use_lock = len(args) > 4 and args[4] == "lock"
path = os.path.join(folder, "ftpseg-fronts-%d.bin" % os.getpid())
libc = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2
CHUNK = 128 << 10
lock = threading.Lock()
buf = bytes(range(256)) * (CHUNK // 256)
part = size // fronts

os.system("sync")
time.sleep(1)
t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
try:
    if falloc:
        os.posix_fallocate(fd, 0, size)

    def front(i):
        off, end = i * part, (i + 1) * part
        last = off
        while off < end:
            if use_lock:
                with lock:
                    os.pwrite(fd, buf, off)
            else:
                os.pwrite(fd, buf, off)
            off += CHUNK
            if early and off - last >= 8 << 20:
                libc.sync_file_range(fd, ctypes.c_longlong(last), ctypes.c_longlong(off - last),
                                     SYNC_FILE_RANGE_WRITE)
                last = off

    threads = [threading.Thread(target=front, args=(i,)) for i in range(fronts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.fsync(fd)
finally:
    os.close(fd)
    os.unlink(path)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(f"{args[0]} GiB, {fronts} fronts, {args[2]}, {args[3]}, {'lock' if use_lock else 'no lock'}: "
      f"{time.monotonic() - t0:.2f} s wall, {r1.ru_utime - r0.ru_utime:.2f} user, "
      f"{r1.ru_stime - r0.ru_stime:.2f} sys")
