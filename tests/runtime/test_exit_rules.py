"""The exit's decisions under attack: DNS rebinding, IPv4-mapped and NAT64 literals, private names.

The resolver and the TCP connect are replaced by recorders, so nothing leaves the machine and the
test sees exactly which addresses the exit would have contacted.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.runtime import exit as exit_mod
from onionmesh.wire.relay_msg import BeginFlags, EndReason

PUBLIC = "93.184.216.34"  # a public address; never contacted: the connect is a recorder


@pytest.fixture
async def recorder(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"resolved": [], "connected": []}
    answers = iter([PUBLIC, "127.0.0.1", "10.0.0.1"])  # first public, then private: a rebinding name

    async def fake_getaddrinfo(host: str, port: object, **_kw: object) -> list[tuple]:
        seen["resolved"].append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 0))]

    async def fake_open_connection(host: str, port: int, **_kw: object) -> None:
        seen["connected"].append(host)
        raise ConnectionRefusedError

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(exit_mod.asyncio, "open_connection", fake_open_connection)
    return seen


DEFAULT = exit_mod.ExitRules(ExitPolicy.parse("accept *:*"), allow_private=False)


async def test_a_rebinding_name_is_resolved_once_and_only_the_checked_address_is_contacted(recorder) -> None:
    with pytest.raises(exit_mod.ExitRefused):
        await exit_mod.connect(DEFAULT, "rebind.example", 80, BeginFlags.IPV6_OK)
    assert recorder["resolved"] == ["rebind.example"]
    assert recorder["connected"] == [PUBLIC]  # never a second lookup that could answer 127.0.0.1
    # The same name now resolves private: refused by policy, nothing contacted.
    recorder["connected"].clear()
    with pytest.raises(exit_mod.ExitRefused) as refused:
        await exit_mod.connect(DEFAULT, "rebind.example", 80, BeginFlags.IPV6_OK)
    assert refused.value.reason is EndReason.EXITPOLICY
    assert recorder["connected"] == []


@pytest.mark.parametrize(
    "literal",
    ["::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::ffff:169.254.1.1", "64:ff9b::7f00:1", "::1",
     "fe80::1", "0.0.0.0", "::", "127.1.2.3", "100.64.0.1"],
)  # fmt: skip
async def test_private_literals_in_every_spelling_are_refused(recorder, literal: str) -> None:
    with pytest.raises(exit_mod.ExitRefused) as refused:
        await exit_mod.connect(DEFAULT, literal, 80, BeginFlags.IPV6_OK)
    assert refused.value.reason is EndReason.EXITPOLICY
    assert recorder["connected"] == [] and recorder["resolved"] == []


async def test_localhost_names_are_answered_without_dns_and_refused(recorder) -> None:
    for name in ("localhost", "LOCALHOST.", "anything.localhost"):
        with pytest.raises(exit_mod.ExitRefused) as refused:
            await exit_mod.connect(DEFAULT, name, 80, BeginFlags.IPV6_OK)
        assert refused.value.reason is EndReason.EXITPOLICY
    assert recorder["resolved"] == [] and recorder["connected"] == []


async def test_a_loopback_only_exit_never_asks_a_resolver(recorder) -> None:
    testnet = exit_mod.ExitRules(ExitPolicy.parse("accept 127.0.0.0/8:*; accept [::1]:*; reject *:*"), True)
    with pytest.raises(exit_mod.ExitRefused) as refused:
        await exit_mod.connect(testnet, "www.example.com", 80, BeginFlags.IPV6_OK)
    assert refused.value.reason is EndReason.RESOLVEFAILED
    assert recorder["resolved"] == []
