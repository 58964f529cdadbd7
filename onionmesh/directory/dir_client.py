"""A client's directory, sans-I/O: which document to ask for next, the union of its sources'
lists, and evidence against a source that omits relays or serves stale descriptors (design §4.3-4.5).

Why apart from the fetching: every rule here is a decision on verified bytes (signed documents,
self-signed descriptors) and must be testable without sockets.  The runtime
(runtime.client.dir_fetch) feeds it the documents it fetched and acts on what it returns.

One refresh, epoch by epoch:
1. the primary source: `primary_request()` (SNAPSHOT first, then DIFF from the digest last
   verified from it) and `on_primary(...)`;
2. a `Round` for that state's epoch: a HEAD from every other source (`add_head`); for each that
   disagrees a SUMMARY (`add_summary`, which says which buckets differ) and those BUCKETs
   (`add_bucket`);
3. `finish()`: the view is the union (per relay the newest valid descriptor any source gave,
   RUNNING if any lists it RUNNING), and evidence: a source that omits a relay that more of the
   consulted sources list RUNNING than omit it and that was RUNNING in our view an epoch before
   ("omission"), or that serves a descriptor older than one another source gave that was
   published a whole epoch before the epoch's cut-off ("stale").  Evidence in `bad_after`
   distinct epochs makes a source bad (its guard is replaced: directory.dir_guards).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dir_state import BUCKETS, DirEntry, DirState
from onionmesh.errors import DirectoryError
from onionmesh.wire.dir_msg import DirGet

CUTOFF = 1 / 6  # as runtime.relay.dir_source: the state of epoch E is fixed this far into it
BAD_AFTER = 2  # evidence in this many distinct epochs: the source is bad
MAX_OTHERS = 4  # whole lists of cross-check sources kept


@dataclass(frozen=True)
class Evidence:
    """One source's signed list contradicted by others': `what` is "omission" or "stale"."""

    source: bytes  # the source's identity key
    epoch: int
    what: str
    relay: str  # fingerprint


@dataclass
class Round:
    """The cross-check of one epoch's state against the other sources."""

    epoch: int
    primary: bytes
    primary_state: DirState
    heads: dict[bytes, bytes] = field(default_factory=dict)  # source -> state digest
    summaries: dict[bytes, list[bytes]] = field(default_factory=dict)
    buckets: dict[bytes, dict[int, list[DirEntry]]] = field(default_factory=dict)

    def disagreeing(self) -> list[bytes]:
        digest = self.primary_state.digest()
        return [s for s, d in self.heads.items() if d != digest]

    def missing_buckets(self, source: bytes) -> list[int]:
        """Buckets of `source` that differ from the primary's and are not fetched yet."""
        hashes = self.summaries.get(source)
        if hashes is None:
            return []
        ours = self.primary_state.bucket_hashes()
        have = self.buckets.get(source, {})
        return [b for b in range(BUCKETS) if hashes[b] != ours[b] and b not in have]


class DirClient:
    def __init__(self, epoch_len: float = 3600.0, bad_after: int = BAD_AFTER) -> None:
        self.epoch_len = epoch_len
        self.bad_after = bad_after
        self.primary: bytes | None = None  # the source whose state we hold
        self.state: DirState | None = None
        self.overlay: dict[bytes, DirEntry] = {}  # what other sources add to the primary's state
        self.evidence: list[Evidence] = []
        self.round: Round | None = None
        # Cross-check sources whose whole list we hold (from a SNAPSHOT, then their DIFFs).
        self.others: dict[bytes, DirState] = {}
        # relay -> the first epoch it was RUNNING in our view: only a relay we have known for a
        # whole epoch can be "omitted" (sources that just started, or a network that just started,
        # have not all heard of a relay that just came up).
        self.known_since: dict[bytes, int] = {}

    # --- the primary ----------------------------------------------------------------------------
    def primary_request(self, source: bytes) -> DirGet:
        if self.state is None or self.primary != source:
            return DirGet(dl.Kind.SNAPSHOT)
        return DirGet(dl.Kind.DIFF, 0, self.state.digest())

    def _doc(self, source: bytes, data: bytes) -> dl.DirDoc:
        doc = dl.decode_doc(data)
        if doc.source_pk != source:
            raise DirectoryError("a document signed by another source")
        return doc

    def on_primary(self, source: bytes, data: bytes, now: float) -> DirState:
        """A SNAPSHOT or DIFF from the primary: the new state (DirectoryError/RemoteProtocolError if
        it does not verify or apply; the state held is then unchanged)."""
        doc = self._doc(source, data)
        if doc.kind == dl.Kind.SNAPSHOT:
            state = dl.state_from_snapshot(doc, now)
        elif doc.kind == dl.Kind.DIFF and self.state is not None and self.primary == source:
            state = (
                self.state if doc.state_digest == self.state.digest() else dl.apply_diff(self.state, doc, now)
            )
        else:
            raise DirectoryError("expected a SNAPSHOT or a DIFF")
        if self.state is not None and state.epoch < self.state.epoch and self.primary == source:
            raise DirectoryError("the source went back in time")
        self.primary, self.state = source, state
        self.round = Round(state.epoch, source, state)
        return state

    # --- the cross-check ------------------------------------------------------------------------
    def _need_round(self) -> Round:
        if self.round is None:
            raise DirectoryError("no cross-check round open (no state from a primary yet)")
        return self.round

    def head_request(self) -> DirGet:
        self._need_round()
        return DirGet(dl.Kind.HEAD, self.round.epoch)

    def add_head(self, source: bytes, data: bytes) -> bool:
        """True when this source's state for the round's epoch equals the primary's."""
        self._need_round()
        doc = self._doc(source, data)
        if doc.kind != dl.Kind.HEAD or doc.epoch != self.round.epoch:
            raise DirectoryError("not a HEAD of the epoch asked for")
        self.round.heads[source] = doc.state_digest
        return doc.state_digest == self.round.primary_state.digest()

    def summary_request(self) -> DirGet:
        self._need_round()
        return DirGet(dl.Kind.SUMMARY, self.round.epoch)

    def add_summary(self, source: bytes, data: bytes) -> list[int]:
        self._need_round()
        doc = self._doc(source, data)
        hashes = dl.summary_hashes(doc)
        if doc.epoch != self.round.epoch or doc.state_digest != self.round.heads.get(
            source, doc.state_digest
        ):
            raise DirectoryError("a SUMMARY that contradicts the source's HEAD")  # equivocation
        self.round.summaries[source] = hashes
        self.round.heads[source] = doc.state_digest
        return self.round.missing_buckets(source)

    def bucket_request(self, bucket: int) -> DirGet:
        self._need_round()
        return DirGet(dl.Kind.BUCKET, self.round.epoch, bytes(32), bucket)

    def add_bucket(self, source: bytes, data: bytes, now: float) -> None:
        self._need_round()
        doc = self._doc(source, data)
        hashes = self.round.summaries.get(source)
        if hashes is None or doc.epoch != self.round.epoch or len(doc.body) < 1:
            raise DirectoryError("a BUCKET without the source's SUMMARY")
        b, entries = dl.bucket_entries(doc, hashes[doc.body[0]], now)
        self.round.buckets.setdefault(source, {})[b] = entries

    def add_snapshot(self, source: bytes, data: bytes, now: float) -> list[int]:
        """A cross-check source's whole SNAPSHOT instead of its SUMMARY and BUCKETs (when more
        buckets differ than its per-circuit budget would serve: a primary that omits relays in
        many buckets, or two honest states under heavy churn); the buckets that differ."""
        self._need_round()
        doc = self._doc(source, data)
        if doc.kind != dl.Kind.SNAPSHOT or doc.epoch != self.round.epoch:
            raise DirectoryError("not a SNAPSHOT of the epoch asked for")
        return self._whole(source, doc.state_digest, dl.state_from_snapshot(doc, now))

    def other_request(self, source: bytes) -> DirGet | None:
        """A DIFF from the last whole state this cross-check source gave, if we hold one."""
        held = self.others.get(source)
        return None if held is None else DirGet(dl.Kind.DIFF, 0, held.digest())

    def add_other_diff(self, source: bytes, data: bytes, now: float) -> list[int]:
        """A cross-check source's DIFF from its state we hold (one DIR_GET an epoch, where a
        SNAPSHOT is allowed once in 6); the buckets that differ from the primary's."""
        self._need_round()
        held = self.others.get(source)
        doc = self._doc(source, data)
        if held is None or doc.kind != dl.Kind.DIFF or doc.epoch != self.round.epoch:
            raise DirectoryError("not a DIFF of the epoch asked for")
        state = held if doc.state_digest == held.digest() else dl.apply_diff(held, doc, now)
        return self._whole(source, doc.state_digest, state)

    def _whole(self, source: bytes, digest: bytes, state: DirState) -> list[int]:
        assert self.round is not None
        if digest != self.round.heads.get(source, digest):
            raise DirectoryError("a list that contradicts the source's HEAD")  # equivocation
        self.others[source] = state
        while len(self.others) > MAX_OTHERS:
            del self.others[next(iter(self.others))]
        hashes = state.bucket_hashes()
        ours = self.round.primary_state.bucket_hashes()
        differing = [b for b in range(BUCKETS) if hashes[b] != ours[b]]
        self.round.summaries[source] = hashes
        self.round.heads[source] = digest
        self.round.buckets[source] = {b: state.bucket(b) for b in differing}
        return differing

    def finish(self) -> list[Evidence]:
        """Take the union of what the round's sources listed; the new evidence."""
        r = self.round
        if r is None:
            return []
        cut = r.epoch * self.epoch_len + CUTOFF * self.epoch_len
        sources = [r.primary, *r.heads]
        differing = {b for s in r.buckets for b in r.buckets[s]}
        ours = r.primary_state.bucket_hashes()
        digest = r.primary_state.digest()
        overlay: dict[bytes, DirEntry] = {}
        new: list[Evidence] = []
        for b in sorted(differing):
            lists: dict[bytes, dict[bytes, DirEntry]] = {}
            for s in sources:
                agrees = r.heads.get(s) == digest or (s in r.summaries and r.summaries[s][b] == ours[b])
                if s == r.primary or agrees:
                    lists[s] = {e.fp: e for e in r.primary_state.bucket(b)}
                elif b in r.buckets.get(s, {}):
                    lists[s] = {e.fp: e for e in r.buckets[s][b]}
            for fp in sorted({fp for entries in lists.values() for fp in entries}):
                offered = [e for entries in lists.values() if (e := entries.get(fp)) is not None]
                newest = max(offered, key=lambda e: (e.descriptor.published, e.raw))
                running = any(e.running for e in offered)
                held = r.primary_state.entries.get(fp)
                if held is None or held.raw != newest.raw or (running and not held.running):
                    overlay[fp] = DirEntry(newest.descriptor, newest.raw, newest.flags | int(running), 0)
                listers = [s for s, entries in lists.items() if fp in entries and entries[fp].running]
                omitters = [s for s, entries in lists.items() if fp not in entries]
                known = self.known_since.get(fp)
                if len(listers) > len(omitters) and known is not None and known < r.epoch:
                    new += [Evidence(s, r.epoch, "omission", newest.descriptor.fingerprint) for s in omitters]
                if newest.descriptor.published < cut - self.epoch_len:  # every source had an epoch
                    for s, entries in lists.items():
                        e = entries.get(fp)
                        if e is not None and e.descriptor.published < newest.descriptor.published:
                            new.append(Evidence(s, r.epoch, "stale", newest.descriptor.fingerprint))
        self.overlay = overlay
        running = {e.fp for e in self.entries() if e.running}
        self.known_since = {fp: self.known_since.get(fp, r.epoch) for fp in running}
        self.evidence += new
        del self.evidence[:-4096]
        self.round = None
        return new

    def bad_sources(self) -> set[bytes]:
        epochs: dict[bytes, set[int]] = {}
        for ev in self.evidence:
            epochs.setdefault(ev.source, set()).add(ev.epoch)
        return {s for s, es in epochs.items() if len(es) >= self.bad_after}

    def forget_primary(self) -> None:
        """The primary turned bad or unreachable: the next one starts from a SNAPSHOT."""
        self.primary, self.round = None, None

    # --- the view -------------------------------------------------------------------------------
    def entries(self) -> Iterable[DirEntry]:
        merged = dict(self.state.entries) if self.state is not None else {}
        merged.update(self.overlay)
        return merged.values()

    def view(self, now: float) -> list[RelayDescriptor]:
        """The RUNNING relays of the union, usable now."""
        return [e.descriptor for e in self.entries() if e.running and e.descriptor.usable_until > now]


__all__ = ["BAD_AFTER", "DirClient", "Evidence", "Round"]
