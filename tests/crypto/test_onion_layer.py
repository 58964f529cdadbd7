"""Tests for onionmesh.crypto.onion_layer: the per-hop wide-block layer, tagging, replay and ordering.

Outbound (client -> exit): the client builds a cell with R⁻¹ of every hop, innermost first,
and each relay applies its R.  Inbound (exit -> client): each relay applies R, the client
peels with R⁻¹ hop by hop.  A cell is meant for a hop when its tag is zero after that hop.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.crypto.onion_layer import (
    LOCAL_SUITES,
    TAG_LEN,
    ZERO_TAG,
    LayerSuite,
    OnionLayer,
    is_recognized,
)
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import CELL_PAYLOAD_LEN
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage

PAYLOAD_BITS = CELL_PAYLOAD_LEN * 8
BODY_BITS = (CELL_PAYLOAD_LEN - TAG_LEN) * 8
_suite = [LayerSuite.XCHACHA]


@pytest.fixture(autouse=True, scope="module", params=LOCAL_SUITES, ids=lambda s: s.name)
def _each_suite(request: pytest.FixtureRequest) -> None:
    """Every test of this module runs once per layer suite this machine can run."""
    _suite[0] = request.param


def make_layer(stream_key: bytes, mac_key: bytes) -> OnionLayer:
    return OnionLayer(stream_key, mac_key, _suite[0])


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def popcount(b: bytes) -> int:
    return int.from_bytes(b, "big").bit_count()


def flip_bit(payload: bytes, bit: int) -> bytes:
    out = bytearray(payload)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def plain(i: int) -> bytes:
    """A recognizable relay payload (zero tag) with a distinct body."""
    return RelayMessage(RelayCommand.DATA, 1, b"cell %d " % i + bytes(range(256)) * 3).encode_plain()


class Circuit:
    """Three hops' forward and backward keys, with the client's and the relays' layer objects."""

    def __init__(self, seed: int | bytes = 0, hops: int = 3) -> None:
        rng = SeededRng(seed)
        self.keys = [tuple(rng.random_bytes(32) for _ in range(4)) for _ in range(hops)]
        self.client_fwd = [make_layer(k[0], k[1]) for k in self.keys]
        self.client_back = [make_layer(k[2], k[3]) for k in self.keys]
        self.relay_fwd = [make_layer(k[0], k[1]) for k in self.keys]
        self.relay_back = [make_layer(k[2], k[3]) for k in self.keys]

    # client -> relay `target`
    def build(self, payload: bytes, target: int | None = None) -> bytes:
        target = len(self.keys) - 1 if target is None else target
        for i in range(target, -1, -1):
            payload = self.client_fwd[i].unapply(payload)
        return payload

    def relay_forward(self, i: int, payload: bytes) -> bytes:
        return self.relay_fwd[i].apply(payload)

    # relay `origin` -> client
    def originate(self, origin: int, payload: bytes) -> bytes:
        payload = self.relay_back[origin].apply(payload)
        for i in range(origin - 1, -1, -1):
            payload = self.relay_back[i].apply(payload)
        return payload

    def peel(self, payload: bytes) -> tuple[int, bytes] | None:
        for i, layer in enumerate(self.client_back):
            payload = layer.unapply(payload)
            if is_recognized(payload):
                return i, payload
        return None


def random_payload(rng: SeededRng) -> bytes:
    return rng.random_bytes(CELL_PAYLOAD_LEN)


# --------------------------------------------------------------------------- basics


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        make_layer(bytes(31), bytes(32))
    with pytest.raises(ValueError):
        make_layer(bytes(32), bytes(33))


def test_is_recognized() -> None:
    assert is_recognized(ZERO_TAG + b"anything")
    assert not is_recognized(b"\x00" * (TAG_LEN - 1) + b"\x01" + bytes(100))


@settings(max_examples=50)
@given(st.binary(min_size=64, max_size=64), st.lists(st.binary(max_size=256), min_size=1, max_size=6))
def test_apply_and_unapply_are_inverse(keys: bytes, prefixes: list[bytes]) -> None:
    # Hypothesis picks each payload's first bytes (tag and header); a seeded RNG fills the rest.
    payloads = [(p + SeededRng(p).random_bytes(CELL_PAYLOAD_LEN))[:CELL_PAYLOAD_LEN] for p in prefixes]
    a1, a2 = make_layer(keys[:32], keys[32:]), make_layer(keys[:32], keys[32:])
    b1, b2 = make_layer(keys[:32], keys[32:]), make_layer(keys[:32], keys[32:])
    for p in payloads:
        out = a1.apply(p)
        back = b1.unapply(out)
        assert back == p
        assert a1.digest() == b1.digest()  # both sides learn the same per-cell digest
        assert len(out) == len(p)
        # and the other way round: R(R⁻¹(p)) = p
        out2 = b2.unapply(p)
        back2 = a2.apply(out2)
        assert back2 == p
        assert b2.digest() == a2.digest()
    assert a1.cells == b1.cells == len(payloads)


def test_same_cell_twice_encrypts_differently() -> None:
    layer = make_layer(bytes(32), bytes(range(32)))
    out1 = layer.apply(plain(0))
    d1 = layer.digest()
    out2 = layer.apply(plain(0))
    assert out1 != out2
    assert d1 != layer.digest()
    assert popcount(xor(out1, out2)) > PAYLOAD_BITS * 0.45


def test_keys_ratchet_after_every_cell() -> None:
    layer = make_layer(bytes(32), bytes(range(32)))
    seen = {(layer._ks, layer._kf)}
    for i in range(10):
        layer.apply(plain(i))
        assert (layer._ks, layer._kf) not in seen
        seen.add((layer._ks, layer._kf))


def test_zero_payload_output_looks_random() -> None:
    out = make_layer(bytes(32), bytes(32)).apply(bytes(CELL_PAYLOAD_LEN))
    assert 0.45 < popcount(out) / PAYLOAD_BITS < 0.55


# --------------------------------------------------------------------------- three hops


def test_outbound_cells_are_recognized_only_at_their_hop() -> None:
    circ = Circuit(1)
    for n in range(5):
        for target in range(3):
            msg = plain(10 * n + target)
            cell = circ.build(msg, target)
            for i in range(target + 1):
                cell = circ.relay_forward(i, cell)
                if i < target:
                    assert not is_recognized(cell)
            assert cell == msg


def test_inbound_cells_are_recognized_at_their_origin() -> None:
    circ = Circuit(2)
    for n in range(5):
        for origin in (2, 0, 1):
            msg = plain(10 * n + origin)
            assert circ.peel(circ.originate(origin, msg)) == (origin, msg)


def test_layers_hide_the_payload_on_every_link() -> None:
    circ = Circuit(3)
    msg = plain(0)
    cell = circ.build(msg)
    seen = [cell]
    for i in range(2):
        cell = circ.relay_forward(i, cell)
        seen.append(cell)
    for c in seen:
        assert b"cell 0" not in c
        assert 0.45 < popcount(xor(c, msg)) / PAYLOAD_BITS < 0.55


# --------------------------------------------------------------------------- tagging


def _tagging_run(seed: int, bit: int, earlier_cells: int) -> None:
    """Flip one bit after hop 1; compare with the same cell untouched on an identical circuit."""
    honest, tampered = Circuit(seed), Circuit(seed)
    for i in range(earlier_cells):  # move the key ratchets along first
        for c in (honest, tampered):
            cell = c.build(plain(100 + i))
            for hop in range(3):
                cell = c.relay_forward(hop, cell)
            assert cell == plain(100 + i)

    msg = plain(0)
    after_hop1 = honest.relay_forward(0, honest.build(msg))
    assert after_hop1 == tampered.relay_forward(0, tampered.build(msg))
    injected = flip_bit(after_hop1, bit)
    pattern = xor(after_hop1, injected)

    honest_mid = honest.relay_forward(1, after_hop1)
    tampered_mid = tampered.relay_forward(1, injected)
    honest_exit = honest.relay_forward(2, honest_mid)
    tampered_exit = tampered.relay_forward(2, tampered_mid)

    assert honest_exit == msg and is_recognized(honest_exit)
    assert not is_recognized(tampered_mid)
    assert not is_recognized(tampered_exit)

    for a, b in ((honest_mid, tampered_mid), (honest_exit, tampered_exit)):
        diff = xor(a, b)
        assert diff != pattern  # not the injected flip ...
        assert diff[TAG_LEN:] != pattern[TAG_LEN:]
        assert diff[:TAG_LEN] != ZERO_TAG
        # ... but noise: about half of the body's 32 632 bits differ (σ ≈ 0.3 %)
        assert 0.45 < popcount(diff[TAG_LEN:]) / BODY_BITS < 0.55
    # the exit's body is garbage compared with the original message, too
    assert 0.45 < popcount(xor(tampered_exit, msg)[TAG_LEN:]) / BODY_BITS < 0.55


@settings(max_examples=60, deadline=None)
@given(st.integers(0, TAG_LEN * 8 - 1), st.integers(0, 3))
def test_tagging_bit_in_the_tag(bit: int, earlier: int) -> None:
    _tagging_run(seed=bit, bit=bit, earlier_cells=earlier)


@settings(max_examples=120, deadline=None)
@given(st.integers(TAG_LEN * 8, PAYLOAD_BITS - 1), st.integers(0, 3))
def test_tagging_bit_in_the_body(bit: int, earlier: int) -> None:
    _tagging_run(seed=bit, bit=bit, earlier_cells=earlier)


@pytest.mark.parametrize(
    "bit", [0, 7, 127, 128, 129, 135, 136, 200, 1000, PAYLOAD_BITS - 8, PAYLOAD_BITS - 1]
)
def test_tagging_edges(bit: int) -> None:
    _tagging_run(seed=5, bit=bit, earlier_cells=1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, CELL_PAYLOAD_LEN - 1), st.binary(min_size=1, max_size=32).filter(any))
def test_tagging_any_xor_pattern(offset: int, mask: bytes) -> None:
    honest, tampered = Circuit(b"xor"), Circuit(b"xor")
    msg = plain(1)
    cell = honest.relay_forward(0, honest.build(msg))
    tampered.relay_forward(0, tampered.build(msg))
    bad = bytearray(cell)
    for i, m in enumerate(mask[: CELL_PAYLOAD_LEN - offset]):
        bad[offset + i] ^= m
    if bytes(bad) == cell:
        return
    out_h = honest.relay_forward(2, honest.relay_forward(1, cell))
    out_t = tampered.relay_forward(2, tampered.relay_forward(1, bytes(bad)))
    assert out_h == msg
    assert not is_recognized(out_t)
    assert xor(out_h, out_t) != xor(cell, bytes(bad))
    assert 0.45 < popcount(xor(out_h, out_t)[TAG_LEN:]) / BODY_BITS < 0.55


@settings(max_examples=60, deadline=None)
@given(st.integers(0, PAYLOAD_BITS - 1))
def test_inbound_tagging_after_the_middle(bit: int) -> None:
    """Exit -> client: a bit flipped between the middle and hop 1 garbles the cell for the client."""
    honest, tampered = Circuit(b"in"), Circuit(b"in")
    msg = plain(2)
    mid_h = honest.relay_back[1].apply(honest.relay_back[2].apply(msg))
    mid_t = tampered.relay_back[1].apply(tampered.relay_back[2].apply(msg))
    assert mid_h == mid_t
    injected = flip_bit(mid_t, bit)
    wire_h = honest.relay_back[0].apply(mid_h)
    wire_t = tampered.relay_back[0].apply(injected)
    assert honest.peel(wire_h) == (2, msg)
    # peel by hand to look at what the exit layer produces for the client
    p = wire_t
    for layer in tampered.client_back:
        p = layer.unapply(p)
        assert not is_recognized(p)
    assert 0.45 < popcount(xor(p, msg)[TAG_LEN:]) / BODY_BITS < 0.55


# --------------------------------------------------------------------------- replay, reorder, drop


N_CELLS = 8


def _deliver_after_hop1(schedule: list[int | bytes], seed: int = 11) -> tuple[list[bytes], list[bool]]:
    """The client sends N_CELLS cells to the exit; hop 1's output is delivered in `schedule` order.

    Entries are indices into hop 1's output, or raw bytes to inject.  Returns the exit's
    outputs and whether each was recognized.
    """
    circ = Circuit(seed)
    msgs = [plain(i) for i in range(N_CELLS)]
    after_hop1 = [circ.relay_forward(0, circ.build(m)) for m in msgs]
    outputs, recognized = [], []
    for entry in schedule:
        cell = entry if isinstance(entry, bytes) else after_hop1[entry]
        out = circ.relay_forward(2, circ.relay_forward(1, cell))
        outputs.append(out)
        recognized.append(is_recognized(out))
    return outputs, recognized


def test_in_order_delivery_is_recognized() -> None:
    outputs, recognized = _deliver_after_hop1(list(range(N_CELLS)))
    assert all(recognized)
    assert outputs == [plain(i) for i in range(N_CELLS)]


@pytest.mark.parametrize("k", [0, 3, N_CELLS - 1])
def test_replay_desynchronises(k: int) -> None:
    schedule = [*range(k + 1), k, *range(k + 1, N_CELLS)]
    _, recognized = _deliver_after_hop1(schedule)
    assert recognized[: k + 1] == [True] * (k + 1)
    assert not any(recognized[k + 1 :])  # the replay and every cell after it


@pytest.mark.parametrize("k", [0, 2, N_CELLS - 2])
def test_reorder_desynchronises(k: int) -> None:
    schedule = list(range(N_CELLS))
    schedule[k], schedule[k + 1] = schedule[k + 1], schedule[k]
    _, recognized = _deliver_after_hop1(schedule)
    assert recognized[:k] == [True] * k
    assert not any(recognized[k:])  # including the swapped cells once back "in place"


@pytest.mark.parametrize("k", [0, 4, N_CELLS - 2])
def test_drop_desynchronises(k: int) -> None:
    schedule = [i for i in range(N_CELLS) if i != k]
    _, recognized = _deliver_after_hop1(schedule)
    assert recognized[:k] == [True] * k
    assert not any(recognized[k:])


@pytest.mark.parametrize("k", [0, 5])
def test_injection_desynchronises(k: int) -> None:
    junk = SeededRng(b"junk").random_bytes(CELL_PAYLOAD_LEN)
    schedule: list[int | bytes] = [*range(k), junk, *range(k, N_CELLS)]
    _, recognized = _deliver_after_hop1(schedule)
    assert recognized[:k] == [True] * k
    assert not any(recognized[k:])


def test_replay_into_a_single_layer() -> None:
    keys = SeededRng(1).random_bytes(64)
    client, relay = make_layer(keys[:32], keys[32:]), make_layer(keys[:32], keys[32:])
    cell = client.unapply(plain(0))
    first = relay.apply(cell)
    again = relay.apply(cell)
    assert first == plain(0)
    assert not is_recognized(again)


def test_inbound_replay_and_drop_desynchronise_the_client() -> None:
    circ = Circuit(12)
    wire = [circ.originate(2, plain(i)) for i in range(5)]
    assert circ.peel(wire[0]) == (2, plain(0))
    assert circ.peel(wire[0]) is None  # replayed
    for c in wire[1:]:
        assert circ.peel(c) is None  # desynchronised from then on

    circ = Circuit(13)
    wire = [circ.originate(2, plain(i)) for i in range(5)]
    assert circ.peel(wire[0]) == (2, plain(0))
    for c in wire[2:]:  # wire[1] dropped
        assert circ.peel(c) is None


# --------------------------------------------------------------------------- properties of the two-pass R


def test_a_tag_only_change_moves_the_tag_at_one_hop_and_garbles_everything_after() -> None:
    """R passes a change of T' into T1 as the same XOR (T1 is the nonce), but the body is noise.

    At the next honest hop the shifted tag meets a garbled body, so the whole payload is noise.
    """
    honest, tampered = Circuit(21), Circuit(21)
    msg = plain(3)
    after_hop1 = honest.relay_forward(0, honest.build(msg))
    tampered.relay_forward(0, tampered.build(msg))
    delta = bytes([0x5A] * TAG_LEN)
    injected = xor(after_hop1[:TAG_LEN], delta) + after_hop1[TAG_LEN:]
    mid_h, mid_t = honest.relay_forward(1, after_hop1), tampered.relay_forward(1, injected)
    assert xor(mid_h[:TAG_LEN], mid_t[:TAG_LEN]) == delta
    assert 0.45 < popcount(xor(mid_h, mid_t)[TAG_LEN:]) / BODY_BITS < 0.55
    exit_h, exit_t = honest.relay_forward(2, mid_h), tampered.relay_forward(2, mid_t)
    assert exit_h == msg and not is_recognized(exit_t)
    assert xor(exit_h, exit_t)[:TAG_LEN] not in (delta, ZERO_TAG)
    assert 0.45 < popcount(xor(exit_h, exit_t)[TAG_LEN:]) / BODY_BITS < 0.55


def test_the_digest_is_bound_to_the_cell_and_never_on_the_wire() -> None:
    """Same key state, different bodies: different digests; the digest is neither tag seen on a link."""
    keys = SeededRng(7).random_bytes(64)
    digests = set()
    for i in range(4):
        client, relay = make_layer(keys[:32], keys[32:]), make_layer(keys[:32], keys[32:])
        wire = client.unapply(plain(i))
        assert relay.apply(wire) == plain(i)  # recognized: T1 = 0 at the target hop
        assert relay.digest() == client.digest()
        assert relay.digest() not in (wire[:TAG_LEN], ZERO_TAG)
        digests.add(relay.digest())
    assert len(digests) == 4
    # inbound (the hop originates with R, the client peels with R⁻¹): T1 is on the wire, the digest is not
    hop, client = make_layer(keys[:32], keys[32:]), make_layer(keys[:32], keys[32:])
    wire = hop.apply(plain(9))
    assert client.unapply(wire) == plain(9) and client.digest() == hop.digest()
    assert hop.digest() not in (wire[:TAG_LEN], ZERO_TAG)
