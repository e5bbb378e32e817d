"""Classical-channel messages of key distillation, ground <-> satellite.

Every message is a frozen :class:`msgspec.Struct` in one tagged union (tag field
``"t"``) and carries the ``block_id`` (a UUID string) of the key block it belongs
to, so the authentication layer (``link/auth.py``) can bind MACs and sequence
numbers to a block. Numpy arrays travel as raw little-endian bytes or as
``np.packbits`` bit strings; the receiving role checks sizes and raises
:class:`~groundkey_protocol.errors.ProtocolError` on a mismatch.

:func:`encode_message` gives compact msgpack; :func:`decode_message` raises only
``ProtocolError`` on malformed input. Other modules may add message types with
:func:`register_message` (the decoder is rebuilt lazily).
"""

from __future__ import annotations

from typing import Any, TypeVar, Union

import msgspec

from groundkey_protocol.errors import ProtocolError

__all__ = [
    "AmplifySeed",
    "BlockAbort",
    "BlockAuth",
    "BlockOpen",
    "BlockReady",
    "CascadeDone",
    "CascadeQuery",
    "CascadeReply",
    "EstimateReply",
    "EstimateRequest",
    "LinkMessage",
    "ReconcileData",
    "SiftAnnounce",
    "SiftReply",
    "VerifyResult",
    "VerifyTags",
    "decode_message",
    "encode_message",
    "message_types",
    "register_message",
]


class LinkMessage(msgspec.Struct, frozen=True, kw_only=True, array_like=True, tag_field="t"):
    """Base of every link message. ``block_id`` names the key block."""

    block_id: str

    def __repr__(self) -> str:
        # Arrays (bit strings, bases) are summarized, never dumped.
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, bytes):
                parts.append(f"{name}=<{len(value)} bytes>")
            else:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# --- block control -------------------------------------------------------------


class BlockOpen(LinkMessage, frozen=True, kw_only=True, tag="block.open"):
    """Station -> satellite: start a key block; ``params`` is JSON (distillation settings).

    ``pad_keys`` (key IDs of earlier passes' stored key, ``pad_key_bytes`` each)
    hold the Wegman–Carter transcript pads of this block; empty: HMAC only.
    Station -> satellite ``BlockReady(detail="commit")`` after Bob's key: the
    satellite keeps its key only then.
    """

    pass_id: str
    params: str
    pad_keys: list[str] = []
    pad_key_bytes: int = 0


class BlockReady(LinkMessage, frozen=True, kw_only=True, tag="block.ready"):
    """Satellite -> station: the block is open, Alice holds the record for it."""

    detail: str = ""


# --- sifting -----------------------------------------------------------------


class SiftAnnounce(LinkMessage, frozen=True, kw_only=True, tag="sift.announce"):
    """Bob -> Alice: detected pulse slots (``<i8``) and measurement bases (packed, 1 = X)."""

    count: int
    slots: bytes
    bases: bytes


class SiftReply(LinkMessage, frozen=True, kw_only=True, tag="sift.reply"):
    """Alice -> Bob: her bases (packed) and intensity indices (``u1``) for those slots.

    ``sample_seed`` selects the X-basis bits sacrificed for the QBER estimate.
    """

    count: int
    bases: bytes
    intensities: bytes
    sample_seed: int


# --- parameter estimation ----------------------------------------------------


class EstimateRequest(LinkMessage, frozen=True, kw_only=True, tag="estimate.request"):
    """Bob -> Alice: his Z-basis sifted bits and his sampled X bits (both packed)."""

    z_count: int
    z_bits: bytes
    sample_count: int
    sample_bits: bytes


class EstimateReply(LinkMessage, frozen=True, kw_only=True, tag="estimate.reply"):
    """Alice -> Bob: error counts per intensity in Z and in the X sample; abort reason."""

    z_errors: list[int]
    sample_errors: int
    abort_reason: str = ""


# --- reconciliation ----------------------------------------------------------


class CascadeQuery(LinkMessage, frozen=True, kw_only=True, tag="cascade.query"):
    """Bob -> Alice: parities wanted.

    ``top_pass`` >= 0 asks for the top-level block parities of that pass for the
    frames in ``top_frames`` (``<u4``; empty means all). The ranges ``frames``
    (``<u4``), ``passes`` (``u1``), ``starts``/``stops`` (``<u4``, positions in the
    pass's permuted order) ask for one parity each.
    """

    step: int
    top_pass: int = -1
    top_frames: bytes = b""
    frames: bytes = b""
    passes: bytes = b""
    starts: bytes = b""
    stops: bytes = b""


class CascadeReply(LinkMessage, frozen=True, kw_only=True, tag="cascade.reply"):
    """Alice -> Bob: the parities asked for (top-level first, then ranges), packed."""

    step: int
    count: int
    parities: bytes


class CascadeDone(LinkMessage, frozen=True, kw_only=True, tag="cascade.done"):
    """Bob -> Alice: reconciliation finished; ``disclosed_bits`` is Bob's total count."""

    disclosed_bits: int


class ReconcileData(LinkMessage, frozen=True, kw_only=True, tag="reconcile.data"):
    """Generic reconciliation payload for other methods (e.g. LDPC syndromes).

    ``kind`` names the payload (``"syndrome"``, ``"reveal-request"``, ...);
    ``arrays`` holds raw/packed arrays, ``ints`` small parameters.
    """

    method: str
    step: int
    kind: str
    arrays: dict[str, bytes] = {}
    ints: dict[str, int] = {}

    def __repr__(self) -> str:
        arrays = {k: f"<{len(v)} bytes>" for k, v in self.arrays.items()}
        return (
            f"ReconcileData(block_id={self.block_id!r}, method={self.method!r}, "
            f"step={self.step}, kind={self.kind!r}, arrays={arrays}, ints={self.ints!r})"
        )


# --- verification, amplification, control --------------------------------------


class VerifyTags(LinkMessage, frozen=True, kw_only=True, tag="verify.tags"):
    """Alice -> Bob: fresh hash points (GF(2^64) elements) and her tags per frame (``<u8``)."""

    points: list[int]
    tags: bytes


class VerifyResult(LinkMessage, frozen=True, kw_only=True, tag="verify.result"):
    """Bob -> Alice: per-frame tag agreement, packed (1 = equal)."""

    frames: int
    ok: bytes


class AmplifySeed(LinkMessage, frozen=True, kw_only=True, tag="amplify.seed"):
    """Alice -> Bob: the fresh hash seed (packed bits) and the final key length."""

    family: str
    seed_bits: int
    seed: bytes
    key_bits: int


class BlockAuth(LinkMessage, frozen=True, kw_only=True, tag="block.auth"):
    """Either side: the Wegman–Carter tag over the block's whole transcript (16 bytes)."""

    tag: bytes


class BlockAbort(LinkMessage, frozen=True, kw_only=True, tag="block.abort"):
    """Either side: the block ends without a key, for ``reason``."""

    reason: str


M = TypeVar("M", bound=type[LinkMessage])

_TYPES: list[type[LinkMessage]] = [
    BlockOpen,
    BlockReady,
    SiftAnnounce,
    SiftReply,
    EstimateRequest,
    EstimateReply,
    CascadeQuery,
    CascadeReply,
    CascadeDone,
    ReconcileData,
    VerifyTags,
    VerifyResult,
    AmplifySeed,
    BlockAuth,
    BlockAbort,
]
_decoder: msgspec.msgpack.Decoder[Any] | None = None
_encoder = msgspec.msgpack.Encoder()


def register_message(cls: M) -> M:
    """Add a message type (a tagged ``LinkMessage`` subclass) to the decoder's union."""
    global _decoder
    if cls not in _TYPES:
        _TYPES.append(cls)
        _decoder = None
    return cls


def message_types() -> tuple[type[LinkMessage], ...]:
    return tuple(_TYPES)


def encode_message(message: LinkMessage) -> bytes:
    """Compact msgpack encoding of one message."""
    return _encoder.encode(message)


def decode_message(data: bytes) -> LinkMessage:
    """Decode one message; raises only :class:`ProtocolError` on malformed input."""
    global _decoder
    if _decoder is None:
        _decoder = msgspec.msgpack.Decoder(Union[tuple(_TYPES)])  # noqa: UP007
    try:
        message = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"bad link message: {exc}", protocol="link", data=b"") from None
    except Exception as exc:  # e.g. recursion limits on hostile nesting
        raise ProtocolError(
            f"bad link message: {type(exc).__name__}", protocol="link", data=b""
        ) from None
    if not isinstance(message, LinkMessage):  # pragma: no cover - union guarantees it
        raise ProtocolError("bad link message", protocol="link")
    return message
