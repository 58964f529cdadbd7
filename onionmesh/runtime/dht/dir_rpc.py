"""The directory sources' RPCs between relays, on the DHT's datagram protocol (design §3.5).

Why on the DHT: its datagrams are already token-validated (no reflection, no amplification),
rate-limited per address and bounded to 4 KiB; a source reconciles with its gossip peers through
them (runtime.relay.dir_source) and checks its liveness share with `dir_self`.

Only a proven relay (one that proved its node ID to us, protocol.verified) gets an answer; any
other caller gets `nil` and, once, a proof request of its own.  Clients never call these: they
fetch documents through circuits (wire.dir_msg).

| name | args | result |
|---|---|---|
| `dir_self` | — | `[descriptor, heartbeat]`: the callee's own, for the current epoch |
| `dir_head` | epoch | the HEAD document (178 bytes) or nil |
| `dir_summary` | epoch, part (0..2) | `[bucket hash, ...]`: buckets 86·part .. 86·part+85, or nil |
| `dir_leaves` | epoch, bucket, page | `[[fp, desc hash (16), flags, weight], ...]`, ≤ 64 a page |
| `dir_get` | `[fp, ...]` (≤ 12) | `[entry, ...]` of the newest state, ≤ 3,500 bytes in all |
| `heartbeats` | epoch, bucket, page | `[heartbeat, ...]` held for that bucket, ≤ 40 a page |
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from onionmesh.directory.dir_state import BUCKETS, DIGEST_LEN, FP_LEN, U32_MAX
from onionmesh.runtime.dht.protocol import OnionmeshDhtProtocol

SUMMARY_PART = 86
LEAVES_PAGE = 64
HEARTBEATS_PAGE = 40
GET_MAX = 12
GET_BYTES = 3500
MAX_VERIFYING = 64
Leaf = tuple[bytes, bytes, int, int]


class DirProvider(Protocol):
    def own(self) -> tuple[bytes, bytes] | None: ...
    def head(self, epoch: int) -> bytes | None: ...
    def bucket_hashes(self, epoch: int) -> list[bytes] | None: ...
    def leaves(self, epoch: int, bucket: int) -> list[Leaf] | None: ...
    def entries(self, fps: list[bytes]) -> list[bytes]: ...
    def heartbeats(self, epoch: int, bucket: int) -> list[bytes]: ...


def _int(x: object, hi: int) -> int:
    if type(x) is not int or not 0 <= x <= hi:
        raise ValueError("bad integer argument")
    return x


def install(protocol: OnionmeshDhtProtocol, provider: DirProvider) -> None:
    """Answer the directory RPCs on `protocol` from `provider` (relays only)."""
    verifying: set[tuple[str, int]] = set()

    def proven(sender: tuple[str, int]) -> bool:
        host = str(ipaddress.ip_address(sender[0]))
        if any(addr == (host, sender[1]) for addr, _desc in protocol.verified.values()):
            return True
        if sender not in verifying and len(verifying) < MAX_VERIFYING:
            verifying.add(sender)

            async def prove() -> None:
                try:
                    await protocol.fetch_descriptor(sender, None)
                finally:
                    verifying.discard(sender)

            protocol._spawn(prove())
        protocol.stats["dir_unproven"] += 1
        return False

    def relays_only(fn: Any) -> Any:
        def handler(sender: tuple[str, int], *args: object) -> Any:
            if not proven(sender):
                return None
            return fn(*args)

        return handler

    def dir_self() -> Any:
        own = provider.own()
        return None if own is None else list(own)

    def dir_head(epoch: object) -> Any:
        return provider.head(_int(epoch, U32_MAX))

    def dir_summary(epoch: object, part: object) -> Any:
        hashes = provider.bucket_hashes(_int(epoch, U32_MAX))
        i = _int(part, 2)
        return None if hashes is None else hashes[i * SUMMARY_PART : (i + 1) * SUMMARY_PART]

    def dir_leaves(epoch: object, bucket: object, page: object = 0) -> Any:
        leaves = provider.leaves(_int(epoch, U32_MAX), _int(bucket, BUCKETS - 1))
        p = _int(page, 1024)
        if leaves is None:
            return None
        return [list(leaf) for leaf in leaves[p * LEAVES_PAGE : (p + 1) * LEAVES_PAGE]]

    def dir_get(fps: object) -> Any:
        if not isinstance(fps, list) or len(fps) > GET_MAX:
            raise ValueError("bad fingerprints")
        if not all(isinstance(fp, bytes) and len(fp) == FP_LEN for fp in fps):
            raise ValueError("bad fingerprints")
        out, size = [], 0
        for entry in provider.entries(fps):
            if size + len(entry) > GET_BYTES:
                break
            out.append(entry)
            size += len(entry)
        return out

    def heartbeats(epoch: object, bucket: object, page: object = 0) -> Any:
        beats = provider.heartbeats(_int(epoch, U32_MAX), _int(bucket, BUCKETS - 1))
        p = _int(page, 1024)
        return beats[p * HEARTBEATS_PAGE : (p + 1) * HEARTBEATS_PAGE]

    for fn in (dir_self, dir_head, dir_summary, dir_leaves, dir_get, heartbeats):
        protocol.extra_rpcs[fn.__name__] = relays_only(fn)


# --- the asking side: every answer's shape checked, never trusted further ----------------------
async def call(protocol: OnionmeshDhtProtocol, address: tuple[str, int], name: str, *args: Any) -> Any:
    """One directory RPC; None on timeout or a nil answer."""
    ok, result = await protocol.call(address, name, list(args))
    return result if ok else None


def parse_bytes_list(result: object, limit: int, size: int | None = None) -> list[bytes]:
    if not isinstance(result, list) or len(result) > limit:
        return []
    return [x for x in result if isinstance(x, bytes) and (size is None or len(x) == size)]


def parse_hashes(result: object) -> list[bytes]:
    return parse_bytes_list(result, SUMMARY_PART, DIGEST_LEN)


def parse_leaves(result: object) -> list[Leaf]:
    out: list[Leaf] = []
    if not isinstance(result, list) or len(result) > LEAVES_PAGE:
        return out
    for item in result:
        if (
            isinstance(item, list)
            and len(item) == 4
            and isinstance(item[0], bytes)
            and len(item[0]) == FP_LEN
            and isinstance(item[1], bytes)
            and len(item[1]) == 16
            and type(item[2]) is int
            and type(item[3]) is int
        ):
            out.append((item[0], item[1], item[2], item[3]))
    return out


__all__ = ["DirProvider", "call", "install", "parse_bytes_list", "parse_hashes", "parse_leaves"]
