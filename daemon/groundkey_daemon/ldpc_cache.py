"""On-disk cache of the LDPC mother codes, kept in the state directory.

The protocol package generates codes deterministically but may not touch files,
so the daemon keeps each generated base matrix as ``.npy`` (``np.save``, no
pickles) under ``<state>/ldpc/`` and installs :meth:`LdpcCodeCache.load_or_build`
as the protocol's code loader. Files are written to a temporary name in the same
directory, fsynced and renamed into place, so a crash never leaves a torn file;
a file that does not load or validate is rebuilt and replaced.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from groundkey_protocol.qkd.ldpc.codes import CODE_SEED, set_code_loader
from groundkey_protocol.qkd.ldpc.construction import (
    BASE_COLUMNS,
    CONSTRUCTION_VERSION,
    QcLdpcCode,
    build_code,
)
from groundkey_protocol.qkd.ldpc.rate import code_length, mother_rates_for

__all__ = ["LdpcCodeCache"]

log = logging.getLogger(__name__)


class LdpcCodeCache:
    """Codes under ``directory`` (created on first write). The constructor does no I/O."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.builds = 0

    def __repr__(self) -> str:
        return f"LdpcCodeCache({str(self.directory)!r})"

    def path_for(self, rate: float, n: int, seed: int = CODE_SEED) -> Path:
        """File of the code ``(rate, n, seed)`` for the current construction version."""
        name = f"qc-v{CONSTRUCTION_VERSION}-r{round(rate * 1000):04d}-n{n}-s{seed}.npy"
        return self.directory / name

    def load_or_build(self, rate: float, n: int, seed: int = CODE_SEED) -> QcLdpcCode:
        """The cached code, or a freshly built one that is then saved."""
        path = self.path_for(rate, n, seed)
        code = self._load(path, rate, n, seed)
        if code is not None:
            self.hits += 1
            return code
        code = build_code(rate, n, seed=seed)
        self.builds += 1
        try:
            self._save(path, code)
        except OSError as exc:  # a read-only state dir must not stop reconciliation
            log.warning("cannot cache LDPC code in %s: %s", path, exc)
        return code

    def install(self) -> None:
        """Make the protocol's roles get their codes through this cache."""
        set_code_loader(self.load_or_build)

    def warm(self, frame_bits: Iterable[int], rates: Iterable[float] | None = None) -> int:
        """Build (or check) the codes for these frame sizes; returns how many were built.

        ``rates``: the mother rates to build for every size; by default the ones each
        size is used with (:func:`~groundkey_protocol.qkd.ldpc.rate.mother_rates_for`).
        """
        before = self.builds
        for bits in frame_bits:
            for rate in mother_rates_for(bits) if rates is None else rates:
                self.load_or_build(rate, code_length(bits))
        return self.builds - before

    @staticmethod
    def _load(path: Path, rate: float, n: int, seed: int) -> QcLdpcCode | None:
        try:
            base = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("discarding unreadable LDPC cache file %s: %s", path, exc)
            return None
        z = n // BASE_COLUMNS
        mb = round(BASE_COLUMNS * (1.0 - rate))
        valid = (
            base.dtype == np.int32
            and base.shape == (mb, BASE_COLUMNS)
            and bool(np.all((base >= -1) & (base < z)))
            and bool(np.all((base >= 0).sum(axis=1) >= 2))
        )
        if not valid:
            log.warning("discarding invalid LDPC cache file %s", path)
            return None
        return QcLdpcCode(base=base, z=z, seed=seed)

    def _save(self, path: Path, code: QcLdpcCode) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, code.base, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
