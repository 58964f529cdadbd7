"""Onion-service crypto against Tor's own vectors (tests/vectors/hs_tor.json), byte for byte:
v3 addresses, time periods, key blinding, signing with a blinded key, subcredential, hs-ntor."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from onionmesh.crypto import hs_address, hs_blinding, hs_ntor
from onionmesh.crypto.hs_address import BadOnionAddress, encode_address, parse_onion_host
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.keys import verify_signature
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import SeededRng

TOR = json.loads((Path(__file__).parent.parent / "vectors" / "hs_tor.json").read_text())
H = bytes.fromhex


# --------------------------------------------------------------------------- addresses


def test_address_of_tor_build_address_vector() -> None:
    v = TOR["address_build"]
    assert encode_address(H(v["pubkey"])) == v["address"]
    assert parse_onion_host(v["address"]) == H(v["pubkey"])


@pytest.mark.parametrize("address", TOR["address_valid_examples"])
def test_rend_spec_example_addresses_parse_and_round_trip(address: str) -> None:
    assert encode_address(parse_onion_host(address)) == address


@pytest.mark.parametrize("case", TOR["address_invalid"], ids=lambda c: c["why"])
def test_tor_invalid_addresses_are_refused_for_tors_reason(case: dict) -> None:
    with pytest.raises(BadOnionAddress, match=case["why"]):
        parse_onion_host(case["label"] + ".onion")


def test_upper_case_and_subdomains_as_tor() -> None:
    v = TOR["address_build"]
    pk = H(v["pubkey"])
    assert parse_onion_host(v["address"].upper()) == pk  # Tor lower-cases the SOCKS hostname
    assert parse_onion_host("www." + v["address"]) == pk
    assert parse_onion_host("a.b.c." + v["address"]) == pk
    for bad in ("." + v["address"], v["address"][:-6] + "..onion", "onion", ".onion", v["address"][:-6]):
        with pytest.raises(BadOnionAddress):
            parse_onion_host(bad)


def test_wrong_version_and_torsion_are_refused() -> None:
    pk = H(TOR["address_build"]["pubkey"])
    raw = pk + hs_address.checksum(pk, 4) + b"\x04"
    with pytest.raises(BadOnionAddress, match="version"):
        parse_onion_host(base64.b32encode(raw).decode().lower() + ".onion")
    # a point of order 8 (torsion only), with a correct checksum: Tor refuses it too (§2.2.7)
    low_order = H("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
    raw = low_order + hs_address.checksum(low_order) + b"\x03"
    with pytest.raises(BadOnionAddress, match="subgroup"):
        parse_onion_host(base64.b32encode(raw).decode().lower() + ".onion")


@given(st.binary(min_size=32, max_size=32))
def test_every_generated_key_round_trips(seed: bytes) -> None:
    pk = bytes(SigningKey(seed).verify_key)
    addr = encode_address(pk)
    assert len(addr) == 62 and addr == addr.lower()
    assert parse_onion_host(addr) == pk
    assert hs_address.service_id(pk) + ".onion" == addr


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_parse_refuses_junk_cleanly(text: str) -> None:
    try:
        pk = parse_onion_host(text)
    except BadOnionAddress:
        return
    assert len(pk) == 32 and text.lower().endswith(".onion")


@given(st.binary(min_size=35, max_size=35))
def test_any_35_bytes_parse_only_if_checksum_version_and_point_hold(raw: bytes) -> None:
    label = base64.b32encode(raw).decode().lower()
    try:
        pk = parse_onion_host(label + ".onion")
    except BadOnionAddress:
        return
    assert raw[34] == 3 and raw[32:34] == hs_address.checksum(pk) and pk == raw[:32]


# --------------------------------------------------------------------------- time periods


@pytest.mark.parametrize("case", TOR["time_periods"], ids=lambda c: c["utc"])
def test_time_periods_as_tor(case: dict) -> None:
    assert hs_blinding.period_num(case["time"]) == case["period"]


def test_period_start() -> None:
    assert hs_blinding.period_start(16903) == TOR["period_16903_start"]
    for n in (0, 1234, 16903, 20000):
        start = hs_blinding.period_start(n)
        assert hs_blinding.period_num(start) == n and hs_blinding.period_num(start - 1) == n - 1


# --------------------------------------------------------------------------- blinding


def test_blinding_basics_as_tor() -> None:
    v = TOR["blinding_basics"]
    pk, period = H(v["pubkey"]), v["period"]
    sk = ExpandedKey.from_bytes(H(v["expanded_secret"]))
    assert sk.public == pk
    assert hs_blinding.blinding_param(pk, period) == H(v["param"])
    blinded = hs_blinding.blind_public(pk, period)
    assert blinded == H(v["blinded_pubkey"])
    assert hs_blinding.subcredential(pk, blinded) == H(v["subcredential"])
    blinded_sk = sk.blind(period)
    assert blinded_sk.to_bytes() == H(v["blinded_expanded_secret"])
    assert blinded_sk.public == blinded


@pytest.mark.parametrize("i", range(10))
def test_ed25519_blinding_vectors(i: int) -> None:
    v = TOR["ed25519_blinding"][i]
    sk = ExpandedKey.from_seed(H(v["seed"]))
    assert sk.to_bytes() == H(v["expanded_secret"])
    assert sk.public == H(v["pubkey"])
    assert sk.sign(H(v["pubkey"])) == H(v["self_signature"])  # Tor's expanded-key signer
    blinded = sk.blind_with_param(H(v["param"]))
    assert blinded.to_bytes() == H(v["blinded_expanded_secret"])
    assert hs_blinding.blind_public_with_param(H(v["pubkey"]), H(v["param"])) == H(v["blinded_pubkey"])
    assert blinded.public == H(v["blinded_pubkey"])


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**40), st.binary(max_size=200))
@settings(max_examples=40, deadline=None)
def test_blinded_signature_verifies_with_plain_ed25519(seed: bytes, period: int, message: bytes) -> None:
    sk = ExpandedKey.from_seed(seed)
    assert sk.sign(message) == SigningKey(seed).sign(message).signature  # same as RFC 8032
    blinded = sk.blind(period)
    assert blinded.public == hs_blinding.blind_public(sk.public, period)
    sig = blinded.sign(message)
    VerifyKey(blinded.public).verify(message, sig)
    verify_signature(blinded.public, b"", message, sig)
    with pytest.raises(CryptoError):
        verify_signature(sk.public, b"", message, sig)  # not a signature of the unblinded key


def test_blinded_keys_differ_per_period_and_are_unlinkable_without_the_key() -> None:
    sk = ExpandedKey.from_seed(bytes(range(32)))
    keys = {hs_blinding.blind_public(sk.public, p) for p in range(20_000, 20_010)}
    assert len(keys) == 10 and sk.public not in keys


def test_blinding_refuses_a_non_point() -> None:
    with pytest.raises(CryptoError):
        hs_blinding.blind_public(b"\xff" * 32, 1)


# --------------------------------------------------------------------------- hs-ntor


def test_hs_ntor_mac_vectors() -> None:
    for v in TOR["hs_ntor"]["mac_vectors"]:
        assert hs_ntor.hs_mac(v["key"].encode(), v["message"].encode()) == H(v["mac"])


def test_hs_ntor_as_tors_reference_implementation() -> None:
    v = TOR["hs_ntor"]
    state = hs_ntor.client_start_with(H(v["auth_key"]), H(v["B"]), H(v["subcredential"]), H(v["x"]))
    assert state.x_public == H(v["X"])
    assert (state.intro.enc_key, state.intro.mac_key) == (H(v["enc_key"]), H(v["mac_key"]))
    service = hs_ntor.service_intro_keys(
        H(v["auth_key"]), H(v["b"]), H(v["B"]), H(v["X"]), H(v["subcredential"])
    )
    assert service == state.intro
    info, seed = hs_ntor.service_respond(
        H(v["auth_key"]), H(v["b"]), H(v["B"]), H(v["X"]), SeededRng(0), H(v["y"])
    )
    assert info == H(v["Y"]) + H(v["auth_input_mac"])
    assert seed == H(v["ntor_key_seed"])
    assert hs_ntor.client_finish(state, info) == seed


def test_hs_ntor_round_trip_and_tampering() -> None:
    rng = SeededRng(7)
    b = rng.random_bytes(32)
    from nacl.bindings import crypto_scalarmult_base

    big_b, auth, sub = crypto_scalarmult_base(b), rng.random_bytes(32), rng.random_bytes(32)
    state = hs_ntor.client_start(auth, big_b, sub, rng)
    assert hs_ntor.service_intro_keys(auth, b, big_b, state.x_public, sub) == state.intro
    assert hs_ntor.service_intro_keys(auth, b, big_b, state.x_public, bytes(32)) != state.intro
    info, seed = hs_ntor.service_respond(auth, b, big_b, state.x_public, rng)
    client_keys = hs_ntor.e2e_keys(hs_ntor.client_finish(state, info))
    service_keys = hs_ntor.swap_directions(hs_ntor.e2e_keys(seed))
    assert client_keys.forward_stream == service_keys.backward_stream
    assert client_keys.backward_mac == service_keys.forward_mac
    for i in range(64):
        bad = bytearray(info)
        bad[i] ^= 1
        with pytest.raises(RemoteProtocolError):  # CryptoError is a RemoteProtocolError
            hs_ntor.client_finish(state, bytes(bad))
    with pytest.raises(RemoteProtocolError):
        hs_ntor.client_finish(state, info[:63])
    with pytest.raises(CryptoError):  # a low-order X is refused, not turned into public keys
        hs_ntor.service_intro_keys(auth, b, big_b, bytes(32), sub)
