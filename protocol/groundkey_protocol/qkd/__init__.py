"""Key distillation: sync, sifting, estimation, reconciliation, verification, amplification.

The whole-block roles are :class:`DistillAlice` and :class:`DistillBob`
(:mod:`.distill`); the pieces live in :mod:`.sifting`, :mod:`.finite_key`,
:mod:`.reconcile` (interface, registry) with :mod:`.cascade`, :mod:`.verify` and
:mod:`.amplify`. Submodules are imported lazily (``groundkey_protocol.qkd.X``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BlockOutcome",
    "DistillAlice",
    "DistillBob",
    "DistillConfig",
    "KeyBlock",
]

if TYPE_CHECKING:
    from groundkey_protocol.qkd.distill import (
        BlockOutcome,
        DistillAlice,
        DistillBob,
        DistillConfig,
        KeyBlock,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from groundkey_protocol.qkd import distill

        return getattr(distill, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
