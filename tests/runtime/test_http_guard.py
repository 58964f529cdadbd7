"""The Host and Origin checks of the loopback HTTP servers (onionmesh.runtime.http_guard)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.runtime.http_guard import host_is_safe, origin_is_own, split_host

LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
PORT = st.none() | st.integers(0, 65535)


def with_port(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@given(st.lists(LABEL, min_size=2, max_size=4), PORT)
def test_a_dns_name_is_never_safe(labels: list[str], port: int | None) -> None:
    """What DNS rebinding needs (a name of the attacker's) is never accepted."""
    assert not host_is_safe(with_port(".".join(labels), port))


@given(st.ip_addresses(), PORT)
def test_every_ip_literal_is_safe(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None
) -> None:
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    assert host_is_safe(with_port(host, port))
    assert origin_is_own(f"http://{with_port(host, port)}", with_port(host, port))


@given(st.text(max_size=80))
def test_any_text_is_judged_without_an_exception(text: str) -> None:
    split_host(text)
    host_is_safe(text)
    origin_is_own(text, text)


def test_the_names_that_are_allowed() -> None:
    assert host_is_safe(None)  # no Host at all: not a browser
    assert host_is_safe("localhost:9051") and host_is_safe("LOCALHOST")
    assert host_is_safe("metrics.internal:9100", ("metrics.internal",))  # the name it listens on
    for bad in (
        "localhost.evil.example",
        "127.0.0.1.nip.io:9051",
        "[::1",
        "[::1]x",
        "127.0.0.1:99999",
        "",
        "a:b",
    ):
        assert not host_is_safe(bad), bad
    assert not origin_is_own("http://127.0.0.1:8000", "127.0.0.1:9051")
    assert not origin_is_own("null", "127.0.0.1:9051")
