"""Alice: a counter-based source. Every per-slot value is a hash of (seed, slot), so no
slot is ever materialized and Alice can answer for any slot later."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finalizer over a uint64 array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class Alice:
    """Decoy-state BB84 choices per pulse slot: bit, basis and intensity class.

    Intensity class 0 (signal, mu=0.8) has probability 1/2, classes 1 (decoy, 0.1) and
    2 (vacuum) 1/4 each: two hash bits select it (00, 01 -> 0; 10 -> 1; 11 -> 2).
    The seed is secret: it never appears in repr.
    """

    def __init__(self, seed: int) -> None:
        self._key = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]

    def __repr__(self) -> str:
        return "Alice(<seeded>)"

    def _hash(self, slots: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        s = np.asarray(slots, dtype=np.int64).astype(np.uint64)
        return splitmix64(s ^ self._key)

    def values(
        self, slots: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """(bit, basis, intensity class) for each slot index."""
        h = self._hash(slots)
        bit = (h >> np.uint64(63)).astype(np.uint8)
        basis = ((h >> np.uint64(62)) & np.uint64(1)).astype(np.uint8)
        sel = ((h >> np.uint64(60)) & np.uint64(3)).astype(np.uint8)
        intensity = np.maximum(sel, 1) - 1  # 0,1 -> 0; 2 -> 1; 3 -> 2
        return bit, basis, intensity.astype(np.uint8)

    def intensity_class(self, slots: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        h = self._hash(slots)
        sel = ((h >> np.uint64(60)) & np.uint64(3)).astype(np.uint8)
        return (np.maximum(sel, 1) - 1).astype(np.uint8)
