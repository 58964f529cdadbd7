"""End-to-end flow and congestion control: an RTT-driven circuit window, fixed stream windows.

Circuits.  The sender may have `cwnd` DATA cells unacknowledged.  The receiver answers every
SENDME_INC-th DATA cell with a SENDME carrying that cell's secret digest (layer T1), so it
cannot acknowledge data it never received (Tor proposal 289); those cells carry a random
nonce so the digest cannot be predicted.  The sender times each such cell to its SENDME and
steers `cwnd` with TCP Vegas as in Tor proposal 324: it estimates how many of its cells sit in
queues (`cwnd - cwnd * min_rtt / rtt`) and grows the window while that queue is short, shrinks
it when it is long.  So a circuit fills a fast, long path (the window is not a fixed cap) and
keeps only a few dozen cells queued at its bottleneck, which is what keeps interactive
circuits responsive next to bulk ones and memory small.  The clock is the caller's: times are
plain floats handed in, and with a constant clock the window simply stays at CWND_INIT.

Streams.  A stream's window is a receive buffer, credited only when the application took the
data (a SENDME per STREAM_INCREMENT cells consumed, and none while 10 or more cells wait), so a
slow reader stops its sender.  It starts at Tor's 500 cells (2 MB of our cells) but is not a
fixed cap: a stream moves at most one window per round trip, so at a 0.5 s round trip 500 cells
held one download to 4 MB/s while its circuit carried 10 MB/s for four streams (issue 20).  The
receiver tunes it as TCP's receive-buffer autotuning does: it measures how fast the application
takes the data while it keeps up, and keeps the window at twice that rate times the circuit's
round trip (at least 500 cells, at most STREAM_WINDOW_MAX = CWND_MAX, the circuit's own largest
window); a window-limited stream so doubles its window every quarter window.  The extra
credit goes in a stream SENDME whose body is a u16 increment (an empty body is 50 cells, as
before); only toward a peer that understands it (relay protocol version 2).  A reader that is
slow from the start never grows its window; one that slows later stops granting credit at once,
so a receiver never holds more than its window of any stream.  The circuit window, whose SENDMEs
are authenticated, still bounds what an exit sends whatever credit a client grants.

Not in this module: who sends what, cells, crypto.
"""

from __future__ import annotations

import hmac
import math
from collections import deque

from onionmesh.errors import RemoteProtocolError

SENDME_INC = 16  # DATA cells per circuit SENDME (64 KiB; Tor: 31 cells of 509 bytes, 15.5 KiB)
CWND_INIT = 4 * SENDME_INC  # as Tor: 4 SENDMEs' worth
CWND_MIN = 2 * SENDME_INC
CWND_MAX = 4096  # 16 MiB in flight per circuit and direction; also the bound relays enforce per queue
# Vegas thresholds on the estimated queue, in cells: Tor's exit parameters are 2x, 4x, 3x and 6x
# its outbuf (62 cells: what one TLS write carries).  Our outbuf is two 64-cell link records:
# measured in one run on the 2-core machine with 2048-byte cells, one record (alpha..beta =
# 128..256 cells) gave 20.3 MB/s bulk and 44-53 ms for a 1 KiB fetch next to it; two records
# 23.2 MB/s (as fast as no congestion control at all, 23.0) and 75-86 ms (235-245 ms without
# congestion control).  With 4096-byte cells, halving these and CWND_MAX (the same bytes as
# before) cost 8 % of bulk throughput (70 against 76 MB/s, three runs each): kept in cells.
OUTBUF_CELLS = 128
VEGAS_ALPHA = 2 * OUTBUF_CELLS  # below: grow
VEGAS_BETA = 4 * OUTBUF_CELLS  # above: shrink
VEGAS_GAMMA = 3 * OUTBUF_CELLS  # slow start ends when the queue passes this
VEGAS_DELTA = 6 * OUTBUF_CELLS  # above: cut straight back to the estimated BDP
STREAM_WINDOW = 500
STREAM_INCREMENT = 50
STREAM_WINDOW_MAX = CWND_MAX
CREDIT_LEN = 2  # a stream SENDME's body: empty (STREAM_INCREMENT) or u16 increment


def encode_stream_credit(cells: int) -> bytes:
    """A stream SENDME's body granting `cells` (empty for the classic increment)."""
    if cells == STREAM_INCREMENT:
        return b""
    if not 1 <= cells <= STREAM_WINDOW_MAX:
        raise ValueError("stream credit out of range")
    return cells.to_bytes(CREDIT_LEN, "big")


def decode_stream_credit(body: bytes) -> int:
    """The credit a stream SENDME's body grants; RemoteProtocolError for anything else."""
    if not body:
        return STREAM_INCREMENT
    if len(body) != CREDIT_LEN:
        raise RemoteProtocolError("stream SENDME body of bad length")
    cells = int.from_bytes(body, "big")
    if not 1 <= cells <= STREAM_WINDOW_MAX:
        raise RemoteProtocolError("stream SENDME credit out of range")
    return cells


class CircuitFlow:
    """One circuit end's sending window (Vegas) and its receiving SENDME duty."""

    __slots__ = (
        "_acks",
        "_expected",
        "_received",
        "_sent",
        "cwnd",
        "ewma_rtt",
        "in_slow_start",
        "inflight",
        "min_rtt",
    )

    def __init__(self) -> None:
        self.cwnd = CWND_INIT
        self.inflight = 0
        self.in_slow_start = True
        self.min_rtt = math.inf
        self.ewma_rtt = 0.0
        self._sent = 0
        self._received = 0
        self._acks = 0  # SENDMEs since the last steady-state window update
        self._expected: deque[tuple[bytes, float]] = deque()

    @property
    def package(self) -> int:
        """DATA cells that may be sent now."""
        return max(0, self.cwnd - self.inflight)

    def can_send(self) -> bool:
        return self.inflight < self.cwnd

    def next_is_tracked(self) -> bool:
        """Will the next DATA cell be one whose digest a SENDME must echo? (It then carries a nonce.)"""
        return (self._sent + 1) % SENDME_INC == 0

    def on_data_sent(self, digest: bytes, now: float = 0.0) -> None:
        self.inflight += 1
        self._sent += 1
        if self._sent % SENDME_INC == 0:
            self._expected.append((digest, now))

    def on_data_received(self, digest: bytes) -> bytes | None:
        """Count a DATA cell; returns the digest to put in a SENDME when one is due."""
        self._received += 1
        return digest if self._received % SENDME_INC == 0 else None

    def on_sendme(self, digest: bytes, now: float = 0.0) -> None:
        if not self._expected:
            raise RemoteProtocolError("unexpected circuit SENDME")
        expected, sent_at = self._expected.popleft()
        if not hmac.compare_digest(expected, digest):
            raise RemoteProtocolError("circuit SENDME does not authenticate")
        self.inflight -= SENDME_INC
        rtt = now - sent_at
        if rtt > 0:
            self._on_rtt(rtt)

    def _on_rtt(self, rtt: float) -> None:
        """Tor's Vegas (proposal 324 §3.3): every SENDME in slow start, once per window after."""
        n = max(2, self.cwnd // SENDME_INC // 2)  # EWMA over half a window of SENDMEs, as Tor
        self.ewma_rtt = rtt if self.ewma_rtt == 0 else self.ewma_rtt + 2 * (rtt - self.ewma_rtt) / (n + 1)
        self.min_rtt = min(self.min_rtt, rtt)
        self._acks += 1
        if not self.in_slow_start and self._acks * SENDME_INC < self.cwnd:
            return
        self._acks = 0
        bdp = self.cwnd * self.min_rtt / self.ewma_rtt
        queue = self.cwnd - bdp
        if self.in_slow_start:
            if queue < VEGAS_GAMMA:
                self.cwnd += SENDME_INC  # one SENDME_INC per SENDME: the window doubles every RTT
            else:
                self.cwnd = int(bdp) + VEGAS_GAMMA
                self.in_slow_start = False
        elif queue > VEGAS_DELTA:
            self.cwnd = int(bdp) + VEGAS_DELTA - SENDME_INC
        elif queue > VEGAS_BETA:
            self.cwnd -= SENDME_INC
        elif queue < VEGAS_ALPHA:
            self.cwnd += SENDME_INC
        self.cwnd = min(CWND_MAX, max(CWND_MIN, self.cwnd))


class StreamFlow:
    """One stream end's sending credit (`package`) and receiving window (`deliver`, `window`)."""

    __slots__ = ("_epoch_consumed", "_epoch_start", "_unacked", "deliver", "package", "window")

    def __init__(self) -> None:
        self.package = STREAM_WINDOW
        self.deliver = STREAM_WINDOW
        self.window = STREAM_WINDOW  # what the receiver grants at most; grows (autotune)
        self._unacked = 0
        self._epoch_start: float | None = None  # when the current window's worth began to be consumed
        self._epoch_consumed = 0

    def can_send(self) -> bool:
        return self.package > 0

    def on_data_received(self) -> None:
        self.deliver -= 1
        self._unacked += 1
        if self.deliver < 0:
            raise RemoteProtocolError("peer exceeded the stream window")

    def on_data_consumed(self, cells: int = 1, now: float = 0.0, rtt: float = 0.0) -> int:
        """The application took `cells` DATA cells; the credit a stream SENDME must grant now (0:
        none due).  With `rtt` > 0 (the circuit's round trip, on the clock of `now`) the window
        may grow; with 0 it stays fixed (a peer that does not understand larger credit)."""
        self._unacked = max(0, self._unacked - cells)
        if rtt > 0 and cells:
            self._autotune(cells, now, rtt)
        if self.deliver <= self.window - STREAM_INCREMENT and self._unacked < 10:
            credit = self.window - self.deliver
            if rtt <= 0:
                credit = STREAM_INCREMENT  # classic SENDMEs, one per increment
            self.deliver += credit
            return credit
        return 0

    def _autotune(self, cells: int, now: float, rtt: float) -> None:
        """Measure the rate at which the application takes data, over a quarter window at a time,
        while it keeps up (fewer than 10 cells waiting); if that rate times the round trip (what
        the path would hold) exceeds half the window, the window becomes twice that, as TCP's
        receive-buffer autotuning does: a window-limited stream doubles per quarter window, a
        path-limited one settles at twice its bandwidth-delay product, and a slow reader's
        window stays at twice what it takes per round trip (never below the initial 500)."""
        if self._unacked >= 10:
            self._epoch_start = None  # the reader is behind: what it takes now says nothing
            return
        if self._epoch_start is None:  # an epoch starts after the first data or a catch-up
            self._epoch_start, self._epoch_consumed = now, 0
            return
        self._epoch_consumed += cells
        elapsed = now - self._epoch_start
        if self._epoch_consumed < max(STREAM_INCREMENT, self.window // 4) or elapsed <= 0:
            return
        bdp = self._epoch_consumed / elapsed * rtt
        if 2 * bdp > self.window:
            self.window = min(STREAM_WINDOW_MAX, math.ceil(2 * bdp))
        self._epoch_start, self._epoch_consumed = now, 0

    def on_sendme(self, cells: int = STREAM_INCREMENT) -> None:
        self.package += cells
        if self.package > STREAM_WINDOW_MAX:
            raise RemoteProtocolError("stream SENDME beyond the window")
