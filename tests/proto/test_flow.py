"""Unit tests for onionmesh.proto.flow: circuit windows with authenticated SENDMEs, stream windows."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.proto.flow import (
    CWND_INIT,
    CWND_MAX,
    CWND_MIN,
    SENDME_INC,
    STREAM_INCREMENT,
    STREAM_WINDOW,
    STREAM_WINDOW_MAX,
    VEGAS_ALPHA,
    VEGAS_BETA,
    VEGAS_DELTA,
    VEGAS_GAMMA,
    CircuitFlow,
    StreamFlow,
    decode_stream_credit,
    encode_stream_credit,
)
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, SENDME_NONCE_LEN


def digest(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_constants() -> None:
    assert (STREAM_WINDOW, STREAM_INCREMENT) == (500, 50)  # 2 MB of 4096-byte cells: see flow.py
    assert STREAM_WINDOW % STREAM_INCREMENT == 0
    assert CWND_INIT % SENDME_INC == 0 and CWND_MIN % SENDME_INC == 0
    assert SENDME_INC <= CWND_MIN <= CWND_INIT <= CWND_MAX
    assert VEGAS_ALPHA < VEGAS_GAMMA < VEGAS_BETA < VEGAS_DELTA


def fill(flow: CircuitFlow, n: int, start: int = 1, now: float = 0.0) -> None:
    for i in range(start, start + n):
        assert flow.can_send()
        flow.on_data_sent(digest(i), now)


# --------------------------------------------------------------------------- CircuitFlow: sending


def test_circuit_window_without_a_clock_stays_at_cwnd_init() -> None:
    flow = CircuitFlow()
    assert (flow.package, flow.inflight) == (CWND_INIT, 0)
    fill(flow, CWND_INIT)
    assert flow.package == 0
    assert not flow.can_send()
    # digests of cells SENDME_INC, 2 SENDME_INC, ... are expected back, in order
    for k in range(1, CWND_INIT // SENDME_INC + 1):
        flow.on_sendme(digest(k * SENDME_INC))
        assert flow.package == k * SENDME_INC
        assert flow.can_send()
    assert flow.package == CWND_INIT == flow.cwnd  # RTTs of zero change nothing


def test_circuit_sendme_needs_the_right_digest() -> None:
    flow = CircuitFlow()
    fill(flow, 2 * SENDME_INC)
    with pytest.raises(RemoteProtocolError, match="does not authenticate"):
        flow.on_sendme(digest(SENDME_INC + 1))
    assert flow.package == CWND_INIT - 2 * SENDME_INC  # no credit for a forgery


def test_circuit_sendmes_are_checked_in_order() -> None:
    flow = CircuitFlow()
    fill(flow, 2 * SENDME_INC)
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(digest(2 * SENDME_INC))  # the second one first


def test_circuit_sendme_before_its_cell_is_unexpected() -> None:
    flow = CircuitFlow()
    with pytest.raises(RemoteProtocolError, match="unexpected circuit SENDME"):
        flow.on_sendme(b"")
    fill(flow, SENDME_INC - 1)
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        flow.on_sendme(digest(SENDME_INC - 1))


def test_circuit_sendme_cannot_be_replayed() -> None:
    flow = CircuitFlow()
    fill(flow, SENDME_INC)
    flow.on_sendme(digest(SENDME_INC))
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(digest(SENDME_INC))
    assert flow.package == CWND_INIT


@pytest.mark.parametrize("bad", [b"", b"\x00" * 15, b"\x00" * 17, b"\x00" * 32])
def test_circuit_sendme_digest_of_the_wrong_length(bad: bytes) -> None:
    flow = CircuitFlow()
    for i in range(1, SENDME_INC + 1):
        flow.on_data_sent(bytes(16) if i == SENDME_INC else digest(i))
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(bad)


# --------------------------------------------------------------------------- CircuitFlow: Vegas


def run_rtts(flow: CircuitFlow, rtt_of: Callable[[CircuitFlow], float], sendmes: int) -> list[int]:
    """Keep the window full; each SENDME comes back rtt_of(flow) seconds after its cell left."""
    now, n, windows = max([100.0] + [t for _, t in flow._expected]), flow._sent, []
    for _ in range(sendmes):
        while flow.can_send():
            n += 1
            flow.on_data_sent(digest(n), now)
        sent_at = flow._expected[0][1]
        first = n - flow.inflight + SENDME_INC  # the oldest tracked cell
        now = max(now, sent_at + rtt_of(flow))
        flow.on_sendme(digest(first), now)
        windows.append(flow.cwnd)
    return windows


def test_slow_start_doubles_while_the_rtt_stays_at_its_minimum() -> None:
    flow = CircuitFlow()
    windows = run_rtts(flow, lambda f: 0.010, 40)
    assert flow.in_slow_start
    assert windows[:4] == [CWND_INIT + SENDME_INC * k for k in range(1, 5)]
    assert flow.cwnd > 10 * CWND_INIT


def test_a_queue_ends_slow_start_and_holds_the_window_near_the_bdp() -> None:
    """A bottleneck at 10,000 cells/s (20 MB/s) behind a 10 ms path: BDP = 100 cells; the
    window settles at the BDP plus a queue between alpha and beta, not at the cap."""

    def rtt(flow: CircuitFlow) -> float:
        return 0.010 + max(0, flow.inflight - 100) / 10_000

    flow = CircuitFlow()
    windows = run_rtts(flow, rtt, 3000)
    assert not flow.in_slow_start
    settled = windows[-300:]
    low, high = 100 + VEGAS_ALPHA - SENDME_INC, 100 + VEGAS_BETA + SENDME_INC
    assert all(low <= w <= high for w in settled), settled
    assert abs(flow.min_rtt - 0.010) < 0.002


def test_a_longer_path_gets_a_larger_window() -> None:
    """Same bottleneck, 100 ms: the BDP is 1000 cells and the window follows it (no fixed cap)."""

    def rtt(flow: CircuitFlow) -> float:
        return 0.100 + max(0, flow.inflight - 1000) / 10_000

    flow = CircuitFlow()
    windows = run_rtts(flow, rtt, 3000)
    assert min(windows[-300:]) >= 1000 + VEGAS_ALPHA - SENDME_INC


def test_window_shrinks_when_the_queue_grows() -> None:
    flow = CircuitFlow()
    run_rtts(flow, lambda f: 0.010, 80)
    big = flow.cwnd
    run_rtts(flow, lambda f: 0.010 + f.inflight / 500, 200)  # every cell now queues: RTT grows
    assert flow.cwnd < big / 2
    assert flow.cwnd <= VEGAS_BETA + 2 * SENDME_INC  # the path holds ~nothing: the window is the queue


@settings(max_examples=200)
@given(st.lists(st.floats(0.0001, 5.0), min_size=1, max_size=300))
def test_window_stays_within_bounds_whatever_the_rtts(rtts: list[float]) -> None:
    flow = CircuitFlow()
    it = iter(rtts * 3)
    run_rtts(flow, lambda f: next(it, 0.01), len(rtts) * 3)
    assert CWND_MIN <= flow.cwnd <= CWND_MAX
    assert flow.inflight >= 0


# --------------------------------------------------------------------------- CircuitFlow: receiving


def test_circuit_receiver_asks_for_a_sendme_every_sendme_inc_cells() -> None:
    flow = CircuitFlow()
    due = [(i, out) for i in range(1, 1001) if (out := flow.on_data_received(digest(i))) is not None]
    assert due == [(k, digest(k)) for k in range(SENDME_INC, 1001, SENDME_INC)]


# --------------------------------------------------------------------------- StreamFlow


def test_stream_package_window() -> None:
    flow = StreamFlow()
    assert (flow.package, flow.deliver) == (STREAM_WINDOW, STREAM_WINDOW)
    flow.package = 0
    assert not flow.can_send()
    for k in range(1, STREAM_WINDOW // STREAM_INCREMENT + 1):
        flow.on_sendme()
        assert flow.package == k * STREAM_INCREMENT
    assert flow.can_send()


def test_stream_sendme_beyond_the_window() -> None:
    flow = StreamFlow()
    flow.on_sendme(STREAM_WINDOW_MAX - STREAM_WINDOW)  # credit may grow the window to its maximum
    with pytest.raises(RemoteProtocolError, match="beyond the window"):
        flow.on_sendme()  # never beyond it


def test_stream_deliver_window_overflow() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    assert flow.deliver == 0
    with pytest.raises(RemoteProtocolError, match="exceeded the stream window"):
        flow.on_data_received()


def test_stream_sendme_waits_until_the_application_catches_up() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_INCREMENT):
        flow.on_data_received()
    assert flow.deliver == STREAM_WINDOW - STREAM_INCREMENT
    assert flow.on_data_consumed(STREAM_INCREMENT - 10) == 0  # 10 unconsumed: wait
    assert flow.on_data_consumed(1) == STREAM_INCREMENT  # 9 unconsumed: give credit
    assert flow.deliver == STREAM_WINDOW
    assert flow.on_data_consumed(0) == 0


def test_stream_sendme_not_due_before_50_cells() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_INCREMENT - 1):
        flow.on_data_received()
        assert flow.on_data_consumed(1) == 0
    flow.on_data_received()
    assert flow.on_data_consumed(1) == STREAM_INCREMENT


def test_stream_full_window_returns_in_increments() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    sendmes = 0
    cells = STREAM_WINDOW
    while flow.on_data_consumed(cells):
        cells = 0
        sendmes += 1
    assert sendmes == STREAM_WINDOW // STREAM_INCREMENT
    assert flow.deliver == STREAM_WINDOW


def test_stream_consumption_never_goes_negative() -> None:
    flow = StreamFlow()
    assert flow.on_data_consumed(1000) == 0
    assert flow._unacked == 0


# --------------------------------------------------------------------------- stream windows that grow


def stream_at(rate: float, rtt: float, seconds: float, read_rate: float = 1e9) -> StreamFlow:
    """A sender with unlimited data and a receiver, on a simulated clock: the path carries `rate`
    cells/s with `rtt` s round trips; the sender sends whatever credit it holds, credit takes
    rtt/2 to come back, data rtt/2 to arrive; the reader takes at most `read_rate` cells/s.
    Returns the receiver's flow."""
    sender, receiver = StreamFlow(), StreamFlow()
    events: list[tuple[float, int, str, int]] = []  # (time, seq, what, cells)
    seq = 0
    now, sent_until, read_until = 0.0, 0.0, 0.0

    def push(t: float, what: str, n: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, what, n))

    while now < seconds:
        while sender.package > 0:  # send at the path's rate
            sent_until = max(sent_until, now) + 1 / rate
            sender.package -= 1
            push(sent_until + rtt / 2, "arrive", 1)
        if not events:
            break
        now, _, what, n = heapq.heappop(events)
        if what == "arrive":
            receiver.on_data_received()
            read_until = max(read_until, now) + 1 / read_rate
            push(read_until, "consume", 1)
        elif what == "consume":
            credit = receiver.on_data_consumed(1, now, rtt)
            while credit:
                push(now + rtt / 2, "credit", credit)
                credit = receiver.on_data_consumed(0, now, rtt)
        else:
            sender.on_sendme(n)
        assert receiver.deliver >= 0 and receiver.window <= STREAM_WINDOW_MAX
    return receiver


def test_a_lone_stream_window_grows_to_the_path_bdp() -> None:
    # 2,500 cells/s (10 MB/s of 4 KiB cells) over 0.6 s round trips: a BDP of 1,500 cells, three
    # times the initial window, which would hold the stream to 500/0.6 = 833 cells/s.
    receiver = stream_at(rate=2500, rtt=0.6, seconds=20)
    assert receiver.window >= 1500
    # On a short path the window has no reason to grow: 500 cells already cover its BDP.
    assert stream_at(rate=2500, rtt=0.01, seconds=5).window == STREAM_WINDOW
    # A path-limited stream settles near twice its BDP (600 cells here), not at the maximum.
    assert 1000 <= stream_at(rate=1000, rtt=0.6, seconds=20).window <= 1500


def test_a_reader_catching_up_in_one_read_does_not_grow_the_window() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    for i in range(5):  # 500 cells taken in five quick reads after a pause: a backlog, not a rate
        flow.on_data_consumed(STREAM_WINDOW // 5, 10.0 + i * 0.001, 0.6)
    assert flow.window == STREAM_WINDOW


def test_a_slow_reader_never_grows_the_window() -> None:
    # The same path, but the reader takes 100 cells/s: the window, not the path, holds data back.
    receiver = stream_at(rate=2500, rtt=0.6, seconds=30, read_rate=100)
    assert receiver.window == STREAM_WINDOW
    assert STREAM_WINDOW - receiver.deliver <= STREAM_WINDOW  # never more than a window held


def test_without_rtt_the_window_stays_fixed_and_credit_comes_in_increments() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    credits = [flow.on_data_consumed(STREAM_WINDOW, 0.0, 0.0)]
    while credits[-1]:
        credits.append(flow.on_data_consumed(0, 0.0, 0.0))
    assert credits[:-1] == [STREAM_INCREMENT] * (STREAM_WINDOW // STREAM_INCREMENT)
    assert flow.window == STREAM_WINDOW


@given(st.binary(max_size=4))
def test_stream_credit_codec(body: bytes) -> None:
    try:
        cells = decode_stream_credit(body)
    except RemoteProtocolError:
        assert body and (len(body) != 2 or not 1 <= int.from_bytes(body, "big") <= STREAM_WINDOW_MAX)
        return
    assert 1 <= cells <= STREAM_WINDOW_MAX
    assert decode_stream_credit(encode_stream_credit(cells)) == cells


# --------------------------------------------------------------------------- two ends together


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["send", "deliver", "sendme"]), max_size=3000), st.integers(0, 2**32))
def test_circuit_flow_between_two_ends(ops: list[str], salt: int) -> None:
    """Every SENDME an honest receiver sends verifies, and the sender's count of cells in flight
    is exactly what is on the way, received but not yet acknowledged, or acknowledged in transit."""
    sender, receiver = CircuitFlow(), CircuitFlow()
    data: deque[bytes] = deque()
    sendmes: deque[bytes] = deque()
    n = received = 0
    for op in ops:
        if op == "send" and sender.can_send():
            n += 1
            d = digest(n ^ salt)
            sender.on_data_sent(d)
            data.append(d)
        elif op == "deliver" and data:
            received += 1
            back = receiver.on_data_received(data.popleft())
            if back is not None:
                sendmes.append(back)
        elif op == "sendme" and sendmes:
            sender.on_sendme(sendmes.popleft())
        assert 0 <= sender.inflight <= sender.cwnd
        assert sender.inflight == len(data) + received % SENDME_INC + SENDME_INC * len(sendmes)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["send", "deliver", "consume", "sendme"]), max_size=3000))
def test_stream_flow_between_two_ends(ops: list[str]) -> None:
    sender, receiver = StreamFlow(), StreamFlow()
    in_flight = 0
    unconsumed = 0
    sendmes = 0
    for op in ops:
        if op == "send" and sender.can_send():
            sender.package -= 1  # what CircuitEndpoint.send_data does
            in_flight += 1
        elif op == "deliver" and in_flight:
            in_flight -= 1
            receiver.on_data_received()
            unconsumed += 1
        elif op == "consume" and unconsumed:
            take = min(unconsumed, 7)
            unconsumed -= take
            cells = take
            while receiver.on_data_consumed(cells):
                cells = 0
                sendmes += 1
        elif op == "sendme" and sendmes:
            sendmes -= 1
            sender.on_sendme()
        assert 0 <= sender.package <= STREAM_WINDOW
        assert 0 <= receiver.deliver <= STREAM_WINDOW
        assert sender.package + in_flight + STREAM_INCREMENT * sendmes == receiver.deliver


def test_every_sendme_inc_th_data_cell_carries_an_unpredictable_nonce() -> None:
    """The DATA cells whose digest a SENDME echoes carry 16 random bytes the receiver cannot guess."""
    from tests.helpers.circuit_harness import built_chain

    chain = built_chain(3)
    sid = chain.client.begin("example.org", 80)
    chain.pump()
    chain.take_client_events()
    sizes = []
    for _ in range(SENDME_INC):
        sizes.append(chain.client.send_data(sid, b"x" * RELAY_BODY_MAX))
        chain.pump()
    assert sizes[:-1] == [RELAY_BODY_MAX] * (SENDME_INC - 1)
    assert sizes[-1] == RELAY_BODY_MAX - SENDME_NONCE_LEN
