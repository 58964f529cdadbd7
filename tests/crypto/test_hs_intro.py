"""ESTABLISH_INTRO binding and signature, INTRODUCE1 sealing (crypto.hs_intro): what an intro
point or a stranger can and cannot do to them."""

from __future__ import annotations

import pytest
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_intro, hs_ntor
from onionmesh.crypto.keys import IdentityKey
from onionmesh.crypto.ntor import HopKeys
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import SeededRng
from onionmesh.wire import hs_cells as hc


def _hop(seed: int) -> HopKeys:
    return HopKeys.from_material(SeededRng(seed).random_bytes(128))


def test_establish_intro_verifies_only_on_its_circuit_and_unaltered() -> None:
    auth = IdentityKey(bytes(range(32)))
    key = hs_intro.circuit_binding_key(_hop(1))
    msg = hs_intro.build_establish_intro(auth, ((hc.ExtType.DOS_PARAMS, hc.DosParams(10, 20).encode()),), key)
    decoded = hc.EstablishIntro.decode(msg.encode())
    hs_intro.check_establish_intro(decoded, key)
    with pytest.raises(CryptoError, match="bound"):  # replayed on another circuit
        hs_intro.check_establish_intro(decoded, hs_intro.circuit_binding_key(_hop(2)))
    altered = hc.EstablishIntro(msg.auth_key, (), msg.handshake_auth, msg.signature)
    with pytest.raises(CryptoError):
        hs_intro.check_establish_intro(altered, key)
    other = IdentityKey(bytes(32))
    forged = hc.EstablishIntro(other.public, msg.extensions, msg.handshake_auth, msg.signature)
    with pytest.raises(CryptoError):
        hs_intro.check_establish_intro(forged, key)


def _service() -> tuple[bytes, bytes, bytes, bytes]:
    rng = SeededRng(3)
    b = rng.random_bytes(32)
    return b, crypto_scalarmult_base(b), rng.random_bytes(32), rng.random_bytes(32)


def test_introduce_round_trip_and_every_flipped_byte_is_refused() -> None:
    b, big_b, auth, sub = _service()
    state = hs_ntor.client_start(auth, big_b, sub, SeededRng(4))
    plain = hc.IntroducePlaintext(
        b"\x07" * 20, b"\x09" * 32, (hc.LinkSpec(2, b"\x05" * 32), hc.LinkSpec(0, b"\x7f\0\0\1\x23\x28"))
    )
    msg = hs_intro.seal_introduce1(state, plain, ((hc.ExtType.POW, b"p" * 25),))
    raw = msg.encode()
    assert b"\x07" * 20 not in raw and b"\x09" * 32 not in raw  # the intro point cannot read it
    opened = hs_intro.open_introduce2(hc.Introduce1.decode(raw), b, big_b, sub)
    assert opened.plaintext == plain and opened.client_pk == state.x_public
    for i in range(0, len(raw), 7):
        bad = bytearray(raw)
        bad[i] ^= 0x40
        with pytest.raises(RemoteProtocolError):
            hs_intro.open_introduce2(hc.Introduce1.decode(bytes(bad)), b, big_b, sub)
    with pytest.raises(CryptoError):  # a client without the subcredential cannot introduce
        hs_intro.open_introduce2(msg, b, big_b, bytes(32))
