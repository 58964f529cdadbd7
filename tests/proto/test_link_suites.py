"""Tests for the record suites of onionmesh.proto.link: the offer in MSG1, the choice in MSG2,
refusals, downgrade protection, and AEGIS-256 records as docs/protocol.md specifies them."""

from __future__ import annotations

import hashlib

import pytest
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from onionmesh.crypto import kdf
from onionmesh.crypto.sodium import aegis256_encrypt, chacha20poly1305_encrypt
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.proto.link import (
    HANDSHAKE_INFO,
    LINK_MAGIC,
    LINK_VERSION,
    MSG2_LEN,
    RECORD_KEYS_INFO,
    SIG_CONTEXT,
    SUPPORTED_SUITES,
    LinkEstablished,
    LinkState,
)
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import CELL_LEN
from tests.helpers.link_harness import (
    AEGIS,
    BOTH,
    CHACHA,
    IDENTITY,
    ONLY_CHACHA,
    assert_msg1_field_refused,
    encoded,
    make_cells,
    needs_aes,
    new_pair,
    open_pair,
    record_len,
    transfer,
)

# MSG1 of a version-1 initiator (tests/vectors/link.json before version 2): reserved bytes zero
V1_MSG1 = bytes.fromhex(
    "4f4d4c4b000100000f4eb345289c5584268082e818272b82dd9bb1f9085181599b9d57e852954a57"
    "000000000000000000000000000000000000000000000000"
)


def test_version_1_initiator_is_refused_cleanly() -> None:
    _, responder = new_pair()
    with pytest.raises(RemoteProtocolError, match="unsupported link version"):
        responder.receive_data(V1_MSG1)
    assert responder.state is not LinkState.OPEN
    assert not responder.data_to_send()


@pytest.mark.parametrize(
    ("initiator_suites", "responder_suites", "want"),
    [
        pytest.param(ONLY_CHACHA, ONLY_CHACHA, CHACHA, id="chacha-chacha"),
        pytest.param(ONLY_CHACHA, BOTH, CHACHA, id="chacha-both", marks=needs_aes),
        pytest.param(BOTH, ONLY_CHACHA, CHACHA, id="both-chacha", marks=needs_aes),
        pytest.param(BOTH, BOTH, AEGIS, id="both-both", marks=needs_aes),
    ],
)
def test_suite_negotiation(
    initiator_suites: frozenset[int], responder_suites: frozenset[int], want: int
) -> None:
    initiator, responder = new_pair(suites=initiator_suites, responder_suites=responder_suites)
    initiator.initiate()
    msg1 = initiator.data_to_send()
    assert int.from_bytes(msg1[6:8], "big") == sum(1 << (s - 1) for s in initiator_suites)
    assert responder.receive_data(msg1) == [LinkEstablished(None, want)]
    msg2 = responder.data_to_send()
    assert len(msg2) == MSG2_LEN  # the choice travels encrypted; MSG2's length never depends on it
    assert initiator.receive_data(msg2) == [LinkEstablished(IDENTITY.public, want)]
    assert initiator.suite == responder.suite == want
    cells = make_cells(3)
    initiator.send_cells(encoded(cells))
    wire = initiator.data_to_send()
    assert len(wire) == record_len(3, want)
    assert responder.receive_data(wire) == cells
    assert transfer(responder, initiator, cells[:2]) == cells[:2]


@pytest.mark.parametrize(
    ("offer", "want"),
    [
        (0x0001, CHACHA),
        (0x0005, CHACHA),
        (0x8001, CHACHA),
        (0xFFFD, CHACHA),
        pytest.param(0x0003, AEGIS, marks=needs_aes),
        pytest.param(0xFFFF, AEGIS, marks=needs_aes),
    ],
)
def test_responder_ignores_unknown_offer_bits(offer: int, want: int) -> None:
    _, responder = new_pair()
    e = crypto_scalarmult_base(SeededRng(b"anyone").random_bytes(32))
    msg1 = LINK_MAGIC + LINK_VERSION.to_bytes(2, "big") + offer.to_bytes(2, "big") + e + bytes(24)
    assert responder.receive_data(msg1) == [LinkEstablished(None, want)]


@pytest.mark.parametrize("offer", [0x0000, 0x0002, 0x8000, 0xFFFE])
def test_offer_without_chacha_is_refused(offer: int) -> None:
    assert_msg1_field_refused(6, offer, "offer lacks ChaCha20-Poly1305")


def forged_msg2(msg1: bytes, suite: int, version: int = LINK_VERSION) -> bytes:
    """MSG2 as IDENTITY's relay would answer `msg1` (its key, a valid signature), choosing `suite`."""
    e = SeededRng(b"forged msg2").random_bytes(32)
    e_r = crypto_scalarmult_base(e)
    h = hashlib.blake2b(msg1 + e_r, digest_size=32, person=b"om-link-hash").digest()
    k_hs = kdf.expand(kdf.extract(crypto_scalarmult(e, msg1[8:40]), salt=h), HANDSHAKE_INFO, 32)
    sig = IDENTITY.sign(SIG_CONTEXT, h)
    plain = IDENTITY.public + sig + version.to_bytes(2, "big") + suite.to_bytes(2, "big")
    return e_r + chacha20poly1305_encrypt(plain, h, bytes(12), k_hs)


def test_forged_msg2_helper_makes_a_valid_msg2() -> None:
    """The control for the test below: with an offered suite the hand-made MSG2 opens the link."""
    initiator, _ = new_pair(suites=ONLY_CHACHA)
    initiator.initiate()
    msg1 = initiator.data_to_send()
    assert initiator.receive_data(forged_msg2(msg1, CHACHA)) == [LinkEstablished(IDENTITY.public, CHACHA)]
    initiator, _ = new_pair(suites=ONLY_CHACHA)
    initiator.initiate()
    with pytest.raises(RemoteProtocolError, match="another link version"):
        initiator.receive_data(forged_msg2(initiator.data_to_send(), CHACHA, version=1))


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (ONLY_CHACHA, AEGIS),
        (ONLY_CHACHA, 0),
        (ONLY_CHACHA, 3),
        (ONLY_CHACHA, 0xFFFF),
        pytest.param(BOTH, 0, marks=needs_aes),
        pytest.param(BOTH, 3, marks=needs_aes),
        pytest.param(BOTH, 0x0102, marks=needs_aes),
    ],
)
def test_msg2_choosing_a_suite_not_offered_is_refused(offered: frozenset[int], chosen: int) -> None:
    initiator, _ = new_pair(suites=offered)
    initiator.initiate()
    with pytest.raises(RemoteProtocolError, match="did not offer"):
        initiator.receive_data(forged_msg2(initiator.data_to_send(), chosen))
    assert initiator.state is not LinkState.OPEN
    assert initiator.suite is None


@pytest.mark.parametrize(
    ("offered", "tampered_offer", "responder_picks"),
    [
        pytest.param(BOTH, 0x0001, CHACHA, id="strip-aegis", marks=needs_aes),
        pytest.param(ONLY_CHACHA, 0x0003, AEGIS, id="add-aegis", marks=needs_aes),
        pytest.param(ONLY_CHACHA, 0x8001, CHACHA, id="unknown-bit"),
    ],
)
def test_tampered_offer_fails_the_handshake_at_the_initiator(
    offered: frozenset[int], tampered_offer: int, responder_picks: int
) -> None:
    """A man in the middle rewriting the offer fools the responder, but MSG1 is in the transcript
    hash: the initiator's MSG2 does not authenticate, and no record ever flows."""
    initiator, responder = new_pair(suites=offered, responder_suites=SUPPORTED_SUITES)
    initiator.initiate()
    msg1 = bytearray(initiator.data_to_send())
    msg1[6:8] = tampered_offer.to_bytes(2, "big")
    assert responder.receive_data(bytes(msg1)) == [LinkEstablished(None, responder_picks)]
    with pytest.raises(CryptoError, match="did not authenticate"):
        initiator.receive_data(responder.data_to_send())
    assert initiator.state is not LinkState.OPEN


@needs_aes
def test_aegis_records_are_aegis256_with_a_32_byte_tag() -> None:
    """The first initiator record, recomputed from the key schedule in docs/protocol.md."""
    e_i = SeededRng(b"initiator 0").random_bytes(32)  # the first draw of each side's rng
    e_r = SeededRng(b"responder 0").random_bytes(32)
    initiator, _ = open_pair(suite=AEGIS)
    cells = encoded(make_cells(2))
    initiator.send_cells(cells)
    record = initiator.data_to_send()
    msg1 = (
        LINK_MAGIC + LINK_VERSION.to_bytes(2, "big") + b"\x00\x03" + crypto_scalarmult_base(e_i) + bytes(24)
    )
    h = hashlib.blake2b(msg1 + crypto_scalarmult_base(e_r), digest_size=32, person=b"om-link-hash").digest()
    prk = kdf.extract(crypto_scalarmult(e_i, crypto_scalarmult_base(e_r)), salt=h)
    material = kdf.expand(prk, RECORD_KEYS_INFO + AEGIS.to_bytes(2, "big"), 128)
    k_i2r, hk_i2r = material[0:32], material[64:96]
    mask = int.from_bytes(hashlib.blake2b(bytes(8), key=hk_i2r, digest_size=2).digest(), "big")
    header = (2 ^ mask).to_bytes(2, "big")
    nonce = bytes(24) + (0).to_bytes(8, "big")
    assert record == header + aegis256_encrypt(b"".join(cells), header, nonce, k_i2r)
    assert len(record) == 2 + 2 * CELL_LEN + 32
