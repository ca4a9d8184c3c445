"""Running under a supervisor: systemd's notify protocol (readiness, status,
the watchdog, stopping), spoken directly on $NOTIFY_SOCKET with no
dependency. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

READY=1 is sent once the kernel programs are attached and the agent reads
their ring: from then on nothing is missed. WATCHDOG=1 is sent every half
of WatchdogSec while both agent threads are alive and have looked at their
work recently; a wedged agent stops pinging and systemd restarts it."""
from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, env=None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr[0] == "@":
            addr = "\0" + addr[1:]          # abstract namespace
        self.addr = addr
        self.interval = None                # seconds between watchdog pings
        usec = env.get("WATCHDOG_USEC")
        wpid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not wpid or wpid == str(os.getpid())):
            self.interval = int(usec) / 2e6
        self.sent = 0
        self.errors = 0
        self._last_ping = 0.0

    @property
    def active(self) -> bool:
        return self.addr is not None

    def send(self, *fields: str) -> bool:
        if self.addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.addr)
                s.sendall("\n".join(fields).encode())
            self.sent += 1
            return True
        except OSError:
            self.errors += 1
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping: draining the ring")

    def wait_step(self, default: float = 1.0) -> float:
        """How long the main loop may sleep before the next ping is due."""
        return min(default, self.interval) if self.interval else default

    def ping(self, healthy: bool, status: str | None = None) -> bool:
        """WATCHDOG=1 (with a status) when due and healthy; nothing when not."""
        if not self.interval or not healthy:
            return False
        now = time.monotonic()
        if now - self._last_ping < self.interval * 0.9:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1", *([f"STATUS={status}"] if status else []))
