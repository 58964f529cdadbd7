"""proto.socks: UDP ASSOCIATE is a request only when the server carries UDP (udp=True)."""

from __future__ import annotations

from onionmesh.proto.socks import SocksRejected, SocksServer
from onionmesh.proto.socks_wire import SocksCommand, SocksReply, SocksRequest

ASSOCIATE = b"\x05\x01\x00" + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"  # DST 0.0.0.0:0


def test_udp_associate_accepted_with_port_zero_when_enabled() -> None:
    server = SocksServer(udp=True)
    server.receive_data(ASSOCIATE)
    event = server.next_event()
    assert isinstance(event, SocksRequest)
    assert (event.command, event.host, event.port) == (SocksCommand.UDP_ASSOCIATE, "0.0.0.0", 0)
    server.data_to_send()
    server.reply(SocksReply.SUCCEEDED, "127.0.0.1", 40000)
    assert server.data_to_send() == b"\x05\x00\x00\x01\x7f\x00\x00\x01" + (40000).to_bytes(2, "big")


def test_udp_associate_refused_by_default() -> None:
    server = SocksServer()
    server.receive_data(ASSOCIATE)
    assert isinstance(server.next_event(), SocksRejected)
    assert server.data_to_send().endswith(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
