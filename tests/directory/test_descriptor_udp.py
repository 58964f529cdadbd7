"""The descriptor's UDP exit policy extension (issue 22): present exactly when a relay exits UDP,
covered by the signature, and absent descriptors are byte for byte what they were before UDP."""

from __future__ import annotations

import dataclasses

import pytest

from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.directory.path_selection import exit_accepts_port, exit_accepts_udp_port
from onionmesh.errors import CryptoError, RemoteProtocolError
from tests.helpers.descriptors import T0, identity, make


def _with_udp(policy: str) -> RelayDescriptor:
    base = make(3)
    return RelayDescriptor.create(
        identity=identity(3),
        onion_cert=base.onion_cert,
        nickname=base.nickname,
        link_addresses=base.link_addresses,
        dht_contact=base.dht_contact,
        exit_policy="accept *:443",
        bandwidth=base.bandwidth,
        published=base.published,
        lifetime=base.expires - base.published,
        exit_policy_udp=policy,
    )


def test_udp_policy_round_trips_and_is_signed() -> None:
    desc = _with_udp("accept *:53,443; reject *:*")
    raw = desc.encode()
    back = decode_and_verify(raw, T0 + 60)
    assert back.exit_policy_udp == "accept *:53,443; reject *:*" and back.exits_udp
    assert exit_accepts_udp_port(back, 53) and exit_accepts_udp_port(back, 443)
    assert not exit_accepts_udp_port(back, 80) and exit_accepts_port(back, 443)
    tampered = raw.replace(b"53,443", b"53,444")
    with pytest.raises(CryptoError):
        decode_and_verify(tampered, T0 + 60)


def test_descriptor_without_udp_is_encoded_as_before() -> None:
    """No extension byte at all: the signed body ends with `expires` as it always did."""
    desc = make(3)
    assert desc.exit_policy_udp == "" and not desc.exits_udp
    raw = desc.encode()
    assert raw[-64 - 8 : -64] == desc.expires.to_bytes(8, "big")
    assert not exit_accepts_udp_port(decode_and_verify(raw, T0 + 60), 53)


def test_noncanonical_udp_extensions_refused() -> None:
    desc = make(3)
    body, sig = desc.encode()[:-64], desc.encode()[-64:]
    for ext in (b"\x01\x00\x00", b"\x02\x00\x01x", b"\x01\x00\x05ab"):  # empty, unknown, truncated
        with pytest.raises(RemoteProtocolError):
            RelayDescriptor.decode(body + ext + sig)


def test_udp_policy_length_is_bounded() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(make(3), exit_policy_udp="accept *:1," * 200)
