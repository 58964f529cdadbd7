"""Tests for onionmesh.proto.link: the link handshake and the encrypted records of whole cells
(record suites: test_link_suites.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto.sodium import HARDWARE_AES
from onionmesh.errors import CryptoError, LocalProtocolError, OnionmeshError, RemoteProtocolError
from onionmesh.proto.link import (
    LINK_MAGIC,
    LINK_VERSION,
    MAX_CELLS_PER_RECORD,
    MSG1_LEN,
    MSG2_LEN,
    SUITE_TAG_LEN,
    SUPPORTED_SUITES,
    LinkEstablished,
    LinkProtocol,
    LinkRole,
    LinkState,
)
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import CELL_LEN, CELL_PAYLOAD_LEN, Cell
from tests.helpers.link_harness import (
    AEGIS,
    BOTH,
    BUFFER_BOUND,
    CHACHA,
    DEFAULT_SUITE,
    IDENTITY,
    ONLY_CHACHA,
    OTHER_IDENTITY,
    SUITES,
    assert_msg1_field_refused,
    encoded,
    expect_crypto_error,
    make_cells,
    new_pair,
    open_pair,
    record_len,
    suites_for,
    transfer,
)

# --------------------------------------------------------------------------- handshake


def test_handshake() -> None:
    initiator, responder = new_pair()
    assert initiator.state is LinkState.START
    assert responder.state is LinkState.AWAIT_MSG1
    initiator.initiate()
    assert initiator.state is LinkState.AWAIT_MSG2
    msg1 = initiator.data_to_send()
    assert len(msg1) == MSG1_LEN
    assert msg1[:4] == LINK_MAGIC
    assert int.from_bytes(msg1[4:6], "big") == LINK_VERSION == 2
    assert int.from_bytes(msg1[6:8], "big") == (0x0003 if HARDWARE_AES else 0x0001)  # the offer
    assert msg1[40:] == bytes(24)
    assert responder.receive_data(msg1) == [LinkEstablished(None, DEFAULT_SUITE)]
    assert responder.state is LinkState.OPEN
    msg2 = responder.data_to_send()
    assert len(msg2) == MSG2_LEN
    assert IDENTITY.public not in msg2  # the responder's identity travels encrypted
    assert initiator.receive_data(msg2) == [LinkEstablished(IDENTITY.public, DEFAULT_SUITE)]
    assert initiator.state is LinkState.OPEN
    assert initiator.peer_identity == IDENTITY.public
    assert responder.peer_identity is None  # the initiator stays anonymous
    assert initiator.suite == responder.suite == DEFAULT_SUITE
    assert initiator.bytes_sent == responder.bytes_received == MSG1_LEN
    assert responder.bytes_sent == initiator.bytes_received == MSG2_LEN


def test_handshake_is_deterministic_with_seeded_rngs_and_fresh_per_seed() -> None:
    def transcript(seed: int) -> bytes:
        i, r = new_pair(seed)
        i.initiate()
        m1 = i.data_to_send()
        r.receive_data(m1)
        m2 = r.data_to_send()
        i.receive_data(m2)
        i.send_cells(encoded(make_cells(1)))
        return m1 + m2 + i.data_to_send()

    assert transcript(1) == transcript(1)
    a, b = transcript(1), transcript(2)
    assert a[8:40] != b[8:40]  # ephemeral keys
    assert a[MSG1_LEN + MSG2_LEN :] != b[MSG1_LEN + MSG2_LEN :]  # and so record keys


def test_constructor_rules() -> None:
    with pytest.raises(LocalProtocolError):
        LinkProtocol(LinkRole.RESPONDER, SeededRng(1))
    with pytest.raises(LocalProtocolError):
        LinkProtocol(LinkRole.INITIATOR, SeededRng(1))
    for bad in (frozenset(), frozenset({AEGIS}), frozenset({CHACHA, 3}), frozenset({0, CHACHA})):
        with pytest.raises(LocalProtocolError, match="suites"):
            LinkProtocol(LinkRole.RESPONDER, SeededRng(1), identity=IDENTITY, suites=bad)
        with pytest.raises(LocalProtocolError, match="suites"):
            LinkProtocol(LinkRole.INITIATOR, SeededRng(1), expected_identity=IDENTITY.public, suites=bad)
    assert (BOTH if HARDWARE_AES else ONLY_CHACHA) == SUPPORTED_SUITES
    if not HARDWARE_AES:  # AEGIS-256 without AES instructions is refused, not run slowly
        with pytest.raises(LocalProtocolError, match="suites"):
            LinkProtocol(LinkRole.RESPONDER, SeededRng(1), identity=IDENTITY, suites=BOTH)


def test_local_misuse() -> None:
    initiator, responder = new_pair()
    with pytest.raises(LocalProtocolError):
        initiator.send_cells(encoded(make_cells(1)))
    with pytest.raises(LocalProtocolError):
        responder.send_cells(encoded(make_cells(1)))
    initiator.initiate()
    with pytest.raises(LocalProtocolError):
        initiator.initiate()
    with pytest.raises(LocalProtocolError):
        initiator.send_cells(encoded(make_cells(1)))  # still waiting for msg2


def test_initiator_refuses_bytes_before_initiating() -> None:
    initiator, _ = new_pair()
    with pytest.raises(RemoteProtocolError):
        initiator.receive_data(b"hello")


def test_wrong_pinned_identity() -> None:
    initiator, responder = new_pair(pinned=OTHER_IDENTITY.public)
    initiator.initiate()
    responder.receive_data(initiator.data_to_send())
    with pytest.raises(CryptoError, match="wrong identity"):
        initiator.receive_data(responder.data_to_send())
    assert initiator.state is not LinkState.OPEN


def test_impostor_responder() -> None:
    """A responder with another identity key cannot pass for the pinned relay."""
    initiator, _ = new_pair()
    impostor = LinkProtocol(LinkRole.RESPONDER, SeededRng(b"impostor"), identity=OTHER_IDENTITY)
    initiator.initiate()
    impostor.receive_data(initiator.data_to_send())
    with pytest.raises(CryptoError):
        initiator.receive_data(impostor.data_to_send())


def test_every_byte_of_msg2_is_authenticated() -> None:
    initiator, responder = new_pair()
    initiator.initiate()
    msg1 = initiator.data_to_send()
    responder.receive_data(msg1)
    msg2 = responder.data_to_send()
    for i in range(MSG2_LEN):
        fresh, _ = new_pair()  # same seeds: the same msg1 and the same expected msg2
        fresh.initiate()
        assert fresh.data_to_send() == msg1
        bad = bytearray(msg2)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            fresh.receive_data(bytes(bad))


def test_msg2_replayed_to_another_session_fails() -> None:
    i1, r1 = new_pair(1)
    i1.initiate()
    r1.receive_data(i1.data_to_send())
    i2, _ = new_pair(2)
    i2.initiate()
    with pytest.raises(CryptoError):
        i2.receive_data(r1.data_to_send())


@pytest.mark.parametrize("prefix", [b"GET ", b"\x16\x03\x01\x02", b"omlk", b"\x00\x00\x00\x00", b"OMLJ"])
def test_garbage_instead_of_magic(prefix: bytes) -> None:
    initiator, responder = new_pair()
    initiator.initiate()
    msg1 = prefix + initiator.data_to_send()[4:]
    with pytest.raises(RemoteProtocolError, match="not an onionmesh link"):
        responder.receive_data(msg1)
    assert responder.state is not LinkState.OPEN
    assert not responder.data_to_send()  # nothing, not even an error, goes back


@pytest.mark.parametrize("version", [0, 1, 3, 0x0100, 0x0200, 0xFFFF])
def test_bad_version(version: int) -> None:
    assert_msg1_field_refused(4, version, "version")


def test_short_msg1_waits() -> None:
    initiator, responder = new_pair()
    initiator.initiate()
    msg1 = initiator.data_to_send()
    assert responder.receive_data(msg1[:-1]) == []
    assert responder.state is LinkState.AWAIT_MSG1
    assert responder.receive_data(msg1[-1:]) == [LinkEstablished(None, DEFAULT_SUITE)]


@pytest.mark.parametrize(
    "point", [bytes(32), (1).to_bytes(32, "little"), (2**255 - 20).to_bytes(32, "little")]
)
def test_low_order_ephemeral_key_is_refused(point: bytes) -> None:
    _, responder = new_pair()
    msg1 = LINK_MAGIC + LINK_VERSION.to_bytes(2, "big") + b"\x00\x01" + point + bytes(MSG1_LEN - 40)
    with pytest.raises(CryptoError):
        responder.receive_data(msg1)
    # and as the responder's key in msg2
    initiator, _ = new_pair()
    initiator.initiate()
    initiator.data_to_send()
    with pytest.raises(CryptoError):
        initiator.receive_data(point + bytes(MSG2_LEN - 32))


def test_msg1_from_a_valid_point_but_not_our_initiator_still_handshakes() -> None:
    """The responder authenticates nobody: any well-formed msg1 opens a link (clients are anonymous)."""
    _, responder = new_pair()
    e = crypto_scalarmult_base(SeededRng(b"anyone").random_bytes(32))
    msg1 = LINK_MAGIC + LINK_VERSION.to_bytes(2, "big") + b"\x00\x01" + e + bytes(MSG1_LEN - 40)
    assert responder.receive_data(msg1) == [LinkEstablished(None, CHACHA)]


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("suite", SUITES)
def test_cells_both_ways(suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    assert initiator.record_overhead == responder.record_overhead == 2 + SUITE_TAG_LEN[suite]
    for round_ in range(3):
        out = make_cells(5, tag=round_)
        assert transfer(initiator, responder, out) == out
        back = make_cells(4, tag=round_ + 10)
        assert transfer(responder, initiator, back) == back


def test_responder_may_send_right_after_msg1() -> None:
    initiator, responder = new_pair()
    initiator.initiate()
    responder.receive_data(initiator.data_to_send())
    cells = make_cells(3)
    responder.send_cells(encoded(cells))
    assert initiator.receive_data(responder.data_to_send()) == [
        LinkEstablished(IDENTITY.public, DEFAULT_SUITE),
        *cells,
    ]


def test_initiator_may_send_msg1_and_records_together() -> None:
    initiator, responder = new_pair()
    initiator.initiate()
    msg1 = initiator.data_to_send()
    # the initiator can only send records after msg2, but the responder must also cope with
    # msg1 and a first record arriving in one read
    responder2 = LinkProtocol(LinkRole.RESPONDER, SeededRng(b"responder 0"), identity=IDENTITY)
    responder.receive_data(msg1)
    initiator.receive_data(responder.data_to_send())
    cells = make_cells(2)
    initiator.send_cells(encoded(cells))
    assert responder2.receive_data(msg1 + initiator.data_to_send()) == [
        LinkEstablished(None, DEFAULT_SUITE),
        *cells,
    ]


@pytest.mark.parametrize("suite", SUITES)
def test_everything_byte_by_byte(suite: int) -> None:
    initiator, responder = new_pair(suites=suites_for(suite))
    initiator.initiate()
    events: list[object] = []
    for b in initiator.data_to_send():
        events += responder.receive_data(bytes([b]))
    assert events == [LinkEstablished(None, suite)]
    out_cells = make_cells(3, tag=1)
    responder.send_cells(encoded(out_cells))
    events = []
    for b in responder.data_to_send():
        events += initiator.receive_data(bytes([b]))
        assert initiator.buffered_input < BUFFER_BOUND
    assert events == [LinkEstablished(IDENTITY.public, suite), *out_cells]
    in_cells = make_cells(2, tag=2)
    initiator.send_cells(encoded(in_cells))
    events = []
    for b in initiator.data_to_send():
        events += responder.receive_data(bytes([b]))
    assert events == in_cells
    assert initiator.buffered_input == responder.buffered_input == 0


@pytest.mark.parametrize("chunk", [1, 7, 100, 2047, 2048, 2066, 5000])
@pytest.mark.parametrize("suite", SUITES)
def test_arbitrary_chunking(chunk: int, suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    cells = make_cells(70)
    initiator.send_cells(encoded(cells[:10]))
    initiator.send_cells(encoded(cells[10:]))
    wire = initiator.data_to_send()
    got: list[object] = []
    for i in range(0, len(wire), chunk):
        got += responder.receive_data(wire[i : i + chunk])
    assert got == cells


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 200])
@pytest.mark.parametrize("suite", SUITES)
def test_batches_split_into_records_of_at_most_64(n: int, suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    cells = make_cells(n)
    initiator.send_cells(encoded(cells))
    wire = initiator.data_to_send()
    sizes = [min(MAX_CELLS_PER_RECORD, n - i) for i in range(0, n, MAX_CELLS_PER_RECORD)]
    assert len(wire) == sum(record_len(k, suite) for k in sizes)
    # feeding exactly one record at a time yields exactly that record's cells
    got: list[object] = []
    pos = 0
    for k in sizes:
        end = pos + record_len(k, suite)
        assert responder.receive_data(wire[pos : end - 1]) == []
        batch = responder.receive_data(wire[end - 1 : end])
        assert len(batch) == k
        got += batch
        pos = end
    assert got == cells
    assert responder.buffered_input == 0


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 200))
def test_batches_generated(n: int) -> None:
    initiator, responder = open_pair(n)
    cells = make_cells(n)
    assert transfer(initiator, responder, cells) == cells
    assert transfer(responder, initiator, cells[::-1]) == cells[::-1]


def test_record_headers_hide_the_cell_count() -> None:
    initiator, _ = open_pair()
    headers = set()
    for _ in range(20):
        initiator.send_cells(encoded(make_cells(1)))
        headers.add(initiator.data_to_send()[:2])
    assert len(headers) > 15  # the same count, masked differently every record


def test_empty_send_is_nothing() -> None:
    initiator, _ = open_pair()
    initiator.send_cells([])
    assert initiator.data_to_send() == b""


def test_authenticated_peer_sending_an_invalid_cell_is_a_remote_error() -> None:
    initiator, responder = open_pair()
    bad = bytearray(make_cells(1)[0].encode())
    bad[4] = 200  # unknown cell command, inside a valid record
    initiator.send_cells([bytes(bad)])
    with pytest.raises(RemoteProtocolError, match="unknown cell command"):
        responder.receive_data(initiator.data_to_send())


def test_send_cells_refuses_cells_of_the_wrong_length() -> None:
    initiator, _ = open_pair()
    with pytest.raises((LocalProtocolError, ValueError)):
        initiator.send_cells([b"short cell"])


def test_close() -> None:
    initiator, responder = open_pair()
    initiator.send_cells(encoded(make_cells(2)))
    wire = initiator.data_to_send()
    responder.receive_data(wire[:100])
    assert responder.buffered_input == 100
    responder.close()
    assert responder.state is LinkState.CLOSED
    assert responder.buffered_input == 0
    assert responder.receive_data(wire[100:]) == []


# --------------------------------------------------------------------------- attacks on records


def _one_record_scenario(suite: int) -> tuple[bytes, list[Cell]]:
    initiator, _ = open_pair(suite=suite)
    cells = make_cells(1)
    initiator.send_cells(encoded(cells))
    return initiator.data_to_send(), cells


@pytest.mark.parametrize("suite", SUITES)
def test_tampering_any_byte_of_a_record(suite: int) -> None:
    record, cells = _one_record_scenario(suite)
    assert len(record) == record_len(1, suite)
    for i in range(len(record)):
        initiator, responder = open_pair(suite=suite)  # the same seeds: the same keys as in the scenario
        initiator.send_cells(encoded(cells))
        assert initiator.data_to_send() == record
        bad = bytearray(record)
        bad[i] ^= 0x01 if i % 2 else 0x80
        expect_crypto_error(responder, bytes(bad), initiator)


@pytest.mark.parametrize("cells_in_record", [1, 64])
@pytest.mark.parametrize("suite", SUITES)
def test_truncated_and_extended_records(cells_in_record: int, suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    initiator.send_cells(encoded(make_cells(cells_in_record)))
    record = initiator.data_to_send()
    # one byte short: nothing yet (it waits), then the next record's first bytes complete it wrongly
    assert responder.receive_data(record[:-1]) == []
    expect_crypto_error(responder, b"", initiator)


def _records(sender: LinkProtocol, n: int) -> list[tuple[bytes, list[Cell]]]:
    out = []
    for k in range(n):
        cells = make_cells(1 + k % 3, tag=k)
        sender.send_cells(encoded(cells))
        out.append((sender.data_to_send(), cells))
    return out


@pytest.mark.parametrize("suite", SUITES)
def test_replayed_record(suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    recs = _records(initiator, 3)
    assert responder.receive_data(recs[0][0]) == recs[0][1]
    assert responder.receive_data(recs[1][0]) == recs[1][1]
    expect_crypto_error(responder, recs[1][0], initiator)


@pytest.mark.parametrize("suite", SUITES)
def test_dropped_record(suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    recs = _records(initiator, 3)
    assert responder.receive_data(recs[0][0]) == recs[0][1]
    expect_crypto_error(responder, recs[2][0], initiator)


@pytest.mark.parametrize("suite", SUITES)
def test_reordered_records(suite: int) -> None:
    initiator, responder = open_pair(suite=suite)
    recs = _records(initiator, 3)
    expect_crypto_error(responder, recs[1][0] + recs[0][0], initiator)


@pytest.mark.parametrize("suite", SUITES)
def test_reflected_record(suite: int) -> None:
    """A record sent by the responder, bounced back at it, does not authenticate (keys per direction)."""
    initiator, responder = open_pair(suite=suite)
    responder.send_cells(encoded(make_cells(1)))
    expect_crypto_error(responder, responder.data_to_send(), initiator)


@pytest.mark.parametrize("suite", SUITES)
def test_record_from_another_link(suite: int) -> None:
    i1, _ = open_pair(1, suite)
    _, r2 = open_pair(2, suite)
    i1.send_cells(encoded(make_cells(1)))
    expect_crypto_error(r2, i1.data_to_send(), i1)


def test_zero_count_header_is_refused() -> None:
    # whatever the mask, some two-byte header decodes to count 0 or > 64: feed all 2-byte values
    # until one is refused outright (without waiting for a body)
    refused = 0
    for value in range(0, 0x10000, 257):
        _, responder = open_pair()
        try:
            responder.receive_data(value.to_bytes(2, "big"))
        except CryptoError:
            refused += 1
    assert refused > 200  # only 64 in 65 536 header values are plausible counts


# --------------------------------------------------------------------------- arbitrary input


def _msg1(seed: int) -> bytes:
    initiator, _ = new_pair(seed)
    initiator.initiate()
    return initiator.data_to_send()


chunks = st.lists(st.binary(max_size=3000), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(chunks, st.tuples(st.integers(0, 3), chunks).map(lambda t: [_msg1(t[0]), *t[1]])))
def test_arbitrary_bytes_into_a_responder(data: list[bytes]) -> None:
    _, responder = new_pair()
    for chunk in data:
        try:
            events = responder.receive_data(chunk)
        except OnionmeshError:
            break  # the runtime closes the link here
        assert all(isinstance(e, LinkEstablished | Cell) for e in events)
        assert responder.buffered_input < BUFFER_BOUND


@st.composite
def damaged_sessions(draw: st.DrawFn) -> tuple[int, bytes, list[int]]:
    seed = draw(st.integers(0, 3))
    n = draw(st.integers(1, 70))
    edits = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3))
    cut_points = draw(st.lists(st.integers(0, 10**6), max_size=6))
    initiator, responder = new_pair(seed)
    initiator.initiate()
    msg1 = initiator.data_to_send()
    responder.receive_data(msg1)
    initiator.receive_data(responder.data_to_send())
    initiator.send_cells(encoded(make_cells(n)))
    wire = bytearray(msg1 + initiator.data_to_send())
    for pos, mask in edits:
        wire[pos % len(wire)] ^= mask
    return seed, bytes(wire), sorted(p % len(wire) for p in cut_points)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_sessions())
def test_damaged_sessions_into_a_responder(case: tuple[int, bytes, list[int]]) -> None:
    seed, wire, cuts = case
    _, responder = new_pair(seed)
    bounds = [0, *cuts, len(wire)]
    for a, b in itertools.pairwise(bounds):
        try:
            events = responder.receive_data(wire[a:b])
        except OnionmeshError:
            break
        assert all(isinstance(e, LinkEstablished | Cell) for e in events)
        assert responder.buffered_input < BUFFER_BOUND


@settings(max_examples=150, deadline=None)
@given(chunks)
def test_arbitrary_bytes_into_an_initiator(data: list[bytes]) -> None:
    initiator, _ = new_pair()
    initiator.initiate()
    for chunk in data:
        try:
            initiator.receive_data(chunk)
        except OnionmeshError:
            break
        assert initiator.buffered_input < BUFFER_BOUND
        assert initiator.state is not LinkState.OPEN  # nobody can forge msg2


def test_cell_payload_sizes() -> None:
    assert CELL_LEN == 5 + CELL_PAYLOAD_LEN
