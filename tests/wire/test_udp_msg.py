"""wire.udp_msg: the SOCKS5 UDP request header (RFC 1928 §7) and the DATAGRAM bound.

Property tests: generated headers round-trip; arbitrary bytes raise nothing but RemoteProtocolError.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.udp_msg import DATAGRAM_MAX, SocksUdpHeader, check_datagram

_name = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255)
_ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@given(
    frag=st.integers(0, 255),
    host=st.one_of(_ipv4, _ipv6, _name.filter(lambda n: not _is_ip(n))),
    port=st.integers(1, 65535),
    data=st.binary(max_size=2000),
)
def test_header_round_trips(frag: int, host: str, port: int, data: bytes) -> None:
    raw = SocksUdpHeader(frag, host, port, data).encode()
    assert SocksUdpHeader.decode(raw) == SocksUdpHeader(frag, host, port, data)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_remote_protocol_error(raw: bytes) -> None:
    try:
        header = SocksUdpHeader.decode(raw)
    except RemoteProtocolError:
        return
    assert SocksUdpHeader.decode(header.encode()) == header


def test_rfc1928_layout() -> None:
    """RSV(2)=0 FRAG ATYP DST.ADDR DST.PORT DATA, for each address type."""
    assert SocksUdpHeader(0, "127.0.0.1", 53, b"q").encode() == b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35q"
    assert SocksUdpHeader(0, "a.b", 443, b"").encode() == b"\x00\x00\x00\x03\x03a.b\x01\xbb"
    assert SocksUdpHeader(1, "::1", 1, b"").encode() == b"\x00\x00\x01\x04" + bytes(15) + b"\x01\x00\x01"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00",  # no ATYP
        b"\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x35",  # RSV != 0
        b"\x00\x00\x00\x02\x7f\x00\x00\x01\x00\x35",  # unknown ATYP
        b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00",  # truncated port
        b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x00",  # port 0
        b"\x00\x00\x00\x03\x00\x00\x35",  # empty name
        b"\x00\x00\x00\x03\x03a b\x00\x35",  # space in name
        b"\x00\x00\x00\x03\x05ab\x00\x35",  # name longer than the packet
    ],
)
def test_malformed_headers_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        SocksUdpHeader.decode(raw)


def test_datagram_bounds() -> None:
    assert DATAGRAM_MAX == 4058  # a 1,472-byte payload (Ethernet MTU) fits one cell with room to spare
    assert check_datagram(b"x" * DATAGRAM_MAX)
    for bad in (b"", b"x" * (DATAGRAM_MAX + 1)):
        with pytest.raises(RemoteProtocolError):
            check_datagram(bad)
