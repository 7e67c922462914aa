#!/usr/bin/env python3
"""One pyftpdlib FTP server instance for ftpseg's tests (started by scripts/ftp-servers.sh).

Serves one folder read-only to `anonymous` and to one user with a password (who may also write
in the --upload folder), on one address,
optionally with each data connection capped at RATE bytes/s and a per-IP connection limit.
Runs in the foreground until SIGTERM; logs (commands, logins, transfers) go to stderr, which
the caller redirects to the instance's log file.

The password comes from the environment (FTPSEG_FTP_PASSWORD), never from the command line,
so it does not show in `ps`.

Why a throttle of our own: pyftpdlib's stock ThrottledDTPHandler counts bytes in one-second
windows and sleeps only after the second window's worth, so a transfer runs as bursts of
2 x RATE at full speed followed by 2 s pauses (a 16 MiB file at 4 MiB/s arrives in ~2 s, not
~4 s). ftpseg's tests measure speed-up per connection, so by default we pace every send against
the clock since the transfer began (same mechanism: del_channel + call_later, so the ioloop
stays responsive). `--throttle stock` keeps pyftpdlib's own behaviour.
"""

import argparse
import logging
import os
import signal
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.ioloop import timer
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer


class PacedDTPHandler(ThrottledDTPHandler):
    """ThrottledDTPHandler whose limit holds from the first byte: after each send or receive,
    if the bytes moved so far are ahead of RATE x elapsed by more than a few milliseconds,
    the channel sleeps exactly that long."""

    def __init__(self, sock, cmd_channel):
        super().__init__(sock, cmd_channel)
        self._pace_start = None
        self._pace_bytes = 0

    def _throttle_bandwidth(self, len_chunk, max_speed):
        now = timer()
        if self._pace_start is None:
            self._pace_start = now
        self._pace_bytes += len_chunk
        ahead = self._pace_bytes / float(max_speed) - (now - self._pace_start)
        if ahead > 0.005:

            def unsleep():
                event = self.ioloop.READ if self.receive else self.ioloop.WRITE
                self.add_channel(events=event)

            self.del_channel()
            self._cancel_throttler()
            self._throttler = self.ioloop.call_later(ahead, unsleep, _errback=self.handle_error)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True, help="served folder (login folder of both users)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--passive-ports", required=True, help="FIRST-LAST")
    ap.add_argument("--rate", type=int, default=0, help="bytes/s per data connection, 0 = none")
    ap.add_argument("--max-per-ip", type=int, default=0, help="0 = unlimited")
    ap.add_argument("--throttle", choices=["paced", "stock"], default="paced")
    ap.add_argument("--state", required=True, help="instance folder (marks the process as ours)")
    ap.add_argument("--upload", help="folder inside --root where the user (not anonymous) may write")
    args = ap.parse_args()

    password = os.environ.get("FTPSEG_FTP_PASSWORD")
    if not password:
        sys.exit("pyftpd.py: FTPSEG_FTP_PASSWORD is not set")

    authorizer = DummyAuthorizer()
    # "elr": change folder, list, read. Nothing can be written.
    authorizer.add_user(args.user, password, args.root, perm="elr")
    authorizer.add_anonymous(args.root, perm="elr")
    if args.upload:
        # Write, append, rename, delete, make folders, in the upload folder only.
        authorizer.override_perm(args.user, args.upload, perm="elradfmw", recursive=True)

    handler = FTPHandler
    handler.authorizer = authorizer
    first, last = (int(p) for p in args.passive_ports.split("-"))
    handler.passive_ports = range(first, last + 1)
    if args.rate:
        dtp = PacedDTPHandler if args.throttle == "paced" else ThrottledDTPHandler
        # read_limit caps what the server receives (uploads), write_limit what it sends
        # (downloads, RETR): set both.
        dtp.read_limit = args.rate
        dtp.write_limit = args.rate
        handler.dtp_handler = dtp

    config_logging(level=logging.INFO)
    server = FTPServer((args.host, args.port), handler)
    server.max_cons = 512
    server.max_cons_per_ip = args.max_per_ip

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
