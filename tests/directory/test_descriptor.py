"""Tests for onionmesh.directory.descriptor: codec, signature, validity, vectors, directory file.

Regenerate tests/vectors/descriptor.json (only after a deliberate format change) with
`python tests/directory/test_descriptor.py`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import struct
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from onionmesh.crypto import ntor
from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert, fingerprint
from onionmesh.directory.descriptor import (
    DEFAULT_PROTOCOLS,
    MAX_DESCRIPTOR_LEN,
    MAX_LIFETIME,
    MAX_PROTOCOLS_LEN,
    SIGNATURE_CONTEXT,
    RelayDescriptor,
    decode_and_verify,
    protocol_versions,
)
from onionmesh.directory.descriptor_file import decode_descriptor_file, encode_descriptor_file
from onionmesh.errors import CryptoError, DirectoryError, OnionmeshError, RemoteProtocolError
from onionmesh.rng import SeededRng

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "descriptor.json"
T0 = 1_700_000_000
HOUR = 3600


def keys(seed: int) -> tuple[IdentityKey, OnionKey]:
    rng = SeededRng(seed)
    return IdentityKey.generate(rng), OnionKey.generate(rng)


def make(seed: int = 1, *, published: int = T0, cert_window: tuple[int, int] | None = None, **kw: Any):
    identity, onion = keys(seed)
    after, until = cert_window or (published - HOUR, published + 7 * 24 * HOUR)
    args: dict[str, Any] = {
        "identity": identity,
        "onion_cert": OnionKeyCert.issue(identity, onion.public, after, until),
        "nickname": f"relay{seed}",
        "link_addresses": [("192.0.2.1", 9001)],
        "dht_contact": None,
        "exit_policy": "",
        "bandwidth": 1_000_000,
        "published": published,
    }
    args.update(kw)
    return RelayDescriptor.create(**args)


def family_keys(n: int) -> list[bytes]:
    return [keys(1000 + i)[0].public for i in range(n)]


def maximal(seed: int = 7) -> RelayDescriptor:
    return make(
        seed,
        nickname="N" * 19,
        link_addresses=[(f"2001:db8::{i + 1}", 65535) for i in range(4)],
        dht_contact=("2001:db8::ff", 4000),
        exit_policy="x" * 1024,
        bandwidth=2**32 - 1,
        family=family_keys(8),
        protocols="p" * 64,
        lifetime=MAX_LIFETIME,
    )


def rich() -> RelayDescriptor:
    return make(
        3,
        link_addresses=[("198.51.100.7", 443), ("2001:db8::7", 9001)],
        dht_contact=("198.51.100.7", 4000),
        exit_policy="accept *:80\naccept *:443\nreject *:*",
        family=family_keys(2),
    )


# --- an independent encoder: the format as documented, segment by segment ---------------------
def _addr(ip: str, port: int) -> bytes:
    a = ipaddress.ip_address(ip)
    return bytes([a.version]) + a.packed + struct.pack(">H", port)


def parts(d: RelayDescriptor) -> dict[str, bytes]:
    nick = d.nickname.encode()
    pol = d.exit_policy.encode()
    proto = d.protocols.encode()
    return {
        "version": b"\x01",
        "nickname": bytes([len(nick)]) + nick,
        "identity": d.identity_pk,
        "cert": d.onion_cert.encode(),
        "links": bytes([len(d.link_addresses)]) + b"".join(_addr(*a) for a in d.link_addresses),
        "dht": b"\x00" if d.dht_contact is None else b"\x01" + _addr(*d.dht_contact),
        "policy": struct.pack(">H", len(pol)) + pol,
        "bandwidth": struct.pack(">I", d.bandwidth),
        "family": bytes([len(d.family)]) + b"".join(d.family),
        "protocols": bytes([len(proto)]) + proto,
        "times": struct.pack(">QQ", d.published, d.expires),
    }


def assemble(p: dict[str, bytes], signer: IdentityKey) -> bytes:
    body = b"".join(p.values())
    return body + signer.sign(SIGNATURE_CONTEXT, body)


# --- round trip, properties ------------------------------------------------------------------
@pytest.mark.parametrize("factory", [make, rich, maximal])
def test_round_trip_and_independent_encoding(factory) -> None:
    d = factory()
    enc = d.encode()
    assert enc == assemble(parts(d), keys({make: 1, rich: 3, maximal: 7}[factory])[0])
    back = RelayDescriptor.decode(enc)
    assert back == d
    back.verify(T0)
    assert decode_and_verify(enc, T0 + 60) == d


def test_properties() -> None:
    d = rich()
    identity, onion = keys(3)
    assert d.fingerprint == fingerprint(identity.public) == identity.fingerprint
    assert d.onion_pk == onion.public
    assert d.is_exit and not make().is_exit and not make(exit_policy=" \n").is_exit
    assert (
        d.dht_key
        == hashlib.blake2b(
            b"onionmesh-descriptor-key" + bytes.fromhex(d.fingerprint), digest_size=20
        ).digest()
    )
    assert len(d.dht_key) == 20
    assert d.expires == T0 + 18 * HOUR and d.protocols == DEFAULT_PROTOCOLS
    assert d.usable_until == d.expires
    assert make(cert_window=(T0 - 10, T0 + HOUR)).usable_until == T0 + HOUR


def test_newer_than() -> None:
    a, b = make(published=T0), make(published=T0 + 1)
    assert b.newer_than(a) and not a.newer_than(b) and not a.newer_than(a)
    assert not make(2, published=T0 + 5).newer_than(a)


def test_create_normalises() -> None:
    fam = family_keys(3)
    d = make(
        link_addresses=[("::ffff:192.0.2.9", 1), ("2001:DB8:0:0::1", 2)],
        dht_contact=("2001:0db8::0002", 3),
        family=[fam[2], fam[0], fam[1], fam[0]],
    )
    assert d.link_addresses == (("192.0.2.9", 1), ("2001:db8::1", 2))
    assert d.dht_contact == ("2001:db8::2", 3)
    assert d.family == tuple(sorted(fam))


@pytest.mark.parametrize(
    "kw",
    [
        {"nickname": ""},
        {"nickname": "x" * 20},
        {"nickname": "bad-name"},
        {"nickname": "é"},
        {"link_addresses": []},
        {"link_addresses": [("192.0.2.1", p) for p in range(1, 6)]},
        {"link_addresses": [("192.0.2.1", 0)]},
        {"link_addresses": [("192.0.2.1", 65536)]},
        {"link_addresses": [("0.0.0.0", 1)]},
        {"link_addresses": [("224.0.0.1", 1)]},
        {"link_addresses": [("fe80::1%eth0", 1)]},
        {"link_addresses": [("example.org", 1)]},
        {"link_addresses": [("192.0.2.1", 1), ("192.0.2.1", 1)]},
        {"dht_contact": ("::", 1)},
        {"exit_policy": "é" * 513},
        {"bandwidth": 2**32},
        {"bandwidth": -1},
        {"family": family_keys(9)},
        {"family": [keys(1)[0].public]},
        {"family": [b"short"]},
        {"protocols": "p" * 65},
        {"protocols": "link=1\n"},
        {"lifetime": 0},
        {"lifetime": MAX_LIFETIME + 1},
        {"published": -1, "cert_window": (0, HOUR)},
    ],
)
def test_create_rejects(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(**kw)


def test_max_size() -> None:
    d = maximal()
    # version, nickname, identity, cert, 4 IPv6 links, IPv6 dht, policy, bandwidth, family, protocols;
    # then times and signature
    expected = 1 + (1 + 19) + 32 + 112 + (1 + 4 * 19) + (1 + 19) + (2 + 1024) + 4 + (1 + 8 * 32) + (1 + 64)
    expected += 16 + 64
    assert len(d.encode()) == expected == 1694
    assert expected <= MAX_DESCRIPTOR_LEN
    assert RelayDescriptor.decode(d.encode()) == d


# --- verification ----------------------------------------------------------------------------
def test_verify_window_and_skew() -> None:
    d = make()
    d.verify(T0 - 600)
    d.verify(d.expires - 1)
    with pytest.raises(DirectoryError, match="future"):
        d.verify(T0 - 601)
    d.verify(T0 - 1000, max_clock_skew=1000)
    with pytest.raises(DirectoryError, match="expired"):
        d.verify(d.expires)
    with pytest.raises(ValueError):
        d.verify(float("nan"))


def test_wrong_key_signature() -> None:
    d = make()
    forged = assemble(parts(d), keys(2)[0])
    bad = RelayDescriptor.decode(forged)
    with pytest.raises(CryptoError):
        bad.verify(T0)
    with pytest.raises(CryptoError):
        replace(d, signature=bytes(64)).verify(T0)


def test_onion_cert_problems() -> None:
    with pytest.raises(CryptoError):  # expired before now
        make(cert_window=(T0 - 2 * HOUR, T0 - HOUR)).verify(T0)
    with pytest.raises(CryptoError):  # not yet valid
        make(cert_window=(T0 + HOUR, T0 + 2 * HOUR)).verify(T0)
    d = make()
    other = keys(2)[0]
    foreign = OnionKeyCert.issue(other, d.onion_pk, T0 - HOUR, T0 + HOUR)
    resigned = RelayDescriptor.create(
        identity=keys(1)[0],
        onion_cert=foreign,
        nickname=d.nickname,
        link_addresses=d.link_addresses,
        dht_contact=None,
        exit_policy="",
        bandwidth=1,
        published=T0,
    )
    with pytest.raises(CryptoError):
        resigned.verify(T0)
    with pytest.raises(OnionmeshError):  # empty validity window
        make(cert_window=(T0, T0)).verify(T0)


def _check_flip(enc: bytes, bit: int) -> None:
    bad = bytearray(enc)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(OnionmeshError):
        decode_and_verify(bytes(bad), T0)


RICH = rich().encode()


@given(st.integers(0, len(RICH) * 8 - 1))
def test_any_bit_flip_fails(bit: int) -> None:
    _check_flip(RICH, bit)


def test_every_bit_flip_fails_exhaustive() -> None:
    enc = make(dht_contact=("192.0.2.2", 1), family=family_keys(1), exit_policy="accept *:*").encode()
    for bit in range(len(enc) * 8):
        _check_flip(enc, bit)


# --- non-canonical and malformed encodings ---------------------------------------------------
def _ip6(text: str, port: int = 1) -> bytes:
    return b"\x06" + ipaddress.IPv6Address(text).packed + struct.pack(">H", port)


_SELF = keys(1)[0].public
_FAM = sorted(family_keys(2))


@pytest.mark.parametrize(
    "segment,raw",
    [
        ("version", b"\x02"),
        ("version", b"\x00"),
        ("nickname", b"\x00"),
        ("nickname", b"\x14" + b"x" * 20),
        ("nickname", b"\x08bad-name"),
        ("nickname", b"\x02\xc3\xa9"),
        ("links", b"\x00"),
        ("links", b"\x05" + b"".join(_addr("192.0.2.1", p) for p in range(1, 6))),
        ("links", b"\x01\x05" + bytes(6)),
        ("links", b"\x01" + _ip6("::ffff:192.0.2.1")),
        ("links", b"\x01" + _addr("192.0.2.1", 0)),
        ("links", b"\x01" + _addr("0.0.0.0", 1)),
        ("links", b"\x01" + _addr("ff02::1", 1)),
        ("links", b"\x02" + _addr("192.0.2.1", 1) * 2),
        ("dht", b"\x02" + _addr("192.0.2.1", 1)),
        ("dht", b"\x01" + _ip6("::ffff:10.0.0.1")),
        ("policy", b"\x00\x02\xc0\x80"),
        ("policy", b"\x00\x01\xff"),
        ("policy", b"\x04\x01" + b"x" * 1025),
        ("policy", b"\xff\xff"),
        ("family", b"\x02" + _FAM[1] + _FAM[0]),
        ("family", b"\x02" + _FAM[0] + _FAM[0]),
        ("family", b"\x01" + _SELF),
        ("family", b"\x09" + b"".join(sorted(family_keys(9)))),
        ("protocols", b"\x01\x80"),
        ("protocols", b"\x01\x0a"),
        ("protocols", b"\x41" + b"p" * 65),
        ("times", struct.pack(">QQ", T0, T0)),
        ("times", struct.pack(">QQ", T0, T0 - 1)),
        ("times", struct.pack(">QQ", T0, T0 + MAX_LIFETIME + 1)),
    ],
)
def test_non_canonical_rejected(segment: str, raw: bytes) -> None:
    p = parts(make())
    assert RelayDescriptor.decode(assemble(p, keys(1)[0])) == make()  # control
    p[segment] = raw
    with pytest.raises(RemoteProtocolError):
        RelayDescriptor.decode(assemble(p, keys(1)[0]))


def test_trailing_truncated_and_oversized() -> None:
    enc = make().encode()
    for bad in (enc + b"\x00", enc[:-1], b"", b"\x01"):
        with pytest.raises(RemoteProtocolError):
            RelayDescriptor.decode(bad)
    with pytest.raises(RemoteProtocolError, match="too long"):
        RelayDescriptor.decode(b"\x01" * (MAX_DESCRIPTOR_LEN + 1))


# --- hypothesis: arbitrary input, generated descriptors --------------------------------------
@settings(max_examples=300)
@given(st.binary(max_size=MAX_DESCRIPTOR_LEN + 8))
def test_arbitrary_bytes_only_raise_onionmesh_errors(data: bytes) -> None:
    with contextlib.suppress(OnionmeshError):
        decode_and_verify(data, T0)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, len(RICH)), st.integers(0, 3), st.binary(min_size=1, max_size=4)), max_size=4
    )
)
def test_mutated_descriptors_only_raise_onionmesh_errors(edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(RICH)
    for pos, op, payload in edits:
        if op == 0:
            data[pos : pos + len(payload)] = payload  # overwrite
        elif op == 1:
            data[pos:pos] = payload  # insert
        elif op == 2:
            del data[pos : pos + len(payload)]
        else:
            del data[pos:]
    try:
        d = RelayDescriptor.decode(bytes(data))
    except RemoteProtocolError:
        return
    assert d.encode() == bytes(data)  # anything that decodes is canonical
    try:
        d.verify(T0)
    except OnionmeshError:
        assume(False)
    assert bytes(data) == RICH


_usable = st.ip_addresses().filter(
    lambda a: not (a.is_unspecified or a.is_multicast) and getattr(a, "ipv4_mapped", None) is None
)
_address = st.tuples(_usable.map(str), st.integers(1, 65535))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.binary(min_size=32, max_size=32),
    nickname=st.from_regex(r"[A-Za-z0-9]{1,19}", fullmatch=True),
    links=st.lists(_address, min_size=1, max_size=4, unique=True),
    dht=st.none() | _address,
    policy=st.text(max_size=256),
    bandwidth=st.integers(0, 2**32 - 1),
    family=st.lists(st.binary(min_size=32, max_size=32), max_size=8, unique=True),
    protocols=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64),
    published=st.integers(0, 2**64 - 1 - MAX_LIFETIME),
    lifetime=st.integers(1, MAX_LIFETIME),
)
def test_generated_descriptors_round_trip(
    seed, nickname, links, dht, policy, bandwidth, family, protocols, published, lifetime
) -> None:
    identity = IdentityKey(seed)
    assume(identity.public not in family)
    cert = OnionKeyCert.issue(identity, keys(9)[1].public, published, published + lifetime)
    d = RelayDescriptor.create(
        identity=identity,
        onion_cert=cert,
        nickname=nickname,
        link_addresses=links,
        dht_contact=dht,
        exit_policy=policy,
        bandwidth=bandwidth,
        family=family,
        protocols=protocols,
        published=published,
        lifetime=lifetime,
    )
    enc = d.encode()
    assert len(enc) <= MAX_DESCRIPTOR_LEN
    assert decode_and_verify(enc, published) == d
    assert enc == assemble(parts(d), identity)


# --- protocols text ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("link=2 circ=3,4 relay=1", "circ", {3, 4}),
        ("link=2 circ=3-4 relay=1", "circ", {3, 4}),
        ("circ=3", "circ", {3}),
        ("link=2 relay=1", "circ", set()),
        ("circ=", "circ", set()),
        ("circ=x,4,-,5-,²", "circ", {4}),
        ("circ=1-1000000000", "circ", set()),  # wider than 64: ignored, never materialised
        ("circ=4-3", "circ", set()),
        ("circuit=3 circ=4", "circ", {4}),
    ],
)
def test_protocol_versions(text: str, name: str, expected: set[int]) -> None:
    assert protocol_versions(text, name) == expected


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=MAX_PROTOCOLS_LEN))
def test_protocol_versions_of_any_text_is_small_and_never_raises(text: str) -> None:
    versions = protocol_versions(text, "circ")
    assert len(versions) <= 64 * len(text) and all(v >= 0 for v in versions)


def test_default_protocols_advertise_the_layer_suites_this_machine_runs() -> None:
    assert protocol_versions(DEFAULT_PROTOCOLS, "circ") == set(ntor.LOCAL_TYPES)


# --- test vectors ----------------------------------------------------------------------------
def make_vector(spec: dict[str, Any]) -> dict[str, Any]:
    rng = SeededRng(spec["rng_seed"])
    identity, onion = IdentityKey.generate(rng), OnionKey.generate(rng)
    cert = OnionKeyCert.issue(identity, onion.public, *spec["onion_cert_window"])
    d = RelayDescriptor.create(
        identity=identity,
        onion_cert=cert,
        nickname=spec["nickname"],
        link_addresses=[tuple(a) for a in spec["link_addresses"]],
        dht_contact=None if spec["dht_contact"] is None else tuple(spec["dht_contact"]),
        exit_policy=spec["exit_policy"],
        bandwidth=spec["bandwidth"],
        family=[bytes.fromhex(f) for f in spec["family"]],
        protocols=spec["protocols"],
        published=spec["published"],
        lifetime=spec["lifetime"],
    )
    return {
        "spec": spec,
        "identity_seed": identity.seed.hex(),
        "identity_pk": identity.public.hex(),
        "onion_secret": onion.secret.hex(),
        "onion_pk": onion.public.hex(),
        "fingerprint": d.fingerprint,
        "dht_key": d.dht_key.hex(),
        "expires": d.expires,
        "is_exit": d.is_exit,
        "encoding": d.encode().hex(),
    }


def _specs() -> list[dict[str, Any]]:
    base = {
        "protocols": "link=2 circ=3,4 relay=1",
        "published": T0,
        "onion_cert_window": [T0 - HOUR, T0 + 7 * 86400],
    }
    return [
        {
            **base,
            "name": "minimal",
            "rng_seed": 1,
            "nickname": "alpha",
            "link_addresses": [["192.0.2.1", 9001]],
            "dht_contact": None,
            "exit_policy": "",
            "bandwidth": 1_000_000,
            "family": [],
            "lifetime": 18 * HOUR,
        },
        {
            **base,
            "name": "exit-with-family",
            "rng_seed": 2,
            "nickname": "ExitRelay2",
            "link_addresses": [["198.51.100.7", 443], ["2001:db8::7", 9001]],
            "dht_contact": ["198.51.100.7", 4000],
            "exit_policy": "accept *:80\naccept *:443\nreject *:*",
            "bandwidth": 12_500_000,
            "family": sorted(k.hex() for k in family_keys(2)),
            "lifetime": MAX_LIFETIME,
        },
        {
            **base,
            "name": "maximal",
            "rng_seed": 3,
            "nickname": "MaximalRelay0123456",
            "link_addresses": [[f"2001:db8::{i + 1}", 65535] for i in range(4)],
            "dht_contact": ["2001:db8::ff", 4000],
            "exit_policy": "accept *:443\n" * 77 + "accept *:80\n" + "reject *:*\n",
            "bandwidth": 2**32 - 1,
            "family": sorted(k.hex() for k in family_keys(8)),
            "protocols": "p" * 64,
            "lifetime": MAX_LIFETIME,
        },
    ]


def test_vectors_reproduce() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert [v["spec"]["name"] for v in vectors["vectors"]] == [s["name"] for s in _specs()]
    for vec, spec in zip(vectors["vectors"], _specs(), strict=True):
        assert vec == make_vector(spec)
        d = decode_and_verify(bytes.fromhex(vec["encoding"]), T0)
        assert d.fingerprint == vec["fingerprint"] and d.dht_key.hex() == vec["dht_key"]
        assert d.identity_pk.hex() == vec["identity_pk"] and d.onion_pk.hex() == vec["onion_pk"]
        assert d.nickname == spec["nickname"] and d.exit_policy == spec["exit_policy"]
        assert [list(a) for a in d.link_addresses] == spec["link_addresses"]
        assert d.family == tuple(bytes.fromhex(f) for f in spec["family"])
        assert (d.published, d.expires, d.bandwidth) == (T0, vec["expires"], spec["bandwidth"])
    assert len(bytes.fromhex(vectors["vectors"][-1]["encoding"])) == 1694


# --- directory file --------------------------------------------------------------------------
def test_directory_file_round_trip_and_bad_entries() -> None:
    good = [make(1), rich()]
    text = encode_descriptor_file(good)
    assert decode_descriptor_file(text, T0) == (good, [])
    doc = json.loads(text)
    tampered = bytearray(base64.b64decode(doc["descriptors"][0]))
    tampered[-1] ^= 1
    doc["descriptors"] += [
        42,
        "not base64!",
        base64.b64encode(bytes(tampered)).decode(),
        base64.b64encode(make(4, published=T0 - 20 * HOUR).encode()).decode(),  # expired
        "A" * 4000,
    ]
    descs, errors = decode_descriptor_file(json.dumps(doc), T0)
    assert descs == good
    assert [e.split(":")[0] for e in errors] == [f"entry {i}" for i in range(2, 7)]
    assert all(len(e) < 120 for e in errors)


def test_directory_file_keeps_newest_per_identity() -> None:
    old, new, other = make(1, published=T0 - 10), make(1, published=T0), make(2)
    descs, errors = decode_descriptor_file(encode_descriptor_file([old, other, new, old]), T0)
    assert descs == [other, new]
    assert [e.split(":")[0] for e in errors] == ["entry 0", "entry 3"]


@pytest.mark.parametrize(
    "text",
    [
        "x" * (4 * 1024 * 1024 + 1),
        "not json",
        "[" * 100_000,
        "[]",
        '{"version": true, "descriptors": []}',
        '{"version": 2, "descriptors": []}',
        '{"version": 1, "descriptors": {}}',
        json.dumps({"version": 1, "descriptors": ["x"] * 10_001}),
    ],
)
def test_directory_file_fatal(text: str) -> None:
    with pytest.raises(DirectoryError):
        decode_descriptor_file(text, T0)


if __name__ == "__main__":
    out = {"description": "RelayDescriptor test vectors; see tests/directory/test_descriptor.py"}
    out["vectors"] = [make_vector(s) for s in _specs()]  # type: ignore[assignment]
    VECTORS.write_text(json.dumps(out, indent=1) + "\n")
    sys.exit(0)
