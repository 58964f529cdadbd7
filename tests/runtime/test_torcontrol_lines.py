"""Tor's text forms of circuits and streams: the SOCKS isolation keywords, as stem parses them."""

from __future__ import annotations

from onionmesh.runtime.torcontrol.lines import circuit_line, stream_event
from onionmesh.runtime.torcontrol.target import CircuitInfo, StreamInfo


def test_circuit_and_stream_lines_end_with_the_quoted_socks_isolation() -> None:
    circ = CircuitInfo(7, "BUILT", (), socks_username='al "x"', socks_password="pw")
    stream = StreamInfo(3, "SUCCEEDED", 7, "example.com:80", socks_username='al "x"', socks_password="pw")
    tail = ' SOCKS_USERNAME="al \\"x\\"" SOCKS_PASSWORD="pw"'
    assert circuit_line(circ).endswith(tail)
    assert stream_event(stream).endswith(" PURPOSE=USER" + tail)


def test_lines_without_isolation_name_none() -> None:
    assert "SOCKS_" not in circuit_line(CircuitInfo(7, "BUILT", ()))
    assert "SOCKS_" not in stream_event(StreamInfo(3, "NEW", 0, "example.com:80"))
    only_user = stream_event(StreamInfo(3, "NEW", 0, "example.com:80", socks_username="u"))
    assert only_user.endswith('SOCKS_USERNAME="u"') and "SOCKS_PASSWORD" not in only_user
