"""Bridge lines: what `onionmesh relay --bridge` prints is what `onionmesh proxy --bridge` reads."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.crypto.keys import fingerprint
from onionmesh.directory.bridge_line import BridgeLine, parse_bridge_line

SECRET = "Q2xvc2UgdGhlIGdhdGUgYmVoaW5kIHlvdSBwbGVhc2U"
IDENTITY = bytes(range(32))

secrets = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=22, max_size=128
)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z]{2,10}){1,3}", fullmatch=True),
)


@given(st.booleans(), hosts, st.integers(1, 65535), secrets, st.binary(min_size=32, max_size=32))
def test_round_trip(tls: bool, host: str, port: int, secret: str, identity: bytes) -> None:
    line = BridgeLine(tls, host, port, secret, identity)
    parsed = parse_bridge_line(str(line))
    assert parsed == BridgeLine(tls, parsed.host, port, secret, identity)
    assert parse_bridge_line(str(parsed)) == parsed
    assert parsed.fingerprint == fingerprint(identity)


@settings(max_examples=500)
@given(st.text(max_size=600))
def test_arbitrary_text_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_bridge_line(text)


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_mangled_lines_raise_only_value_error(junk: str) -> None:
    good = f"webtunnel wss://10.0.0.1:443/{SECRET} {IDENTITY.hex()}"
    for i in range(0, len(good), 7):
        with contextlib.suppress(ValueError):
            parse_bridge_line(good[:i] + junk + good[i:])


def test_defaults_and_forms() -> None:
    line = parse_bridge_line(f"Bridge webtunnel wss://Example.ORG/{SECRET} {IDENTITY.hex().upper()}")
    assert (line.tls, line.host, line.port, line.identity_pk) == (True, "example.org", 443, IDENTITY)
    assert parse_bridge_line(f"webtunnel ws://[::1]/{SECRET} {IDENTITY.hex()}").port == 80
    assert SECRET not in repr(line) and "webtunnel" not in repr(line)


@pytest.mark.parametrize(
    "text",
    [
        f"obfs4 wss://10.0.0.1:443/{SECRET} {IDENTITY.hex()}",
        f"webtunnel https://10.0.0.1:443/{SECRET} {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1:443/short {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1:443/{SECRET}/more {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1:0/{SECRET} {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1:70000/{SECRET} {IDENTITY.hex()}",
        f"webtunnel wss://999.1.1.1/{SECRET} {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1/{SECRET} {IDENTITY.hex()[:-2]}",
        f"webtunnel wss://10.0.0.1/{SECRET}",
        f"webtunnel wss://user@10.0.0.1/{SECRET} {IDENTITY.hex()}",
        f"webtunnel wss://10.0.0.1/{SECRET}?q=1 {IDENTITY.hex()}",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bridge_line(text)
