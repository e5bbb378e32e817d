"""One-way rate-adaptive LDPC reconciliation (methods ``ldpc`` and ``ldpc-blind``).

- :mod:`.construction`: quasi-cyclic mother codes (rates 0.5–0.9) from a seed;
- :mod:`.decoder`: layered sum-product BP, vectorized over frames;
- :mod:`.rate`: puncturing/shortening to the estimated QBER (d = p + s, δ = 0.01,
  0.1 for short frames), and the frame size for a QBER (:func:`frame_bits_for`);
- :mod:`.roles`: :class:`LdpcAlice` / :class:`LdpcBob` behind
  :mod:`groundkey_protocol.qkd.reconcile`; :mod:`.codes`: the code table.

Operating point (:func:`frame_bits_for`): frames of 1.44·10^6 key bits
(1.4546·10^6-bit codewords) up to QBER 1.5 %, 3.6·10^5 (3.64·10^5-bit codewords)
up to 2.5 %, of :data:`RECOMMENDED_FRAME_BITS` (9·10^4, 9.1·10^4-bit codewords)
above. First-message efficiency there: 1.13 (QBER 1–1.5 %), 1.125 (2 %),
1.13 (3 %), 1.12 (5 %), 1.10 (8 %), at a first-message frame error rate of about
10^-2 or lower; the 32-bit check tag and the blind round's reveals add a little
(see tests/protocol/qkd/test_ldpc_acceptance.py). 10^4-bit codewords work too,
at syndrome efficiencies 1.48, 1.4, 1.32, 1.25, 1.17 (see
:func:`default_efficiency`) plus 32/(N·h(Q)) for the tag.

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
from groundkey_protocol.qkd.ldpc.rate import (
    RatePlan,
    default_efficiency,
    frame_bits_for,
    plan_rate,
)
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
    "frame_bits_for",
    "get_code",
    "get_decoder",
    "is_blind",
    "plan_rate",
    "set_code_loader",
]

#: Reconciliation method recommended for satellite passes (round trips are costly).
DEFAULT_PASS_METHOD = "ldpc-blind"
#: Key bits per frame above QBER 2.5 % (below it, longer: :func:`frame_bits_for`).
RECOMMENDED_FRAME_BITS = 90_000
