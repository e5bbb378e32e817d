"""The satellite's link endpoint: a ZeroMQ ROUTER serving :class:`SatellitePeer`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import zmq

from groundkey_protocol.qkd.distill import KeyBlock
from groundkey_sim.satellite.peer import SatellitePeer

__all__ = ["KeyDirectory", "SatelliteServer"]

log = logging.getLogger(__name__)


class KeyDirectory:
    """Alice's committed keys as files (``<block_id>.key``, 0600) for bench comparisons."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyDirectory({str(self.path)!r})"

    def __call__(self, key: KeyBlock) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path / f"{key.block_id}.key"
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key.material[: key.key_bits // 8])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)


class SatelliteServer:
    """Blocking ROUTER loop (the simulator's process does nothing else)."""

    def __init__(self, peer: SatellitePeer, bind: str) -> None:
        self.peer = peer
        self.bind = bind
        self.endpoint = ""
        self.stopped = False
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None

    def __repr__(self) -> str:
        return f"SatelliteServer({self.endpoint or self.bind!r})"

    def start(self) -> str:
        """Bind; returns the endpoint (with the real port for ``:0``)."""
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind(self.bind[:-2] + ":*" if self.bind.endswith(":0") else self.bind)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def serve(self, max_messages: int | None = None) -> None:
        """Answer until killed (or after ``max_messages``)."""
        if self._sock is None:
            self.start()
        sock = self._sock
        assert sock is not None
        n = 0
        while not self.stopped and (max_messages is None or n < max_messages):
            if not sock.poll(100, zmq.POLLIN):
                continue
            n += 1
            identity, *frames = sock.recv_multipart()
            for reply in self.peer.handle(frames):
                try:
                    sock.send_multipart([identity, *reply])
                except zmq.ZMQError as exc:
                    log.warning("station gone: %s", exc)
                    break

    def stop(self) -> None:
        """Make :meth:`serve` return (safe from a signal handler)."""
        self.stopped = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
