"""Where roles get their mother codes: an in-memory table plus an optional loader.

Codes are part of the protocol (both ends must use the same matrix), so they are
fixed by ``(rate, n, CODE_SEED, CONSTRUCTION_VERSION)``. Generation is pure and
takes well under a second; the daemon installs a loader
(:func:`set_code_loader`, see ``groundkey_daemon.ldpc_cache``) that keeps them in
the state directory so a pass never waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

from groundkey_protocol.qkd.ldpc.construction import QcLdpcCode, build_code
from groundkey_protocol.qkd.ldpc.decoder import BpDecoder

__all__ = ["CODE_SEED", "CodeLoader", "get_code", "get_decoder", "set_code_loader"]

#: Seed of the project's mother codes (public, part of the protocol).
CODE_SEED = 1

CodeLoader = Callable[[float, int, int], QcLdpcCode]
"""``(rate, n, seed) -> code``; must return exactly what :func:`build_code` would."""

_codes: dict[tuple[float, int], QcLdpcCode] = {}
_decoders: dict[tuple[float, int], BpDecoder] = {}
_loader: CodeLoader | None = None
_MAX_CODES = 16


def set_code_loader(loader: CodeLoader | None) -> None:
    """Install (or with ``None`` remove) the function that supplies codes."""
    global _loader
    _loader = loader


def get_code(rate: float, n: int) -> QcLdpcCode:
    """The mother code of ``rate`` and length ``n`` (memoized)."""
    key = (round(rate, 6), n)
    code = _codes.get(key)
    if code is None:
        if _loader is not None:
            code = _loader(rate, n, CODE_SEED)
        else:
            code = build_code(rate, n, seed=CODE_SEED)
        if len(_codes) >= _MAX_CODES:
            _codes.pop(next(iter(_codes)))
            _decoders.clear()
        _codes[key] = code
    return code


def get_decoder(rate: float, n: int) -> BpDecoder:
    """A (memoized) decoder for :func:`get_code` ``(rate, n)``."""
    key = (round(rate, 6), n)
    dec = _decoders.get(key)
    if dec is None:
        dec = _decoders[key] = BpDecoder(get_code(rate, n))
    return dec
