"""Durable spool of raw time-tag chunks, so a crash during a pass loses nothing.

Layout under the spool directory (0700; files 0600)::

    <pass_id>/chunk-00000001.gkc     raw chunks, in arrival order
    <pass_id>/block-0001.json        a block: which chunks, and its state
    <pass_id>/session-00000001.json  an acquisition run from that chunk on: its metadata

A chunk file is ``b"GKC1" | count u64 LE | timestamps (<i8) | channels (u1)``,
written to a temporary name, fsynced, renamed, and the directory fsynced: once
:meth:`Spool.append` returns, the chunk survives a power cut. A block manifest is
replaced the same way on every state change (``pending`` -> ``done``), so after
a restart :meth:`Spool.pending_blocks` lists exactly the blocks still to
distill, and :meth:`Spool.orphans` the chunks a crash left outside any block
(grouped by acquisition session, with the metadata needed to seal them). The
methods do blocking file I/O: call them via ``asyncio.to_thread``
(or from a worker process).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BlockRef", "Spool", "SpoolError", "read_chunk", "read_chunks"]

MAGIC = b"GKC1"
_HEAD = struct.Struct("<4sQ")
_PASS_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


class SpoolError(Exception):
    """A spool file is missing or corrupt."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block of chunks of one pass, with its manifest's metadata."""

    pass_id: str
    index: int
    chunks: tuple[str, ...]
    state: str = "pending"
    meta: dict[str, Any] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_chunk(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(timestamps_ps, channels) of one chunk file."""
    data = Path(path).read_bytes()
    if len(data) < _HEAD.size:
        raise SpoolError(f"{path}: truncated chunk")
    magic, count = _HEAD.unpack_from(data)
    if magic != MAGIC or len(data) != _HEAD.size + 9 * count:
        raise SpoolError(f"{path}: corrupt chunk")
    ts = np.frombuffer(data, dtype="<i8", count=count, offset=_HEAD.size).astype(np.int64)
    ch = np.frombuffer(data, dtype=np.uint8, count=count, offset=_HEAD.size + 8 * count).copy()
    return ts, ch


def read_chunks(
    paths: list[str] | tuple[str, ...],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """All chunks concatenated, in order."""
    parts = [read_chunk(p) for p in paths]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class Spool:
    """The spool directory: append chunks, seal them into blocks, track block state."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._next_chunk: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    def pass_dir(self, pass_id: str) -> Path:
        if not _PASS_ID.match(pass_id):
            raise ValueError(f"bad pass id {pass_id!r}")
        return self.root / pass_id

    def _ensure(self, pass_id: str) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        d = self.pass_dir(pass_id)
        if not d.is_dir():
            d.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.root)
        return d

    def _next_number(self, pass_id: str, d: Path) -> int:
        n = self._next_chunk.get(pass_id)
        if n is None:
            n = 1 + max((int(p.stem[6:]) for p in d.glob("chunk-*.gkc")), default=0)
        return n

    def begin_session(self, pass_id: str, meta: dict[str, Any]) -> None:
        """Record the metadata of an acquisition run whose chunks follow (so that chunks
        a crash leaves unsealed can still be sealed into a block after a restart)."""
        d = self._ensure(pass_id)
        n = self._next_number(pass_id, d)
        _write_durable(d / f"session-{n:08d}.json", json.dumps(meta, sort_keys=True).encode())

    def orphans(self, pass_id: str) -> list[tuple[list[str], dict[str, Any]]]:
        """Unsealed chunks of a pass, grouped by session: ``[(chunk names, meta)]``.
        Chunks of no recorded session are left out (nothing to sync them with)."""
        d = self.pass_dir(pass_id)
        loose = self.unsealed_chunks(pass_id)
        if not loose:
            return []
        sessions = sorted((int(p.stem[8:]), p) for p in d.glob("session-*.json"))
        out = []
        for i, (first, path) in enumerate(sessions):
            end = sessions[i + 1][0] if i + 1 < len(sessions) else None
            names = [
                name
                for name in loose
                if int(name[6:14]) >= first and (end is None or int(name[6:14]) < end)
            ]
            if names:
                try:
                    meta = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise SpoolError(f"{path}: unreadable session: {exc}") from None
                out.append((names, dict(meta)))
        return out

    def append(
        self, pass_id: str, timestamps_ps: npt.NDArray[np.int64], channels: npt.NDArray[np.uint8]
    ) -> str:
        """Durably store one chunk; returns its file name (within the pass directory)."""
        if timestamps_ps.shape != channels.shape:
            raise ValueError("timestamps and channels differ in length")
        d = self._ensure(pass_id)
        n = self._next_number(pass_id, d)
        name = f"chunk-{n:08d}.gkc"
        self._next_chunk[pass_id] = n + 1
        body = (
            _HEAD.pack(MAGIC, int(timestamps_ps.size))
            + np.asarray(timestamps_ps, dtype="<i8").tobytes()
            + np.asarray(channels, dtype=np.uint8).tobytes()
        )
        _write_durable(d / name, body)
        return name

    def seal_block(self, pass_id: str, chunks: list[str], meta: dict[str, Any]) -> BlockRef:
        """Record a block of chunks as pending distillation."""
        d = self._ensure(pass_id)
        index = 1 + max((int(p.stem[6:]) for p in d.glob("block-*.json")), default=0)
        ref = BlockRef(pass_id, index, tuple(chunks), "pending", dict(meta))
        self._write_manifest(ref)
        return ref

    def _write_manifest(self, ref: BlockRef) -> None:
        body = {"chunks": list(ref.chunks), "state": ref.state, "meta": ref.meta}
        path = self.pass_dir(ref.pass_id) / f"block-{ref.index:04d}.json"
        _write_durable(path, json.dumps(body, sort_keys=True).encode())

    def mark(self, ref: BlockRef, state: str, **meta: Any) -> BlockRef:
        """Durably move a block to ``state`` (e.g. ``done``), merging ``meta``."""
        new = BlockRef(ref.pass_id, ref.index, ref.chunks, state, {**ref.meta, **meta})
        self._write_manifest(new)
        return new

    def chunk_paths(self, ref: BlockRef) -> list[str]:
        d = self.pass_dir(ref.pass_id)
        return [str(d / name) for name in ref.chunks]

    def blocks(self, pass_id: str | None = None) -> list[BlockRef]:
        """Every block manifest (of one pass, or all), in order."""
        if not self.root.is_dir():
            return []
        dirs = [self.pass_dir(pass_id)] if pass_id else sorted(self.root.iterdir())
        refs = []
        for d in dirs:
            if not d.is_dir():
                continue
            for path in sorted(d.glob("block-*.json")):
                try:
                    body = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise SpoolError(f"{path}: unreadable manifest: {exc}") from None
                refs.append(
                    BlockRef(
                        d.name,
                        int(path.stem[6:]),
                        tuple(body["chunks"]),
                        str(body["state"]),
                        dict(body.get("meta", {})),
                    )
                )
        return refs

    def pending_blocks(self) -> list[BlockRef]:
        return [ref for ref in self.blocks() if ref.state == "pending"]

    def unsealed_chunks(self, pass_id: str) -> list[str]:
        """Chunks of a pass not yet in any block (a crash between append and seal)."""
        d = self.pass_dir(pass_id)
        if not d.is_dir():
            return []
        sealed = {name for ref in self.blocks(pass_id) for name in ref.chunks}
        return [p.name for p in sorted(d.glob("chunk-*.gkc")) if p.name not in sealed]

    def remove_pass(self, pass_id: str) -> None:
        """Delete a pass's raw data once every block of it is done."""
        shutil.rmtree(self.pass_dir(pass_id), ignore_errors=True)
        self._next_chunk.pop(pass_id, None)
