"""UDP flows inside a circuit (after Tor's proposal 339): the bodies of CONNECT_UDP, CONNECTED_UDP
and DATAGRAM, and the SOCKS5 UDP request header (RFC 1928 §7) the proxy's UDP socket speaks.

CONNECT_UDP opens a *connected* flow to one destination: its body is BEGIN's (address, port,
flags), so names travel to the exit and are resolved there.  CONNECTED_UDP is CONNECTED's body
(the address the exit chose).  DATAGRAM carries exactly one UDP payload, never split: up to
`DATAGRAM_MAX` bytes, so that the SENDME nonce (docs/protocol.md §8.4) still fits the cell.

Decoding peer bytes raises only `RemoteProtocolError`.  Layout: docs/protocol.md §7.2, §10.6.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, SENDME_NONCE_LEN, Begin, BeginFlags, Connected

# One UDP payload per DATAGRAM message: 4058 bytes, the relay body less the SENDME nonce, so
# every DATAGRAM (even the one in 16 that carries the nonce) takes exactly one cell.
DATAGRAM_MAX = RELAY_BODY_MAX - SENDME_NONCE_LEN

ConnectUdp = Begin  # same body: address | u16 port | u32 flags
ConnectedUdp = Connected  # same body: address | u32 ttl


def connect_udp_body(host: str, port: int, flags: BeginFlags = BeginFlags.IPV6_OK) -> bytes:
    return ConnectUdp(host, port, flags).encode()


def check_datagram(body: bytes) -> bytes:
    """A DATAGRAM body as received: 1..DATAGRAM_MAX bytes, else RemoteProtocolError."""
    if not 0 < len(body) <= DATAGRAM_MAX:
        raise RemoteProtocolError("DATAGRAM must carry 1..DATAGRAM_MAX bytes")
    return body


# --- SOCKS5 UDP request header (RFC 1928 §7) -----------------------------------------------------
_ATYP_IPV4 = 0x01
_ATYP_DOMAIN = 0x03
_ATYP_IPV6 = 0x04
MAX_SOCKS_UDP_HEADER = 4 + 1 + 255 + 2


@dataclass(frozen=True, slots=True)
class SocksUdpHeader:
    """`RSV(2)=0 FRAG(1) ATYP(1) DST.ADDR DST.PORT DATA`; `host` is canonical IP text or a name."""

    frag: int
    host: str
    port: int
    data: bytes

    def encode(self) -> bytes:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            raw = self.host.encode("ascii")
            if not 0 < len(raw) <= 255 or not all(0x21 <= b <= 0x7E for b in raw):
                raise ValueError("host name must be 1..255 printable ASCII bytes") from None
            addr = bytes([_ATYP_DOMAIN, len(raw)]) + raw
        else:
            addr = bytes([_ATYP_IPV4 if ip.version == 4 else _ATYP_IPV6]) + ip.packed
        if not 0 <= self.port <= 0xFFFF or not 0 <= self.frag <= 0xFF:
            raise ValueError("port or FRAG out of range")
        return b"\x00\x00" + bytes([self.frag]) + addr + self.port.to_bytes(2, "big") + self.data

    @classmethod
    def decode(cls, packet: bytes) -> SocksUdpHeader:
        """Parse one datagram a SOCKS client sent to the relay socket; RemoteProtocolError if malformed.

        Port 0 is refused (no flow can go there); FRAG is returned as is (the caller drops
        FRAG != 0: fragmentation is optional in RFC 1928 and onionmesh does not reassemble).
        """
        try:
            if len(packet) < 4 or packet[0:2] != b"\x00\x00":
                raise ValueError("bad RSV")
            frag, atyp = packet[2], packet[3]
            at = 4
            if atyp == _ATYP_IPV4:
                host = str(ipaddress.IPv4Address(packet[at : at + 4]))
                at += 4
            elif atyp == _ATYP_IPV6:
                host = str(ipaddress.IPv6Address(packet[at : at + 16]))
                at += 16
            elif atyp == _ATYP_DOMAIN:
                n = packet[at]
                raw = packet[at + 1 : at + 1 + n]
                if n == 0 or len(raw) != n or not all(0x21 <= b <= 0x7E for b in raw):
                    raise ValueError("bad host name")
                host = raw.decode("ascii")
                at += 1 + n
            else:
                raise ValueError("unknown ATYP")
            if len(packet) < at + 2:
                raise ValueError("truncated port")
            port = int.from_bytes(packet[at : at + 2], "big")
            if port == 0:
                raise ValueError("port 0")
        except (ValueError, IndexError, ipaddress.AddressValueError) as exc:
            raise RemoteProtocolError("malformed SOCKS5 UDP header") from exc
        return cls(frag, host, port, bytes(packet[at + 2 :]))
