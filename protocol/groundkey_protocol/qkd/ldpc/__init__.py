"""One-way rate-adaptive LDPC reconciliation (methods ``ldpc`` and ``ldpc-blind``).

- :mod:`.construction`: quasi-cyclic mother codes (rates 0.5–0.9) from a seed;
- :mod:`.decoder`: layered sum-product BP, vectorized over frames;
- :mod:`.rate`: puncturing/shortening to the estimated QBER (d = p + s, δ = 0.1);
- :mod:`.roles`: :class:`LdpcAlice` / :class:`LdpcBob` behind
  :mod:`groundkey_protocol.qkd.reconcile`; :mod:`.codes`: the code table.

Operating point: frames of :data:`RECOMMENDED_FRAME_BITS` key bits (10^5-bit
codewords). Measured there, with a first-message FER ≤ ~10^-2, f ≈ 1.23 (QBER
1 %), 1.158 (2 %), 1.132 (3 %), 1.123 (5 %), 1.101 (8 %) including the check tag;
10^4-bit codewords work too, at syndrome efficiencies 1.48, 1.4, 1.32, 1.25, 1.17
(see :func:`default_efficiency`) plus 32/(N·h(Q)) for the tag.

Default for satellite passes: ``ldpc-blind``. A pass has a round-trip time of
tens of milliseconds over a link that is only up while the satellite is in view;
Cascade needs ~40–230 round trips per batch, blind LDPC at most three messages
(syndrome, one request, one reveal), and the blind round makes up for a QBER
estimate that is off, at a leakage cost paid only by the frames that fail.
"""

from __future__ import annotations

from groundkey_protocol.qkd.ldpc.codes import get_code, get_decoder, set_code_loader
from groundkey_protocol.qkd.ldpc.construction import MOTHER_RATES, QcLdpcCode, build_code
from groundkey_protocol.qkd.ldpc.decoder import BpDecoder, DecodeResult, bsc_llr
from groundkey_protocol.qkd.ldpc.rate import RatePlan, default_efficiency, plan_rate
from groundkey_protocol.qkd.ldpc.roles import LdpcAlice, LdpcBob, is_blind

__all__ = [
    "DEFAULT_PASS_METHOD",
    "MOTHER_RATES",
    "RECOMMENDED_FRAME_BITS",
    "BpDecoder",
    "DecodeResult",
    "LdpcAlice",
    "LdpcBob",
    "QcLdpcCode",
    "RatePlan",
    "bsc_llr",
    "build_code",
    "default_efficiency",
    "get_code",
    "get_decoder",
    "is_blind",
    "plan_rate",
    "set_code_loader",
]

#: Reconciliation method recommended for satellite passes (round trips are costly).
DEFAULT_PASS_METHOD = "ldpc-blind"
#: Key bits per frame for the efficiency targets (longer frames: lower f, more memory).
RECOMMENDED_FRAME_BITS = 90_000
