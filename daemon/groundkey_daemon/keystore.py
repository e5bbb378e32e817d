"""Durable key store: SQLite (WAL, synchronous=FULL) in the state directory.

A distilled key block is split into fixed-size keys (``key_size_bytes``, whole
keys only; a remainder is never stored). Key IDs are derived, not random:
``uuid5(block_id, str(index))``, so the peer station, which holds the same block
under the same UUID, derives the same key IDs and a consumer there can look up
"its" half of a key by ID (:meth:`KeyStore.reserve_ids`).

State machine of one key (one row of ``keys``; every transition is one SQLite
transaction, so a SIGKILL leaves each key in exactly one state)::

    available --reserve(consumer, request_id)--> reserved --ack--> acknowledged
                                                     \\--expire(ttl)--> expired

- ``store(block)`` commits block and keys before it returns; only then may the
  caller announce them (telemetry, metrics).
- ``reserve`` assigns keys to one consumer and one request ID, and returns the
  material. The server sends the material only after that commit. After a crash
  a reservation is never released to the pool (its material may have left the
  process): the same consumer repeating the same request ID gets the very same
  keys (an idempotent retry, not a second delivery), anyone else never does.
- ``acknowledge`` (consumer confirms receipt) erases the material: the BLOB is
  set to NULL with ``secure_delete`` on (freed pages are zeroed) and the WAL is
  checkpointed and truncated. Metadata stays for audit.
- ``expire_reservations`` erases reservations nobody came back for.

So after SIGKILL at any point no key is lost (it is available, or reserved to
exactly one consumer), duplicated or delivered to two consumers.

All sqlite3 calls run in one dedicated thread; the event loop never blocks.
Key material is never in repr, logs or exception messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

__all__ = [
    "DB_NAME",
    "InsufficientKeyError",
    "Key",
    "KeyBlock",
    "KeyState",
    "KeyStore",
    "KeyStoreError",
    "KeyUnavailableError",
    "RequestConflictError",
    "Reservation",
    "key_ids_for",
]

log = logging.getLogger(__name__)
DB_NAME = "keys.sqlite3"
T = TypeVar("T")


class KeyStoreError(Exception):
    """Base of key-store errors (never carries key material)."""


class InsufficientKeyError(KeyStoreError):
    """Not enough available key for a request; nothing was reserved."""

    def __init__(self, requested_bytes: int, available_bytes: int) -> None:
        self.requested_bytes = requested_bytes
        self.available_bytes = available_bytes
        super().__init__(
            f"requested {requested_bytes} bytes, only {available_bytes} bytes available"
        )


class KeyUnavailableError(KeyStoreError, LookupError):
    """A key ID that is unknown or not available to this consumer."""


class RequestConflictError(KeyStoreError):
    """A request ID reused by another consumer or for a different request."""


class KeyState(enum.StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    ACKNOWLEDGED = "acknowledged"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """A distilled key block as it leaves privacy amplification."""

    block_id: str
    pass_id: str
    peer: str
    material: bytes = field(repr=False)
    qber: float
    eps_sec: float
    eps_cor: float
    secret_fraction: float = 0.0
    created_s: float = field(default_factory=time.time)

    @property
    def length_bits(self) -> int:
        return len(self.material) * 8

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    block_id: str
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reservation:
    consumer: str
    request_id: str
    keys: tuple[Key, ...]

    @property
    def n_bytes(self) -> int:
        return sum(len(k.material) for k in self.keys)


def key_ids_for(block_id: str, n_keys: int) -> list[str]:
    """Deterministic key IDs of a block (both ends of the link agree on them)."""
    base = uuid.UUID(block_id)
    return [str(uuid.uuid5(base, str(i))) for i in range(n_keys)]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    block_id TEXT PRIMARY KEY,
    pass_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    length_bits INTEGER NOT NULL,
    qber REAL NOT NULL,
    eps_sec REAL NOT NULL,
    eps_cor REAL NOT NULL,
    secret_fraction REAL NOT NULL,
    created_s REAL NOT NULL,
    key_size_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    block_id TEXT NOT NULL REFERENCES blocks(block_id),
    idx INTEGER NOT NULL,
    length_bytes INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available','reserved','acknowledged','expired')),
    consumer TEXT,
    request_id TEXT,
    material BLOB,
    reserved_s REAL,
    erased_s REAL,
    CHECK ((state IN ('available','reserved')) = (material IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS keys_state ON keys(state, block_id, idx);
CREATE INDEX IF NOT EXISTS keys_request ON keys(request_id);
"""


class KeyStore:
    """Async facade over the SQLite key store in ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str], *, key_size_bytes: int = 32) -> None:
        if key_size_bytes < 1:
            raise ValueError("key_size_bytes must be >= 1")
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.key_size_bytes = key_size_bytes
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, key_size_bytes={self.key_size_bytes})"

    # -- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise KeyStoreError("key store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keystore"
        )
        try:
            await self._call(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        with contextlib.suppress(Exception):
            await self._call(self._close_sync)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _open_sync(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)
        self._conn = conn

    def _close_sync(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise KeyStoreError("key store is not open")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- store -------------------------------------------------------------------------

    async def store(self, block: KeyBlock) -> list[str]:
        """Store a block durably (committed, fsynced) and return its key IDs."""
        return await self._call(self._store_sync, block)

    def _store_sync(self, block: KeyBlock) -> list[str]:
        size = self.key_size_bytes
        n_keys = len(block.material) // size
        ids = key_ids_for(block.block_id, n_keys)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    block.block_id,
                    block.pass_id,
                    block.peer,
                    block.length_bits,
                    block.qber,
                    block.eps_sec,
                    block.eps_cor,
                    block.secret_fraction,
                    block.created_s,
                    size,
                ),
            )
            conn.executemany(
                "INSERT INTO keys (key_id, block_id, idx, length_bytes, state, material)"
                " VALUES (?,?,?,?,'available',?)",
                (
                    (kid, block.block_id, i, size, block.material[i * size : (i + 1) * size])
                    for i, kid in enumerate(ids)
                ),
            )
        log.info("stored key block %s: %d keys of %d bytes", block.block_id, n_keys, size)
        return ids

    # -- reserve -----------------------------------------------------------------------

    async def reserve(self, consumer: str, request_id: str, n_bytes: int) -> Reservation:
        """Reserve at least ``n_bytes`` (whole keys, oldest first) for ``consumer``.

        Idempotent: repeating ``(consumer, request_id)`` returns the same keys.
        All or nothing: raises InsufficientKeyError and reserves nothing.
        """
        if n_bytes < 1:
            raise ValueError("n_bytes must be >= 1")
        return await self._call(self._reserve_sync, consumer, request_id, n_bytes, None)

    async def reserve_ids(
        self, consumer: str, request_id: str, key_ids: Sequence[str]
    ) -> Reservation:
        """Reserve the keys with these IDs (the peer's consumer named them)."""
        if not key_ids:
            raise ValueError("no key IDs given")
        unique = list(dict.fromkeys(key_ids))
        return await self._call(self._reserve_sync, consumer, request_id, 0, unique)

    def _existing(self, conn: sqlite3.Connection, consumer: str, request_id: str) -> list[Key]:
        rows = conn.execute(
            "SELECT key_id, block_id, material, consumer, state FROM keys"
            " WHERE request_id = ? ORDER BY block_id, idx",
            (request_id,),
        ).fetchall()
        if any(r[3] != consumer for r in rows):
            raise RequestConflictError(f"request ID {request_id!r} belongs to another consumer")
        if any(r[4] != KeyState.RESERVED for r in rows):
            raise RequestConflictError(f"request {request_id!r} was already acknowledged")
        return [Key(r[0], r[1], bytes(r[2])) for r in rows]

    def _reserve_sync(
        self, consumer: str, request_id: str, n_bytes: int, key_ids: list[str] | None
    ) -> Reservation:
        now = time.time()
        with self._tx() as conn:
            existing = self._existing(conn, consumer, request_id)
            if existing:
                wanted = {k.key_id for k in existing}
                if key_ids is not None and set(key_ids) != wanted:
                    raise RequestConflictError(f"request ID {request_id!r} reused for other keys")
                if key_ids is None and sum(len(k.material) for k in existing) < n_bytes:
                    raise RequestConflictError(f"request ID {request_id!r} reused for more bytes")
                return Reservation(consumer, request_id, tuple(existing))
            if key_ids is None:
                rows = self._pick_available(conn, n_bytes)
            else:
                rows = self._pick_ids(conn, key_ids)
            conn.executemany(
                "UPDATE keys SET state='reserved', consumer=?, request_id=?, reserved_s=?"
                " WHERE key_id=? AND state='available'",
                ((consumer, request_id, now, r[0]) for r in rows),
            )
        log.info("reserved %d keys for %s (request %s)", len(rows), consumer, request_id)
        return Reservation(consumer, request_id, tuple(Key(r[0], r[1], bytes(r[2])) for r in rows))

    def _pick_available(
        self, conn: sqlite3.Connection, n_bytes: int
    ) -> list[tuple[str, str, bytes]]:
        picked: list[tuple[str, str, bytes]] = []
        total = 0
        cursor = conn.execute(
            "SELECT k.key_id, k.block_id, k.material FROM keys k JOIN blocks b USING (block_id)"
            " WHERE k.state='available' ORDER BY b.created_s, k.block_id, k.idx"
        )
        for row in cursor:
            picked.append((row[0], row[1], bytes(row[2])))
            total += len(row[2])
            if total >= n_bytes:
                cursor.close()
                return picked
        raise InsufficientKeyError(n_bytes, total)

    def _pick_ids(
        self, conn: sqlite3.Connection, key_ids: list[str]
    ) -> list[tuple[str, str, bytes]]:
        picked = []
        for kid in key_ids:
            row = conn.execute(
                "SELECT key_id, block_id, material, state FROM keys WHERE key_id=?", (kid,)
            ).fetchone()
            if row is None:
                raise KeyUnavailableError(f"unknown key ID {kid}")
            if row[3] != KeyState.AVAILABLE:
                raise KeyUnavailableError(f"key {kid} is not available ({row[3]})")
            picked.append((row[0], row[1], bytes(row[2])))
        return picked

    # -- acknowledge / expire ----------------------------------------------------------

    async def acknowledge(self, consumer: str, request_id: str) -> int:
        """Consumer confirmed receipt: erase the material. Returns keys erased (0 on repeat)."""
        return await self._call(self._ack_sync, consumer, request_id)

    def _ack_sync(self, consumer: str, request_id: str) -> int:
        now = time.time()
        with self._tx() as conn:
            owner = conn.execute(
                "SELECT DISTINCT consumer FROM keys WHERE request_id=?", (request_id,)
            ).fetchall()
            if not owner:
                raise KeyUnavailableError(f"unknown request ID {request_id!r}")
            if owner != [(consumer,)]:
                raise RequestConflictError(f"request ID {request_id!r} belongs to another consumer")
            n = conn.execute(
                "UPDATE keys SET state='acknowledged', material=NULL, erased_s=?"
                " WHERE request_id=? AND consumer=? AND state='reserved'",
                (now, request_id, consumer),
            ).rowcount
        self._purge_wal()
        log.info("acknowledged request %s of %s: %d keys erased", request_id, consumer, n)
        return n

    async def expire_reservations(self, older_than_s: float) -> int:
        """Erase reservations older than ``older_than_s`` that were never acknowledged."""
        return await self._call(self._expire_sync, older_than_s)

    def _expire_sync(self, older_than_s: float) -> int:
        now = time.time()
        with self._tx() as conn:
            n = conn.execute(
                "UPDATE keys SET state='expired', material=NULL, erased_s=?"
                " WHERE state='reserved' AND reserved_s < ?",
                (now, now - older_than_s),
            ).rowcount
        if n:
            self._purge_wal()
            log.warning("expired %d unacknowledged reserved keys", n)
        return n

    def _purge_wal(self) -> None:
        """Drop old page images (which may hold erased material) from the WAL."""
        with contextlib.suppress(sqlite3.Error):
            self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- queries -----------------------------------------------------------------------

    async def pending(self, consumer: str | None = None) -> dict[str, list[str]]:
        """Unacknowledged reservations: request ID -> key IDs (for recovery after a crash)."""
        return await self._call(self._pending_sync, consumer)

    def _pending_sync(self, consumer: str | None) -> dict[str, list[str]]:
        rows = self._db().execute(
            "SELECT request_id, key_id, consumer FROM keys WHERE state='reserved'"
            " ORDER BY block_id, idx"
        )
        out: dict[str, list[str]] = {}
        for request_id, key_id, owner in rows:
            if consumer is None or owner == consumer:
                out.setdefault(request_id, []).append(key_id)
        return out

    async def counts(self) -> dict[str, int]:
        """Number of keys per state (all states present)."""
        return await self._call(self._counts_sync)

    def _counts_sync(self) -> dict[str, int]:
        out = {s.value: 0 for s in KeyState}
        for state, n in self._db().execute("SELECT state, count(*) FROM keys GROUP BY state"):
            out[state] = n
        return out

    async def available_bytes(self) -> int:
        return await self._call(self._available_sync)

    def _available_sync(self) -> int:
        row = (
            self._db()
            .execute("SELECT coalesce(sum(length_bytes), 0) FROM keys WHERE state='available'")
            .fetchone()
        )
        return int(row[0])

    async def oldest_available(self, n_keys: int, *, exclude_pass: str) -> list[str]:
        """IDs of the ``n_keys`` oldest available keys not of pass ``exclude_pass``
        (no material is read); fewer when the store holds fewer."""
        return await self._call(self._oldest_sync, n_keys, exclude_pass)

    def _oldest_sync(self, n_keys: int, exclude_pass: str) -> list[str]:
        rows = (
            self._db()
            .execute(
                "SELECT k.key_id FROM keys k JOIN blocks b USING (block_id)"
                " WHERE k.state = 'available' AND b.pass_id != ?"
                " ORDER BY b.created_s, k.block_id, k.idx LIMIT ?",
                (exclude_pass, n_keys),
            )
            .fetchall()
        )
        return [str(r[0]) for r in rows]

    async def key_states(self, key_ids: Sequence[str]) -> dict[str, str]:
        """State of each known key ID (audit)."""
        return await self._call(self._states_sync, list(key_ids))

    def _states_sync(self, key_ids: list[str]) -> dict[str, str]:
        out = {}
        for kid in key_ids:
            row = self._db().execute("SELECT state FROM keys WHERE key_id=?", (kid,)).fetchone()
            if row is not None:
                out[kid] = str(row[0])
        return out
