"""Layered sum-product decoder: corrects errors, stops early, handles batches."""

from __future__ import annotations

import numpy as np

from groundkey_protocol.qkd.ldpc.construction import build_code
from groundkey_protocol.qkd.ldpc.decoder import BpDecoder, bsc_llr


def test_decodes_a_batch_and_stops_early_on_clean_frames() -> None:
    code = build_code(0.5, 10_000)
    dec = BpDecoder(code, batch=16)
    rng = np.random.default_rng(3)
    frames, q = 40, 0.06  # f ≈ 1.53: well inside the decoding region
    x = rng.integers(0, 2, (frames, code.n), dtype=np.uint8)
    noise = (rng.random(x.shape) < q).astype(np.uint8)
    noise[:5] = 0  # clean frames: syndrome already met, zero iterations
    y = x ^ noise
    result = dec.decode(bsc_llr(q) * (1.0 - 2.0 * y.astype(np.float32)), code.syndrome(x))
    assert result.bits.shape == (frames, code.n)
    assert result.ok.all()
    assert np.array_equal(result.bits, x)
    assert np.all(result.iterations[:5] == 0)
    assert np.all(result.iterations[5:] > 0)
    assert "bits" not in repr(result)
    assert str(int(x[0, 0])) not in repr(result).split("ok=")[0]


def test_failure_is_reported_not_hidden() -> None:
    code = build_code(0.9, 4_000)
    dec = BpDecoder(code, max_iterations=10)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, (4, code.n), dtype=np.uint8)
    y = x ^ (rng.random(x.shape) < 0.2).astype(np.uint8)  # far beyond capacity
    result = dec.decode(bsc_llr(0.2) * (1.0 - 2.0 * y.astype(np.float32)), code.syndrome(x))
    assert not result.ok.any()
    assert np.all(result.iterations == 10)
    unmet = (code.syndrome(result.bits) != code.syndrome(x)).any(axis=1)
    assert unmet.all()


def test_punctured_and_shortened_symbols() -> None:
    """LLR 0 (punctured) symbols are recovered; huge LLRs (shortened) stay put."""
    code = build_code(0.5, 4_000)
    dec = BpDecoder(code)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, (8, code.n), dtype=np.uint8)
    llr = bsc_llr(0.03) * (1.0 - 2.0 * (x ^ (rng.random(x.shape) < 0.03)).astype(np.float32))
    punctured = code.parity_columns[::2][:200]
    llr[:, punctured] = 0.0
    llr[:, :300] = 40.0 * (1.0 - 2.0 * x[:, :300])
    result = dec.decode(llr, code.syndrome(x))
    assert result.ok.all()
    assert np.array_equal(result.bits, x)


def test_erased_input_stays_finite() -> None:
    """All-zero LLRs (every symbol punctured) give no overflow/NaN, just failures."""
    code = build_code(0.5, 2_000)
    rng = np.random.default_rng(6)
    syndrome = rng.integers(0, 2, (3, code.m), dtype=np.uint8)
    result = BpDecoder(code, max_iterations=5).decode(
        np.zeros((3, code.n), dtype=np.float32), syndrome
    )
    assert not result.ok.any()
    assert set(np.unique(result.bits)) <= {0, 1}
