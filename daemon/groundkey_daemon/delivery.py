"""Key delivery over ZeroMQ: ROUTER + CURVE + a ZAP allow-list of consumer keys.

Consumers connect a DEALER (or REQ) socket with their CURVE key pair; only
public keys found in the allow-list directory (``*.key`` certificate files, as
``zmq.auth.create_certificates`` writes them) pass the ZAP handshake, so an
unknown client never gets a reply. The consumer's identity is its CURVE public
key (Z85), taken from the ZAP ``User-Id`` of each message.

Wire protocol: one JSON object per message (last frame).

Requests (``op`` tag)::

    {"op": "get", "request_id": "<id>", "bytes": N}        reserve >= N bytes
    {"op": "get_ids", "request_id": "<id>", "key_ids": [...]}  the peer's key IDs
    {"op": "ack", "request_id": "<id>"}                    received: erase them

Replies::

    {"ok": true, "op": "get", "request_id": ..., "keys": [{"key_ID": uuid, "key": base64}]}
    {"ok": true, "op": "ack", "request_id": ..., "erased": n}
    {"ok": false, "error": "bad_request|insufficient_key|unavailable|conflict|internal",
     "message": "...", "request_id": ...}

Delivery is at most once per key: keys are reserved (committed) for the
consumer and request ID before the reply is sent; repeating the request ID
(after a lost reply or a server crash) returns the same keys to the same
consumer; ``ack`` erases them. A malformed request reserves nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import msgspec
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from groundkey_daemon.keystore import (
    InsufficientKeyError,
    KeyStore,
    KeyUnavailableError,
    RequestConflictError,
    Reservation,
)
from groundkey_daemon.metrics import Metrics

__all__ = [
    "DeliveryClient",
    "DeliveryError",
    "DeliveryServer",
    "DeliveryTimeoutError",
    "create_key_pair",
    "load_key_pair",
    "load_public_key",
]

log = logging.getLogger(__name__)
LINGER_MS = 1000


class DeliveryError(Exception):
    """An error reply from the server (``code`` is the wire error code)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """No reply in time (server down, or our key is not on its allow-list)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__("timeout", f"no reply within {timeout_s:g} s")


# -- wire messages ------------------------------------------------------------------------


class _Req(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    request_id: str


class GetRequest(_Req, tag="get"):
    bytes: int


class GetIdsRequest(_Req, tag="get_ids"):
    key_ids: list[str]


class AckRequest(_Req, tag="ack"):
    pass


Request = GetRequest | GetIdsRequest | AckRequest
_request_decoder = msgspec.json.Decoder(Request)
_json = msgspec.json.Encoder()

ErrorCode = Literal["bad_request", "insufficient_key", "unavailable", "conflict", "internal"]


def _error(code: ErrorCode, message: str, request_id: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message, "request_id": request_id}


# -- key files ----------------------------------------------------------------------------


def create_key_pair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` (mode 0600) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(str(d), name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


def load_key_pair(secret_file: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` certificate file."""
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file}: no secret key in this certificate")
    return public, secret


def load_public_key(file: str | os.PathLike[str]) -> bytes:
    public, _ = zmq.auth.load_certificate(str(file))
    return public


# -- server -------------------------------------------------------------------------------


class DeliveryServer:
    """Serve key requests from allow-listed consumers out of a :class:`KeyStore`."""

    def __init__(
        self,
        store: KeyStore,
        *,
        bind: str,
        server_secret_key_file: str | os.PathLike[str],
        allow_dir: str | os.PathLike[str],
        max_request_bytes: int = 1 << 20,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.bind = bind
        self.server_secret_key_file = Path(server_secret_key_file)
        self.allow_dir = Path(allow_dir)
        self.max_request_bytes = max_request_bytes
        self.endpoint = ""
        self.delivered_bytes = 0
        self.rejected_requests = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._sock: zmq.asyncio.Socket | None = None

    def __repr__(self) -> str:
        return f"DeliveryServer(bind={self.bind!r}, allow_dir={str(self.allow_dir)!r})"

    async def start(self) -> str:
        """Start ZAP and bind; returns the bound endpoint (real port for ``:0``/``:*``)."""
        public, secret = load_key_pair(self.server_secret_key_file)
        if not self.allow_dir.is_dir():
            raise FileNotFoundError(f"allow-list directory {self.allow_dir} does not exist")
        self._ctx = zmq.asyncio.Context()
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.allow_dir))
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        sock.bind(self.bind[:-2] + ":*" if self.bind.endswith(":0") else self.bind)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("key delivery listening on %s", self.endpoint)
        return self.endpoint

    def reload_allow_list(self) -> None:
        """Re-read the allow-list directory (e.g. on SIGHUP)."""
        if self._auth is not None:
            self._auth.configure_curve(domain="*", location=str(self.allow_dir))

    async def serve(self) -> None:
        """Answer requests until cancelled."""
        if self._sock is None:
            await self.start()
        sock = self._sock
        assert sock is not None
        while True:
            frames = await sock.recv_multipart(copy=False)
            envelope = [f.bytes for f in frames[:-1]]
            body = frames[-1]
            consumer = body.get("User-Id")
            before = self.delivered_bytes
            reply = await self.handle(str(consumer), body.bytes)
            if self.metrics is not None:
                result = "ok" if reply["ok"] else str(reply["error"])
                self.metrics.delivery_requests.labels(result=result).inc()
                self.metrics.key_bits_delivered.inc(8 * (self.delivered_bytes - before))
            try:
                await sock.send_multipart([*envelope, _json.encode(reply)])
            except zmq.ZMQError as exc:
                # ROUTER_MANDATORY: the consumer is gone. Its reservation stays; it can
                # repeat the request ID to get the same keys.
                log.warning("reply to %s not routable: %s", consumer, exc)

    async def expire_loop(self, ttl_s: float, *, interval_s: float = 60.0) -> None:
        """Erase reservations never acknowledged within ``ttl_s`` (run as a task)."""
        while True:
            await self.store.expire_reservations(ttl_s)
            await asyncio.sleep(interval_s)

    async def handle(self, consumer: str, body: bytes) -> dict[str, Any]:
        """One request -> one reply document (no exceptions escape)."""
        try:
            request = _request_decoder.decode(body)
        except msgspec.DecodeError as exc:
            self.rejected_requests += 1
            return _error("bad_request", f"malformed request: {exc}")
        rid = request.request_id
        if not rid or len(rid) > 128:
            self.rejected_requests += 1
            return _error("bad_request", "request_id must be 1..128 characters")
        try:
            if isinstance(request, AckRequest):
                erased = await self.store.acknowledge(consumer, rid)
                return {"ok": True, "op": "ack", "request_id": rid, "erased": erased}
            if isinstance(request, GetRequest):
                if not 1 <= request.bytes <= self.max_request_bytes:
                    self.rejected_requests += 1
                    return _error("bad_request", f"bytes must be 1..{self.max_request_bytes}", rid)
                reservation = await self.store.reserve(consumer, rid, request.bytes)
            else:
                if not request.key_ids:
                    return _error("bad_request", "key_ids is empty", rid)
                reservation = await self.store.reserve_ids(consumer, rid, request.key_ids)
        except InsufficientKeyError as exc:
            return _error("insufficient_key", str(exc), rid)
        except KeyUnavailableError as exc:
            return _error("unavailable", str(exc), rid)
        except RequestConflictError as exc:
            return _error("conflict", str(exc), rid)
        except Exception:
            log.exception("key request %s failed", rid)
            return _error("internal", "internal error; nothing was delivered", rid)
        self.delivered_bytes += reservation.n_bytes
        return _reply_keys(request.__struct_config__.tag, reservation)

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=LINGER_MS)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


def _reply_keys(op: object, reservation: Reservation) -> dict[str, Any]:
    return {
        "ok": True,
        "op": op,
        "request_id": reservation.request_id,
        "keys": [
            {"key_ID": k.key_id, "key": base64.b64encode(k.material).decode()}
            for k in reservation.keys
        ],
    }


# -- client -------------------------------------------------------------------------------


class DeliveredKey(msgspec.Struct):
    key_ID: str  # ETSI GS QKD 014 field names
    key: str

    @property
    def material(self) -> bytes:
        return base64.b64decode(self.key)

    def __repr__(self) -> str:
        return f"DeliveredKey({self.key_ID!r})"


class _Reply(msgspec.Struct):
    ok: bool
    op: str | None = None
    request_id: str | None = None
    keys: list[DeliveredKey] = []
    erased: int = 0
    error: str = ""
    message: str = ""


class DeliveryClient:
    """Reference consumer: DEALER + CURVE. One request at a time."""

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: bytes,
        client_secret_key_file: str | os.PathLike[str],
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.server_public_key = server_public_key
        self.client_secret_key_file = Path(client_secret_key_file)
        self.timeout_s = timeout_s
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    def __repr__(self) -> str:
        return f"DeliveryClient({self.endpoint!r})"

    async def __aenter__(self) -> DeliveryClient:
        public, secret = load_key_pair(self.client_secret_key_file)
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey = self.server_public_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.connect(self.endpoint)
        self._sock = sock
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def request(self, message: dict[str, Any] | bytes) -> _Reply:
        if self._sock is None:
            raise RuntimeError("client not connected (use async with)")
        data = message if isinstance(message, bytes) else _json.encode(message)
        await self._sock.send(data)
        if not await self._sock.poll(int(self.timeout_s * 1000)):
            raise DeliveryTimeoutError(self.timeout_s)
        reply = msgspec.json.decode(await self._sock.recv(), type=_Reply)
        if not reply.ok:
            raise DeliveryError(reply.error, reply.message)
        return reply

    async def get(self, n_bytes: int, request_id: str | None = None) -> list[DeliveredKey]:
        rid = request_id or str(uuid.uuid4())
        reply = await self.request({"op": "get", "request_id": rid, "bytes": n_bytes})
        return reply.keys

    async def get_ids(self, key_ids: list[str], request_id: str) -> list[DeliveredKey]:
        reply = await self.request({"op": "get_ids", "request_id": request_id, "key_ids": key_ids})
        return reply.keys

    async def ack(self, request_id: str) -> int:
        reply = await self.request({"op": "ack", "request_id": request_id})
        return reply.erased
