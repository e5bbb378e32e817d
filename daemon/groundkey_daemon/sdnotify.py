"""sd_notify over an AF_UNIX datagram socket (no libsystemd), plus a progress-gated watchdog.

``$NOTIFY_SOCKET`` may name a path or, with a leading ``@``, an abstract-namespace
socket. Without it (not under systemd) every call is a no-op returning False.
The watchdog pings ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, but only if
:meth:`Watchdog.progress` was called since the last ping: a wedged service stops
pinging and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

__all__ = ["Watchdog", "dropped", "notify", "watchdog_interval_s"]

_dropped = 0


def dropped() -> int:
    """Notifications dropped so far because the notify socket's queue was full."""
    return _dropped


def notify(state: str, *, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=tracking"``); False when not under systemd.

    Never blocks the event loop: the datagram is sent with ``MSG_DONTWAIT`` and
    dropped (counted in :func:`dropped`) when the receiver's queue is full.
    """
    global _dropped
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "@/":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    with socket.socket(socket.AF_UNIX, flags) as sock:
        try:
            sock.connect(address)
            sock.send(state.encode(), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            _dropped += 1
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                _dropped += 1
            return False
    return True


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when no watchdog is set for us."""
    e = env if env is not None else os.environ
    pid = e.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(e.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog:
    """Pings the systemd watchdog while the service reports progress."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.interval_s = watchdog_interval_s(env)
        self.pings = 0
        self._progressed = True

    def progress(self) -> None:
        """Call from the main work loop(s) each time they advance."""
        self._progressed = True

    async def run(self) -> None:
        if self.interval_s is None:
            return
        while True:
            if self._progressed:
                self._progressed = False
                if notify("WATCHDOG=1", env=self.env):
                    self.pings += 1
            await asyncio.sleep(self.interval_s)
