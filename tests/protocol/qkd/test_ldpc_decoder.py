"""Layered sum-product decoder: corrects errors, stops early, handles batches."""

from __future__ import annotations

import numpy as np

from groundkey_protocol.qkd.ldpc.construction import QcLdpcCode, build_code
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


def _reference_decode(
    code: QcLdpcCode, llr: np.ndarray, syndrome: np.ndarray, max_iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook layered sum-product on the dense ``H``, one check at a time, float64.

    Same schedule (block rows in order), stopping rule (syndrome checked before each
    iteration) and message bound (``±2 atanh(1 - 2^-24)``) as the decoder.
    """
    checks, variables = code.edges
    h = np.zeros((code.m, code.n), dtype=bool)
    h[checks, variables] = True
    rows = [np.flatnonzero(h[c]) for c in range(code.m)]
    bound = 2.0 * np.arctanh(1.0 - 2.0**-24)
    total = llr.astype(np.float64)
    msg = [np.zeros((llr.shape[0], r.size)) for r in rows]
    sign = 1.0 - 2.0 * syndrome.astype(np.float64)
    done = np.full(llr.shape[0], -1)
    for it in range(max_iterations + 1):
        met = np.all((h.astype(np.uint8) @ (total < 0).T.astype(np.uint8)) % 2 == syndrome.T, 0)
        done[(done < 0) & met] = it
        if (done >= 0).all() or it == max_iterations:
            break
        for c, r in enumerate(rows):
            v = total[:, r] - msg[c]
            t = np.tanh(v / 2)
            others = np.prod(np.where(np.eye(r.size, dtype=bool), 1.0, t[:, None, :]), axis=2)
            msg[c] = np.clip(
                2 * np.arctanh(np.clip(sign[:, c : c + 1] * others, -1, 1)), -bound, bound
            )
            total[:, r] = v + msg[c]
    done[done < 0] = max_iterations
    return (total < 0).astype(np.uint8), done


def test_agrees_with_a_textbook_layered_decoder() -> None:
    """Same decisions and iteration counts as the dense float64 reference."""
    code = build_code(0.8, 2_000)
    rng = np.random.default_rng(7)
    frames, q = 6, 0.015
    x = rng.integers(0, 2, (frames, code.n), dtype=np.uint8)
    y = x ^ (rng.random(x.shape) < q).astype(np.uint8)
    llr = bsc_llr(q) * (1.0 - 2.0 * y.astype(np.float32))
    llr[:, code.parity_columns[::8]] = 0.0  # punctured: erased inputs, exact path
    syndrome = code.syndrome(x)
    result = BpDecoder(code, max_iterations=30).decode(llr, syndrome)
    ref_bits, ref_iterations = _reference_decode(code, llr, syndrome, 30)
    assert result.ok.all()
    assert result.iterations.max() > 5
    assert np.array_equal(result.iterations, ref_iterations)
    assert np.array_equal(result.bits, ref_bits)
    assert np.array_equal(result.bits, x)


def test_results_do_not_depend_on_the_batch() -> None:
    """More than 64 frames (two packed words), frames finishing at different
    iterations (in-place compaction), clean frames at the end: the same results as
    one frame at a time."""
    code = build_code(0.5, 2_000)
    rng = np.random.default_rng(8)
    frames = 70
    q = np.linspace(0.02, 0.09, frames)[:, None]
    x = rng.integers(0, 2, (frames, code.n), dtype=np.uint8)
    noise = (rng.random(x.shape) < q).astype(np.uint8)
    noise[-3:] = 0
    llr = (np.log((1 - q) / q) * (1.0 - 2.0 * (x ^ noise))).astype(np.float32)
    syndrome = code.syndrome(x)
    together = BpDecoder(code, max_iterations=40, batch=frames).decode(llr, syndrome)
    some = np.r_[0:frames:6, frames - 1]
    alone = BpDecoder(code, max_iterations=40, batch=1).decode(llr[some], syndrome[some])
    assert np.array_equal(together.iterations[some], alone.iterations)
    assert np.array_equal(together.ok[some], alone.ok)
    assert np.array_equal(together.bits[some], alone.bits)
    assert len(set(together.iterations.tolist())) > 5
    assert np.all(together.iterations[-3:] == 0)
    assert together.ok[:40].all()
    assert not together.ok[-10:-3].all()
