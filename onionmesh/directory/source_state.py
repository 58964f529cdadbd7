"""A directory source's inputs and the epoch state they give, sans-I/O and deterministic.

Why: every relay is a directory source (docs/directory-design.md §4.1).  Its state for epoch E
must be a pure function of the self-signed items it holds (descriptors and heartbeats) and of E,
never of the order or the moment they arrived, so that two honest sources that received the same
items sign the same 32-byte state digest and a client can cross-check them.

Rules at the cut-off of epoch E (time `at`, the same for every source: `epoch_start + cutoff`):
* per relay, the newest descriptor valid at `at` (ties: the smaller encoding);
* RUNNING iff a heartbeat for E-1 or E signs exactly that descriptor;
* otherwise listed without RUNNING iff it has a heartbeat (for any descriptor) for E-24 .. E,
  so a return costs clients a 26-byte SET, not a whole descriptor;
* otherwise not listed.

Bounded: at most `max_relays` relays, their two newest descriptors each, heartbeats of the last
`KEEP_EPOCHS` epochs; a heartbeat that verifies against no held descriptor is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.directory.dir_state import BUCKETS, MAX_ENTRIES, RUNNING, DirEntry, DirState, fp_bytes
from onionmesh.directory.heartbeat import Heartbeat, descriptor_hash
from onionmesh.errors import OnionmeshError

KEEP_EPOCHS = 24  # a relay silent longer than this leaves the state
DESCRIPTORS_PER_RELAY = 2  # the newest two: a heartbeat may still sign the one just replaced
FUTURE_EPOCHS = 1  # heartbeats at most this far ahead of the source's epoch (clock skew)
MAX_PENDING = 4096  # heartbeats held until their descriptor arrives (gossip order is not ours)


@dataclass
class _Relay:
    descriptors: dict[bytes, tuple[RelayDescriptor, bytes]] = field(default_factory=dict)  # by hash
    beats: dict[tuple[int, bytes], Heartbeat] = field(default_factory=dict)  # (epoch, desc hash)


class SourceState:
    def __init__(self, max_relays: int = MAX_ENTRIES) -> None:
        self.max_relays = max_relays
        self._relays: dict[bytes, _Relay] = {}
        self.refused = 0  # items that did not verify or did not fit
        # Heartbeats whose descriptor has not arrived yet: kept (bounded, oldest out) so that the
        # state does not depend on the order items came in.
        self._pending: dict[tuple[bytes, int, bytes], Heartbeat] = {}

    # --- inputs ---------------------------------------------------------------------------------
    def add_descriptor(self, raw: bytes, now: float) -> bool:
        """Take a descriptor in if it verifies at `now` and is new; True when it was."""
        try:
            desc = decode_and_verify(raw, now)
        except (OnionmeshError, ValueError):
            self.refused += 1
            return False
        fp = fp_bytes(desc)
        relay = self._relays.get(fp)
        if relay is None:
            if len(self._relays) >= self.max_relays:
                self.refused += 1
                return False
            relay = self._relays[fp] = _Relay()
        h = descriptor_hash(raw)
        if h in relay.descriptors:
            return False
        relay.descriptors[h] = (desc, raw)
        if len(relay.descriptors) > DESCRIPTORS_PER_RELAY:
            oldest = min(relay.descriptors, key=lambda k: (relay.descriptors[k][0].published, k))
            del relay.descriptors[oldest]
            relay.beats = {k: v for k, v in relay.beats.items() if k[1] in relay.descriptors}
            if oldest == h:
                return False
        for key in [k for k in self._pending if k[0] == fp]:
            if self._verify_into(relay, self._pending[key]):
                del self._pending[key]
        return True

    def add_heartbeat(self, hb: Heartbeat, epoch: int) -> bool:
        """Take a heartbeat in if it signs a descriptor held and is recent (`epoch`: ours now)."""
        if not epoch - KEEP_EPOCHS <= hb.epoch <= epoch + FUTURE_EPOCHS:
            return False
        relay = self._relays.get(hb.fp)
        if relay is not None and self._verify_into(relay, hb):
            return True
        key = (hb.fp, hb.epoch, hb.signature)
        if key not in self._pending:
            self._pending[key] = hb
            while len(self._pending) > MAX_PENDING:
                del self._pending[next(iter(self._pending))]
        return False

    def _verify_into(self, relay: _Relay, hb: Heartbeat) -> bool:
        for h, (desc, raw) in relay.descriptors.items():
            if (hb.epoch, h) in relay.beats:
                continue
            try:
                hb.verify(desc, raw)
            except OnionmeshError:
                continue
            relay.beats[(hb.epoch, h)] = hb
            return True
        return False

    def prune(self, epoch: int, now: float) -> None:
        """Forget expired descriptors and heartbeats older than KEEP_EPOCHS."""
        for fp in list(self._relays):
            relay = self._relays[fp]
            relay.descriptors = {h: d for h, d in relay.descriptors.items() if d[0].usable_until > now}
            keep = relay.descriptors
            relay.beats = {
                k: v for k, v in relay.beats.items() if k[0] >= epoch - KEEP_EPOCHS and k[1] in keep
            }
            if not relay.descriptors:
                del self._relays[fp]
        self._pending = {k: v for k, v in self._pending.items() if k[1] >= epoch - KEEP_EPOCHS}

    # --- what a source serves -------------------------------------------------------------------
    def state(self, epoch: int, at: float) -> DirState:
        """The state of epoch `epoch` as fixed at its cut-off `at` (a pure function of the items)."""
        entries = []
        for relay in self._relays.values():
            valid = [
                (d.published, raw, h, d)
                for h, (d, raw) in relay.descriptors.items()
                if d.usable_until > at and d.published <= at + 600
            ]
            if not valid:
                continue
            _, raw, h, desc = min(valid, key=lambda v: (-v[0], v[1]))
            seen = [e for e, _h in relay.beats if e <= epoch]
            if (epoch, h) in relay.beats or (epoch - 1, h) in relay.beats:
                flags = RUNNING
            elif seen and max(seen) >= epoch - KEEP_EPOCHS:
                flags = 0
            else:
                continue
            entries.append(DirEntry(desc, raw, flags, 0))
        return DirState(epoch, entries)

    def descriptor(self, fp: bytes, h16: bytes) -> bytes | None:
        """The raw descriptor of relay `fp` whose hash starts with `h16`, if held."""
        relay = self._relays.get(fp)
        if relay is None:
            return None
        for h, (_desc, raw) in relay.descriptors.items():
            if h.startswith(h16):
                return raw
        return None

    def has_hash(self, fp: bytes, h16: bytes) -> bool:
        return self.descriptor(fp, h16) is not None

    def has_beat(self, fp: bytes, h: bytes, epochs: tuple[int, ...]) -> bool:
        """Whether a heartbeat of relay `fp` for descriptor hash `h` in one of `epochs` is held."""
        relay = self._relays.get(fp)
        return relay is not None and any((e, h) in relay.beats for e in epochs)

    def heartbeats(self, bucket: int, epochs: tuple[int, ...]) -> list[Heartbeat]:
        """The heartbeats held for relays of `bucket` (first fingerprint byte) in `epochs`, sorted."""
        if not 0 <= bucket < BUCKETS:
            raise ValueError("bucket out of range")
        out = [
            hb
            for fp, relay in self._relays.items()
            if fp[0] == bucket
            for (e, _h), hb in relay.beats.items()
            if e in epochs
        ]
        return sorted(out, key=lambda hb: (hb.fp, hb.epoch, hb.signature))

    def lacking(self, epoch: int) -> list[int]:
        """Buckets holding a relay with no heartbeat for `epoch`: where a gossip round pulls
        heartbeats, whatever the states say (two sources whose states of the last cut agree can
        still hold different heartbeats of this epoch, which decide the next cut's RUNNING)."""
        return sorted(
            {fp[0] for fp, relay in self._relays.items() if all(e != epoch for e, _h in relay.beats)}
        )

    def relays(self) -> list[RelayDescriptor]:
        """Every relay's newest held descriptor (gossip peers and the liveness share come from these)."""
        out = []
        for relay in self._relays.values():
            out.append(max((d for d, _ in relay.descriptors.values()), key=lambda d: d.published))
        return out

    def __len__(self) -> int:
        return len(self._relays)


__all__ = ["KEEP_EPOCHS", "SourceState"]
