"""Signed relay lists served by directory sources: state, digests, snapshots and diffs, sans-I/O.

Why: a client keeps its view fresh with an hourly diff from one directory guard and checks it
against other sources by a 32-byte state digest, instead of crawling every relay
(docs/directory-design.md §3.1-3.2, issues 19 and 23).  No authority signs anything: each
descriptor is self-signed by its relay and verified here; the source signs only its own claim
("my state at epoch E is this"), so a lie (an omission, a stale descriptor) is a signed statement
that another source's list exposes.

* `DirState` (directory.dir_state): entries by fingerprint; bucket hashes and state digest.
* `DirDoc`: the signed envelope (SNAPSHOT, DIFF, HEAD, SUMMARY, BUCKET), one valid encoding.
* `make_*` build documents; `state_from_snapshot`, `apply_diff`, `summary_hashes`,
  `bucket_entries` read them, verifying every descriptor at `now`.

Untrusted bytes raise OnionmeshError subclasses only: RemoteProtocolError (malformed),
CryptoError (signature), DirectoryError (a well-formed document that does not fit the state).
Not in this module: fetching, choosing sources, heartbeats, weights' computation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.directory.descriptor import decode_and_verify
from onionmesh.directory.dir_state import (
    BUCKETS,
    DIGEST_LEN,
    FP_LEN,
    KNOWN_FLAGS,
    MAX_ENTRIES,
    RUNNING,
    DirEntry,
    DirState,
    bucket_hash_of,
    fp_bytes,
    pull_entry,
    state_digest,
)
from onionmesh.errors import DirectoryError, RemoteProtocolError, Truncated
from onionmesh.wire.buffer import Buffer

MAGIC = b"OMDL"
VERSION = 1
SIGNATURE_CONTEXT = b"onionmesh directory list v1\x00"
SIG_LEN = 64
HEADER_LEN = 4 + 1 + 1 + 32 + 4 + 4 + DIGEST_LEN + DIGEST_LEN + 4  # up to the body
MAX_BODY = 16 * 1024 * 1024
_TAIL = 8 + 8 + SIG_LEN  # published, expires, signature: what a re-signing changes
_ENTRY_MIN = 1 + 4 + 2


class Kind(enum.IntEnum):
    SNAPSHOT = 1
    DIFF = 2
    HEAD = 3
    SUMMARY = 4
    BUCKET = 5


class Op(enum.IntEnum):
    ADD = 1
    REMOVE = 2
    RENEW = 3
    SET = 4


# --------------------------------------------------------------------------- the envelope
@dataclass(frozen=True)
class DirDoc:
    kind: Kind
    source_pk: bytes
    epoch: int
    from_epoch: int
    from_digest: bytes
    state_digest: bytes
    body: bytes
    signature: bytes

    def _signed(self) -> bytes:
        buf = Buffer().push_bytes(MAGIC).push_u8(VERSION).push_u8(self.kind).push_bytes(self.source_pk)
        buf.push_u32(self.epoch).push_u32(self.from_epoch).push_bytes(self.from_digest)
        buf.push_bytes(self.state_digest).push_u32(len(self.body)).push_bytes(self.body)
        return buf.getvalue()

    def encode(self) -> bytes:
        return self._signed() + self.signature


def sign_doc(
    identity: IdentityKey,
    kind: Kind,
    epoch: int,
    digest: bytes,
    body: bytes = b"",
    *,
    from_epoch: int | None = None,
    from_digest: bytes = bytes(DIGEST_LEN),
) -> DirDoc:
    if len(body) > MAX_BODY:
        raise ValueError("body too large")
    unsigned = DirDoc(
        kind,
        identity.public,
        epoch,
        epoch if from_epoch is None else from_epoch,
        from_digest,
        digest,
        body,
        bytes(SIG_LEN),
    )
    return replace(unsigned, signature=identity.sign(SIGNATURE_CONTEXT, unsigned._signed()))


def decode_doc(data: bytes) -> DirDoc:
    """Parse and check the envelope and its signature (not the body's descriptors)."""
    data = bytes(data)
    try:
        buf = Buffer(data)
        if buf.pull_bytes(4) != MAGIC:
            raise RemoteProtocolError("not a directory document")
        if buf.pull_u8() != VERSION:
            raise RemoteProtocolError("unknown directory document version")
        try:
            kind = Kind(buf.pull_u8())
        except ValueError as exc:
            raise RemoteProtocolError("unknown directory document kind") from exc
        source_pk = buf.pull_bytes(32)
        epoch, from_epoch = buf.pull_u32(), buf.pull_u32()
        from_digest, digest = buf.pull_bytes(DIGEST_LEN), buf.pull_bytes(DIGEST_LEN)
        length = buf.pull_u32()
        if length > MAX_BODY:
            raise RemoteProtocolError("directory document body too large")
        body = buf.pull_bytes(length)
        signature = buf.pull_bytes(SIG_LEN)
        buf.expect_end()
    except Truncated as exc:
        raise RemoteProtocolError("truncated directory document") from exc
    if kind != Kind.DIFF and (from_epoch != epoch or from_digest != bytes(DIGEST_LEN)):
        raise RemoteProtocolError("from fields are only for diffs")
    if kind == Kind.HEAD and body:
        raise RemoteProtocolError("a HEAD has no body")
    doc = DirDoc(kind, source_pk, epoch, from_epoch, from_digest, digest, body, signature)
    verify_signature(source_pk, SIGNATURE_CONTEXT, doc._signed(), signature)
    return doc


def _expect(doc: DirDoc, kind: Kind) -> None:
    if doc.kind != kind:
        raise DirectoryError(f"expected a {kind.name}, got a {doc.kind.name}")


def _count(buf: Buffer, smallest: int) -> int:
    n = buf.pull_u32()
    if n > MAX_ENTRIES or n * smallest > buf.remaining:
        raise RemoteProtocolError("entry count out of range")
    return n


def _entries_body(entries: list[DirEntry]) -> bytes:
    buf = Buffer().push_u32(len(entries))
    for entry in entries:
        buf.push_bytes(entry.encode())
    return buf.getvalue()


def _pull_sorted_entries(buf: Buffer, now: float) -> list[DirEntry]:
    out: list[DirEntry] = []
    for _ in range(_count(buf, _ENTRY_MIN)):
        entry = pull_entry(buf, now)
        if out and entry.fp <= out[-1].fp:
            raise RemoteProtocolError("entries not in strictly ascending fingerprint order")
        out.append(entry)
    return out


def _parse(doc: DirDoc, parse):  # type: ignore[no-untyped-def]
    try:
        buf = Buffer(doc.body)
        result = parse(buf)
        buf.expect_end()
    except Truncated as exc:
        raise RemoteProtocolError("truncated directory body") from exc
    return result


# --------------------------------------------------------------------------- snapshot, head, summary, bucket
def make_snapshot(identity: IdentityKey, state: DirState) -> DirDoc:
    return sign_doc(
        identity, Kind.SNAPSHOT, state.epoch, state.digest(), _entries_body(state.sorted_entries())
    )


def state_from_snapshot(doc: DirDoc, now: float) -> DirState:
    _expect(doc, Kind.SNAPSHOT)
    state = DirState(doc.epoch, _parse(doc, lambda buf: _pull_sorted_entries(buf, now)))
    if state.digest() != doc.state_digest:
        raise DirectoryError("snapshot does not match its signed digest")
    return state


def make_head(identity: IdentityKey, state: DirState) -> DirDoc:
    return sign_doc(identity, Kind.HEAD, state.epoch, state.digest())


def make_summary(identity: IdentityKey, state: DirState) -> DirDoc:
    hashes = state.bucket_hashes()
    return sign_doc(identity, Kind.SUMMARY, state.epoch, state_digest(state.epoch, hashes), b"".join(hashes))


def summary_hashes(doc: DirDoc) -> list[bytes]:
    _expect(doc, Kind.SUMMARY)
    if len(doc.body) != BUCKETS * DIGEST_LEN:
        raise RemoteProtocolError("a SUMMARY holds 256 bucket hashes")
    hashes = [doc.body[i : i + DIGEST_LEN] for i in range(0, len(doc.body), DIGEST_LEN)]
    if state_digest(doc.epoch, hashes) != doc.state_digest:
        raise DirectoryError("summary does not match its signed digest")
    return hashes


def make_bucket(identity: IdentityKey, state: DirState, b: int) -> DirDoc:
    body = bytes([b]) + _entries_body(state.bucket(b))
    return sign_doc(identity, Kind.BUCKET, state.epoch, state.digest(), body)


def bucket_entries(doc: DirDoc, expected_hash: bytes, now: float) -> tuple[int, list[DirEntry]]:
    """The entries of one bucket, checked against the bucket hash of a SUMMARY from the same source."""
    _expect(doc, Kind.BUCKET)

    def parse(buf: Buffer) -> tuple[int, list[DirEntry]]:
        b = buf.pull_u8()
        return b, _pull_sorted_entries(buf, now)

    b, entries = _parse(doc, parse)
    if any(e.fp[0] != b for e in entries):
        raise RemoteProtocolError("entry outside its bucket")
    if bucket_hash_of(b, entries) != expected_hash:
        raise DirectoryError("bucket does not match the source's summary")
    return b, entries


# --------------------------------------------------------------------------- diffs
def _renewable(old: DirEntry, new: DirEntry) -> bool:
    return (
        old.raw[:-_TAIL] == new.raw[:-_TAIL]
        and new.descriptor.published > old.descriptor.published
        and (old.flags, old.weight) == (new.flags, new.weight)
    )


def make_diff(identity: IdentityKey, old: DirState, new: DirState) -> DirDoc:
    """The smallest ops (per relay: one of ADD, REMOVE, RENEW, SET) that turn `old` into `new`."""
    buf = Buffer()
    ops = 0
    for fp in sorted(old.entries.keys() | new.entries.keys()):
        before, after = old.entries.get(fp), new.entries.get(fp)
        if before == after:
            continue
        ops += 1
        if after is None:
            buf.push_u8(Op.REMOVE).push_bytes(fp)
        elif before is None or (before.raw != after.raw and not _renewable(before, after)):
            buf.push_u8(Op.ADD).push_bytes(after.encode())
        elif before.raw != after.raw:
            d = after.descriptor
            buf.push_u8(Op.RENEW).push_bytes(fp).push_u64(d.published).push_u64(d.expires).push_bytes(
                d.signature
            )
        else:
            buf.push_u8(Op.SET).push_bytes(fp).push_u8(after.flags).push_u32(after.weight)
    body = Buffer().push_u32(ops).push_bytes(buf.getvalue()).getvalue()
    return sign_doc(
        identity, Kind.DIFF, new.epoch, new.digest(), body, from_epoch=old.epoch, from_digest=old.digest()
    )


def _held(entries: Mapping[bytes, DirEntry], fp: bytes) -> DirEntry:
    held = entries.get(fp)
    if held is None:
        raise DirectoryError("diff names a relay the state does not hold")
    return held


def apply_diff(state: DirState, doc: DirDoc, now: float) -> DirState:
    """The state the diff leads to; DirectoryError if it does not apply to `state` or lands elsewhere."""
    _expect(doc, Kind.DIFF)
    if doc.from_epoch != state.epoch or doc.from_digest != state.digest():
        raise DirectoryError("diff is from another state")
    entries = dict(state.entries)

    def parse(buf: Buffer) -> None:
        last = b""
        for _ in range(_count(buf, 1 + FP_LEN)):
            op = buf.pull_u8()
            if op == Op.ADD:
                entry = pull_entry(buf, now)
                fp = entry.fp
                held = entries.get(fp)
                if held is not None and entry.descriptor.published <= held.descriptor.published:
                    raise DirectoryError("ADD of a descriptor not newer than the one held")
                entries[fp] = entry
            elif op == Op.REMOVE:
                fp = buf.pull_bytes(FP_LEN)
                _held(entries, fp)
                del entries[fp]
            elif op == Op.RENEW:
                fp = buf.pull_bytes(FP_LEN)
                published, expires, signature = buf.pull_u64(), buf.pull_u64(), buf.pull_bytes(SIG_LEN)
                held = _held(entries, fp)
                if published <= held.descriptor.published:
                    raise DirectoryError("RENEW not newer than the descriptor held")
                tail = Buffer().push_u64(published).push_u64(expires).push_bytes(signature).getvalue()
                raw = held.raw[:-_TAIL] + tail
                entries[fp] = DirEntry(decode_and_verify(raw, now), raw, held.flags, held.weight)
            elif op == Op.SET:
                fp = buf.pull_bytes(FP_LEN)
                flags, weight = buf.pull_u8(), buf.pull_u32()
                if flags & ~KNOWN_FLAGS:
                    raise RemoteProtocolError("unknown entry flags")
                held = _held(entries, fp)
                entries[fp] = replace(held, flags=flags, weight=weight)
            else:
                raise RemoteProtocolError("unknown diff operation")
            if fp <= last:
                raise RemoteProtocolError("diff operations not in strictly ascending fingerprint order")
            last = fp

    _parse(doc, parse)
    if len(entries) > MAX_ENTRIES:
        raise DirectoryError("diff leads to too many entries")
    result = DirState(doc.epoch, entries.values())
    if result.digest() != doc.state_digest:
        raise DirectoryError("diff does not lead to its signed digest")
    return result


__all__ = [
    "BUCKETS",
    "MAX_BODY",
    "MAX_ENTRIES",
    "RUNNING",
    "DirDoc",
    "DirEntry",
    "DirState",
    "Kind",
    "Op",
    "apply_diff",
    "bucket_entries",
    "bucket_hash_of",
    "decode_doc",
    "fp_bytes",
    "make_bucket",
    "make_diff",
    "make_head",
    "make_snapshot",
    "make_summary",
    "sign_doc",
    "state_digest",
    "state_from_snapshot",
    "summary_hashes",
]
