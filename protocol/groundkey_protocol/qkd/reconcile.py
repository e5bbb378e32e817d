"""The sans-I/O reconciliation interface that every method (Cascade, LDPC) implements.

Contract
--------
A batch is ``frames`` frames of ``frame_bits`` bits each, a 2-D ``uint8`` array of
0/1 values (C-contiguous, shape ``(frames, frame_bits)``). Alice holds the
reference bits; Bob corrects his toward hers. Both roles are built from the same
:class:`ReconcileParams` (agreed beforehand: method, QBER estimate, public seed)
and are pure state machines:

- ``start()`` returns the role's first messages (possibly none);
- ``receive(message)`` consumes one peer message and returns the replies
  (possibly none); a message that does not fit raises ``ProtocolError``;
- ``done`` turns true when the role expects nothing more;
- ``disclosed_bits`` (``int64`` per frame) counts every bit either side has
  revealed about the frame (parities, syndromes, revealed bits); both roles agree
  on it at the end. This is λ_EC for the finite-key length;
- ``messages_sent`` / ``messages_received`` count messages;
- Bob's ``corrected_bits`` is his (best) estimate of Alice's bits; whether it is
  right is for verification (:mod:`groundkey_protocol.qkd.verify`) to decide.

Both roles handle the whole batch at once: one message round serves every frame.
The messages are :mod:`groundkey_protocol.link.messages` structs, so the daemon
and the simulator wire roles to real links and tests wire them to each other with
:func:`run_pair`.

Methods are found by name in :data:`RECONCILERS` (``"cascade-yan"``,
``"cascade-biconf"``, ``"cascade-original"``, ``"ldpc"``, ``"ldpc-blind"``)
and built with :func:`create_reconciler`.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import LinkMessage

__all__ = [
    "RECONCILERS",
    "Endpoint",
    "ReconcileAlice",
    "ReconcileBob",
    "ReconcileParams",
    "Reconciler",
    "Transcript",
    "create_reconciler",
    "run_pair",
]

Role = Literal["alice", "bob"]


@dataclass(frozen=True, slots=True)
class ReconcileParams:
    """What both ends agree on before reconciling a batch.

    ``qber`` is the estimated quantum bit error rate (0 < qber < 0.5), ``seed`` a
    public seed (permutations, subsets), ``block_id`` goes into every message.
    """

    method: str
    qber: float
    seed: int
    block_id: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.qber < 0.5:
            raise ValueError(f"qber must be in (0, 0.5), got {self.qber}")


class Reconciler(abc.ABC):
    """One role (Alice or Bob) of a reconciliation method over one batch."""

    role: Role

    def __init__(self, bits: NDArray[np.uint8], params: ReconcileParams) -> None:
        bits = np.ascontiguousarray(bits, dtype=np.uint8)
        if bits.ndim != 2 or bits.shape[0] < 1 or bits.shape[1] < 2:
            raise ValueError(f"bits must be (frames >= 1, frame_bits >= 2), got {bits.shape}")
        self.params = params
        self.frames, self.frame_bits = (int(s) for s in bits.shape)
        self._bits = bits
        self.disclosed_bits = np.zeros(self.frames, dtype=np.int64)
        self.messages_sent = 0
        self.messages_received = 0
        self.done = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.params.method!r}, frames={self.frames}, "
            f"frame_bits={self.frame_bits}, done={self.done})"
        )

    def start(self) -> list[LinkMessage]:
        out = self._start()
        self.messages_sent += len(out)
        return out

    def receive(self, message: LinkMessage) -> list[LinkMessage]:
        if self.done:
            raise ProtocolError(
                f"{self.role}: {type(message).__name__} after reconciliation ended",
                protocol=self.params.method,
            )
        if message.block_id != self.params.block_id:
            raise ProtocolError(
                f"{self.role}: message for block {message.block_id!r}", protocol=self.params.method
            )
        self.messages_received += 1
        out = self._receive(message)
        self.messages_sent += len(out)
        return out

    @abc.abstractmethod
    def _start(self) -> list[LinkMessage]: ...

    @abc.abstractmethod
    def _receive(self, message: LinkMessage) -> list[LinkMessage]: ...


class ReconcileAlice(Reconciler):
    """Holds the reference bits; answers (or sends) disclosures."""

    role: Role = "alice"


class ReconcileBob(Reconciler):
    """Corrects his bits toward Alice's."""

    role: Role = "bob"

    @property
    def corrected_bits(self) -> NDArray[np.uint8]:
        """Bob's current bits, shape ``(frames, frame_bits)`` (a view: do not modify)."""
        return self._bits


# name -> ("module:AliceClass", "module:BobClass")
RECONCILERS: dict[str, tuple[str, str]] = {
    "cascade-yan": (
        "groundkey_protocol.qkd.cascade:CascadeAlice",
        "groundkey_protocol.qkd.cascade:CascadeBob",
    ),
    "cascade-biconf": (
        "groundkey_protocol.qkd.cascade:CascadeAlice",
        "groundkey_protocol.qkd.cascade:CascadeBob",
    ),
    "cascade-original": (
        "groundkey_protocol.qkd.cascade:CascadeAlice",
        "groundkey_protocol.qkd.cascade:CascadeBob",
    ),
    "ldpc": (
        "groundkey_protocol.qkd.ldpc:LdpcAlice",
        "groundkey_protocol.qkd.ldpc:LdpcBob",
    ),
    "ldpc-blind": (
        "groundkey_protocol.qkd.ldpc:LdpcAlice",
        "groundkey_protocol.qkd.ldpc:LdpcBob",
    ),
}


def _load(spec: str) -> Callable[..., Reconciler]:
    module_name, _, attr = spec.partition(":")
    cls: Callable[..., Reconciler] = getattr(importlib.import_module(module_name), attr)
    return cls


def create_reconciler(role: Role, bits: NDArray[np.uint8], params: ReconcileParams) -> Reconciler:
    """Build the ``role`` side of ``params.method`` over ``bits``."""
    try:
        alice_spec, bob_spec = RECONCILERS[params.method]
    except KeyError:
        raise ValueError(
            f"unknown reconciliation method {params.method!r}; known: {sorted(RECONCILERS)}"
        ) from None
    return _load(alice_spec if role == "alice" else bob_spec)(bits, params)


@dataclass(slots=True)
class Transcript:
    """Everything that crossed the link in :func:`run_pair`: ``(sender, message)``."""

    messages: list[tuple[Role, LinkMessage]]

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"Transcript({len(self.messages)} messages)"


class Endpoint(Protocol):
    """Anything driven like a role: reconcilers, and the whole-block distillation roles."""

    @property
    def done(self) -> bool: ...

    def start(self) -> list[LinkMessage]: ...

    def receive(self, message: LinkMessage) -> list[LinkMessage]: ...


def run_pair(alice: Endpoint, bob: Endpoint, *, max_messages: int = 1_000_000) -> Transcript:
    """Shuttle messages between two roles in memory until neither has more to say.

    Returns the transcript; raises ``RuntimeError`` if a role is not done then.
    """
    sent: list[tuple[Role, LinkMessage]] = []
    pending: list[tuple[Role, LinkMessage]] = [("alice", m) for m in alice.start()]
    pending += [("bob", m) for m in bob.start()]
    head = 0
    while head < len(pending):
        sender, message = pending[head]
        head += 1
        sent.append((sender, message))
        if len(sent) > max_messages:
            raise RuntimeError(f"reconciliation exceeded {max_messages} messages")
        if sender == "alice":
            pending += [("bob", m) for m in bob.receive(message)]
        else:
            pending += [("alice", m) for m in alice.receive(message)]
    if not (alice.done and bob.done):
        raise RuntimeError(f"reconciliation stalled: alice.done={alice.done}, bob.done={bob.done}")
    return Transcript(sent)
