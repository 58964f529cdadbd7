"""Tests for onionmesh.crypto.ntor: the circuit handshake (agreement, authentication, low-order points)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult

from onionmesh.crypto import ntor
from onionmesh.crypto.keys import IdentityKey, OnionKey
from onionmesh.crypto.x25519 import x25519
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import SeededRng

# --------------------------------------------------------------------------- reference X25519

P = 2**255 - 19


def ref_x25519(k: bytes, u: bytes) -> bytes:
    """RFC 7748 X25519 in pure Python (slow, only to cross-check points in these tests)."""
    n = int.from_bytes(k, "little")
    n &= ~7
    n &= ~(128 << 8 * 31)
    n |= 64 << 8 * 31
    x1 = (int.from_bytes(u, "little") & ((1 << 255) - 1)) % P
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % P, b * b % P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % P, c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + 121665 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


# The points of order 1, 2, 4 and 8 on curve25519 (and its twist's 0), canonical and not:
# u = 0, 1, the two order-8 u-coordinates, p-1, and the non-canonical p, p+1; plus each
# with the ignored top bit set.
_SMALL = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
]
LOW_ORDER_POINTS = [_le(u) for u in _SMALL] + [_le(u | (1 << 255)) for u in _SMALL]


def test_reference_x25519_matches_libsodium() -> None:
    rng = SeededRng(b"ref")
    for _ in range(3):
        k, u_secret = rng.random_bytes(32), rng.random_bytes(32)
        u = crypto_scalarmult(u_secret, _le(9))
        assert ref_x25519(k, u) == crypto_scalarmult(k, u)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + ".." + p.hex()[-4:])
def test_listed_points_really_have_small_order(point: bytes) -> None:
    # every clamped scalar is a multiple of 8, so it sends a point of order dividing 8 to infinity
    for seed in range(3):
        assert ref_x25519(SeededRng(seed).random_bytes(32), point) == bytes(32)


# --------------------------------------------------------------------------- fixtures


class Relay:
    def __init__(self, seed: int) -> None:
        rng = SeededRng(b"relay-%d" % seed)
        self.identity = IdentityKey.generate(rng)
        self.onion = OnionKey.generate(rng)
        self.rng = rng

    def respond(self, onionskin: bytes, htype: int = ntor.LOCAL_TYPES[0]) -> tuple[bytes, ntor.HopKeys]:
        skin = ntor.parse_onionskin(onionskin)
        return ntor.server_respond(skin, self.identity.public, self.onion.secret, self.rng, htype)


@pytest.fixture
def relay() -> Relay:
    return Relay(1)


def handshake(
    relay: Relay, rng: SeededRng, htype: int = ntor.LOCAL_TYPES[0]
) -> tuple[ntor.HopKeys, ntor.HopKeys]:
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, rng, htype)
    reply, server_keys = relay.respond(skin, htype)
    return ntor.client_finish(state, reply), server_keys


# --------------------------------------------------------------------------- agreement


def test_handshake_agrees(relay: Relay) -> None:
    client_keys, server_keys = handshake(relay, SeededRng(7))
    assert client_keys == server_keys
    parts = [
        client_keys.forward_stream,
        client_keys.forward_mac,
        client_keys.backward_stream,
        client_keys.backward_mac,
    ]
    assert all(len(k) == 32 for k in parts)
    assert len(set(parts)) == 4


@pytest.mark.parametrize("htype", ntor.LOCAL_TYPES)
def test_each_handshake_type_feeds_its_own_suite_with_its_own_keys(htype: int) -> None:
    client_keys, server_keys = handshake(Relay(1), SeededRng(7), htype)
    assert client_keys == server_keys and client_keys.suite is ntor.SUITE_OF_TYPE[htype]
    # the same ephemerals under the other type: unrelated keys (the type is in the expansion)
    for other in ntor.LOCAL_TYPES:
        if other != htype:
            keys, _ = handshake(Relay(1), SeededRng(7), other)
            assert {keys.forward_stream, keys.backward_stream}.isdisjoint(
                {client_keys.forward_stream, client_keys.backward_stream}
            )


@pytest.mark.skipif(len(ntor.LOCAL_TYPES) < 2, reason="needs both layer suites (hardware AES)")
def test_a_handshake_type_changed_on_the_way_fails_the_handshake(relay: Relay) -> None:
    """A hop that rewrites EXTEND's type (a downgrade to the other suite) is caught by AUTH."""
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1), 0x0004)
    reply, _ = relay.respond(skin, 0x0003)
    with pytest.raises(CryptoError, match="authenticate"):
        ntor.client_finish(state, reply)


@pytest.mark.parametrize("htype", [0x0000, 0x0001, 0x0002, 0x0005, 0xFFFF])
def test_old_and_unknown_handshake_types_are_refused(relay: Relay, htype: int) -> None:
    _, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    with pytest.raises(RemoteProtocolError, match="handshake type"):
        relay.respond(skin, htype)
    with pytest.raises(ValueError):
        ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1), htype)


def test_best_type_prefers_what_both_run() -> None:
    assert ntor.best_type(frozenset({3})) == 0x0003
    assert ntor.best_type(frozenset()) == 0x0003  # an old or silent relay: the universal suite
    assert ntor.best_type(frozenset({3, 4})) == ntor.LOCAL_TYPES[0]
    assert ntor.best_type(frozenset({4})) == (0x0004 if 0x0004 in ntor.LOCAL_TYPES else 0x0003)


def test_message_layout(relay: Relay) -> None:
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    assert len(skin) == ntor.CLIENT_HANDSHAKE_LEN == 96
    assert skin[:32] == relay.identity.public
    assert skin[32:64] == relay.onion.public
    assert skin[64:] == state.x_public
    parsed = ntor.parse_onionskin(skin)
    assert (parsed.identity_pk, parsed.onion_pk, parsed.x_public) == (skin[:32], skin[32:64], skin[64:])
    reply, _ = relay.respond(skin)
    assert len(reply) == ntor.SERVER_HANDSHAKE_LEN == 64


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=16), st.integers(0, 5))
def test_handshake_agrees_for_any_keys(client_seed: bytes, relay_seed: int) -> None:
    client_keys, server_keys = handshake(Relay(relay_seed), SeededRng(client_seed))
    assert client_keys == server_keys


def test_keys_differ_per_handshake(relay: Relay) -> None:
    rng = SeededRng(3)
    seen = set()
    for _ in range(20):
        client_keys, server_keys = handshake(relay, rng)
        assert client_keys == server_keys
        for k in (
            client_keys.forward_stream,
            client_keys.forward_mac,
            client_keys.backward_stream,
            client_keys.backward_mac,
        ):
            assert k not in seen
            seen.add(k)


def test_server_ephemeral_alone_changes_the_keys(relay: Relay) -> None:
    # the same onionskin answered twice (e.g. a replayed CREATE) gives unrelated keys
    _, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(4))
    reply1, keys1 = relay.respond(skin)
    reply2, keys2 = relay.respond(skin)
    assert reply1 != reply2
    assert keys1 != keys2


def test_deterministic_with_seeded_rngs() -> None:
    a = handshake(Relay(9), SeededRng(5))
    b = handshake(Relay(9), SeededRng(5))
    assert a == b


# --------------------------------------------------------------------------- authentication


def test_relay_with_the_wrong_onion_key_cannot_authenticate(relay: Relay) -> None:
    impostor_onion = OnionKey.generate(SeededRng(b"impostor"))
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    reply, _ = ntor.server_respond(
        ntor.parse_onionskin(skin),
        relay.identity.public,
        impostor_onion.secret,
        SeededRng(2),
        ntor.LOCAL_TYPES[0],
    )
    with pytest.raises(CryptoError):
        ntor.client_finish(state, reply)


def test_client_with_a_stale_onion_key_fails(relay: Relay) -> None:
    old = OnionKey.generate(SeededRng(b"old"))
    state, skin = ntor.client_start(relay.identity.public, old.public, SeededRng(1))
    reply, _ = relay.respond(skin)  # the relay uses its current key
    with pytest.raises(CryptoError):
        ntor.client_finish(state, reply)


def test_relay_refuses_an_onionskin_for_another_identity(relay: Relay) -> None:
    other = Relay(2)
    _, skin = ntor.client_start(other.identity.public, relay.onion.public, SeededRng(1))
    with pytest.raises(RemoteProtocolError, match="another relay"):
        relay.respond(skin)


def test_impostor_identity_cannot_authenticate(relay: Relay) -> None:
    """A relay holding the onion key but answering as another identity fails at the client."""
    other = Relay(2)
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    forged = ntor.ParsedOnionskin(other.identity.public, relay.onion.public, skin[64:])
    reply, _ = ntor.server_respond(
        forged, other.identity.public, relay.onion.secret, SeededRng(2), ntor.LOCAL_TYPES[0]
    )
    with pytest.raises(CryptoError):
        ntor.client_finish(state, reply)


def test_every_byte_of_the_reply_is_authenticated(relay: Relay) -> None:
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    reply, _ = relay.respond(skin)
    assert ntor.client_finish(state, reply)
    for i in range(len(reply)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(reply)
            bad[i] ^= mask
            # bit 255 of Y is ignored by X25519, yet Y is hashed into the transcript: still refused
            with pytest.raises((CryptoError, RemoteProtocolError)):
                ntor.client_finish(state, bytes(bad))


def test_reply_to_another_handshake_is_refused(relay: Relay) -> None:
    rng = SeededRng(1)
    state1, skin1 = ntor.client_start(relay.identity.public, relay.onion.public, rng)
    state2, skin2 = ntor.client_start(relay.identity.public, relay.onion.public, rng)
    reply1, _ = relay.respond(skin1)
    reply2, _ = relay.respond(skin2)
    with pytest.raises(CryptoError):
        ntor.client_finish(state2, reply1)
    with pytest.raises(CryptoError):
        ntor.client_finish(state1, reply2)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 96])
def test_reply_of_the_wrong_length(relay: Relay, length: int) -> None:
    state, skin = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    reply, _ = relay.respond(skin)
    with pytest.raises(RemoteProtocolError):
        ntor.client_finish(state, (reply * 2)[:length])


@settings(max_examples=100)
@given(st.binary(min_size=64, max_size=64))
def test_random_replies_are_refused(reply: bytes) -> None:
    relay = Relay(1)
    state, _ = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    with pytest.raises(CryptoError):
        ntor.client_finish(state, reply)


@pytest.mark.parametrize("length", [0, 95, 97, 192])
def test_onionskin_of_the_wrong_length(length: int) -> None:
    with pytest.raises(RemoteProtocolError):
        ntor.parse_onionskin(bytes(length))


def test_client_start_checks_key_lengths(relay: Relay) -> None:
    with pytest.raises(ValueError):
        ntor.client_start(relay.identity.public[:31], relay.onion.public, SeededRng(1))
    with pytest.raises(ValueError):
        ntor.client_start(relay.identity.public, relay.onion.public + b"\x00", SeededRng(1))


def test_hop_keys_need_128_bytes() -> None:
    keys = ntor.HopKeys.from_material(bytes(range(128)))
    assert keys.forward_stream == bytes(range(32))
    assert keys.backward_mac == bytes(range(96, 128))
    with pytest.raises(ValueError):
        ntor.HopKeys.from_material(bytes(127))


# --------------------------------------------------------------------------- low-order points


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + ".." + p.hex()[-4:])
def test_relay_rejects_low_order_client_key(relay: Relay, point: bytes) -> None:
    skin = relay.identity.public + relay.onion.public + point
    with pytest.raises(CryptoError):
        relay.respond(skin)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + ".." + p.hex()[-4:])
def test_client_rejects_low_order_relay_key(relay: Relay, point: bytes) -> None:
    state, _ = ntor.client_start(relay.identity.public, relay.onion.public, SeededRng(1))
    # whatever AUTH accompanies it: the attacker could compute AUTH for an all-zero shared secret
    with pytest.raises(CryptoError):
        ntor.client_finish(state, point + bytes(32))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + ".." + p.hex()[-4:])
def test_client_rejects_low_order_onion_key(relay: Relay, point: bytes) -> None:
    # a descriptor advertising a low-order onion key: the client cannot finish with any reply
    state, skin = ntor.client_start(relay.identity.public, point, SeededRng(1))
    assert skin[32:64] == point
    with pytest.raises(CryptoError):
        ntor.client_finish(state, relay.onion.public + bytes(32))


@pytest.mark.parametrize("public", [bytes(32), bytes([1]) + bytes(31), b"short"])
def test_x25519_refuses_low_order_and_malformed_keys(public: bytes) -> None:
    # the one check both handshakes use (crypto.x25519): only CryptoError, never libsodium's own
    with pytest.raises(CryptoError):
        x25519(SeededRng(1).random_bytes(32), public)
