"""Heartbeats: a relay's signed "I was reachable with this exact descriptor in epoch E" (sans-I/O).

Why: a directory source lists a relay RUNNING only from evidence the relay itself signed, fetched
at its advertised address, never from who answered a crawl first (docs/directory-design.md §3.3).
A heartbeat is bound to one descriptor (its hash), so it cannot be replayed for an older one.

    heartbeat = fp (20) | epoch u32 | signature (64)                       88 bytes
    signature = Ed25519(relay identity,
                        "onionmesh heartbeat v1\\x00" | fp | epoch | H256("om-dir-desc", descriptor))
"""

from __future__ import annotations

from dataclasses import dataclass

from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dir_state import FP_LEN, U32_MAX, dir_hash, fp_bytes
from onionmesh.errors import RemoteProtocolError

CONTEXT = b"onionmesh heartbeat v1\x00"
SIG_LEN = 64
HEARTBEAT_LEN = FP_LEN + 4 + SIG_LEN


def descriptor_hash(raw: bytes) -> bytes:
    """What a heartbeat signs of its descriptor: the exact bytes, hashed."""
    return dir_hash(b"om-dir-desc", raw)


@dataclass(frozen=True)
class Heartbeat:
    fp: bytes
    epoch: int
    signature: bytes

    def encode(self) -> bytes:
        return self.fp + self.epoch.to_bytes(4, "big") + self.signature

    def verify(self, desc: RelayDescriptor, raw: bytes | None = None) -> None:
        """CryptoError unless the relay of `desc` signed this heartbeat for exactly `desc`."""
        if fp_bytes(desc) != self.fp:
            raise RemoteProtocolError("heartbeat of another relay")
        raw = desc.encode() if raw is None else raw
        message = self.fp + self.epoch.to_bytes(4, "big") + descriptor_hash(raw)
        verify_signature(desc.identity_pk, CONTEXT, message, self.signature)


def sign_heartbeat(identity: IdentityKey, desc: RelayDescriptor, epoch: int) -> Heartbeat:
    if not 0 <= epoch <= U32_MAX:
        raise ValueError("epoch out of range")
    if desc.identity_pk != identity.public:
        raise ValueError("a relay signs heartbeats only for its own descriptor")
    fp = fp_bytes(desc)
    message = fp + epoch.to_bytes(4, "big") + descriptor_hash(desc.encode())
    return Heartbeat(fp, epoch, identity.sign(CONTEXT, message))


def decode_heartbeat(data: object) -> Heartbeat:
    """Parse (not verify: that needs the descriptor) exactly 88 bytes."""
    if not isinstance(data, bytes) or len(data) != HEARTBEAT_LEN:
        raise RemoteProtocolError("a heartbeat is 88 bytes")
    return Heartbeat(data[:FP_LEN], int.from_bytes(data[FP_LEN : FP_LEN + 4], "big"), data[FP_LEN + 4 :])


__all__ = ["HEARTBEAT_LEN", "Heartbeat", "decode_heartbeat", "descriptor_hash", "sign_heartbeat"]
