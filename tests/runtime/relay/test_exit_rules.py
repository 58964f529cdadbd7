"""The exit's decisions under attack: DNS rebinding, IPv4-mapped and NAT64 literals, private names.

The resolver and the TCP connect are replaced by recorders, so nothing leaves the machine and the
test sees exactly which addresses the exit would have contacted.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.runtime.relay import exit_rules as exit_mod
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


# --------------------------------------------------------------------------- over real sockets
# A real relay and client on loopback (tests/helpers/mesh.py), one-hop circuits to the exit.
# The exit's connect and resolver are wrapped, not replaced: loopback destinations go through,
# anything else is recorded and refused before a packet leaves, and names never reach a resolver.

from onionmesh.runtime.client.circuit_handle import StreamFailed  # noqa: E402
from onionmesh.wire.relay_msg import ResolvedType  # noqa: E402
from tests.helpers.mesh import start_mesh, stop_mesh  # noqa: E402


@pytest.fixture
async def guarded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Count every connect and lookup the process attempts; only loopback connects happen."""
    import ipaddress

    from onionmesh.directory.exit_policy import is_loopback_address

    seen: dict[str, list[str]] = {"connects": [], "refused_connects": [], "lookups": []}
    real_open = asyncio.open_connection

    async def open_connection(host: str, port: int, **kw: object):  # type: ignore[no-untyped-def]
        seen["connects"].append(host)
        if not is_loopback_address(host) or ipaddress.ip_address(host).version != 4:
            seen["refused_connects"].append(host)
            raise ConnectionRefusedError  # never leaves the machine
        return await real_open(host, port, **kw)

    async def getaddrinfo(host: str, *_a: object, **_kw: object) -> list[tuple]:
        seen["lookups"].append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no resolver in this test")

    monkeypatch.setattr(exit_mod.asyncio, "open_connection", open_connection)
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return seen


async def _one_hop(tmp_path, **kw):  # type: ignore[no-untyped-def]
    mesh, extras = await start_mesh(tmp_path, relays=1, exits=1, hops=1, **kw)
    handle = await mesh.client.circuits.build(hops=1)
    return mesh, extras, handle


async def _begin(mesh, handle, host: str, port: int) -> EndReason | None:  # type: ignore[no-untyped-def]
    try:
        sid = await mesh.client.circuits.streams.open_stream(handle, host, port, 30)
    except StreamFailed as failed:
        return failed.reason
    handle.circ.end_stream(sid, EndReason.DONE)
    return None


async def test_a_testnet_exit_refuses_its_own_address_on_every_port(tmp_path, guarded) -> None:
    """Issue 15 item 4: an exit connected to its own address (its web server and its link port)."""
    mesh, extras, handle = await _one_hop(tmp_path)
    exit_relay = mesh.relays[0]
    own = exit_relay.config.listen_host  # 127.1.0.1: a loopback address this testnet exit may reach
    web = await asyncio.start_server(lambda r, w: w.close(), own, 0)  # "its web server"
    web_port = web.sockets[0].getsockname()[1]
    links_opened = len(guarded["connects"])  # the client's link to the relay: connects before this
    try:
        assert await _begin(mesh, handle, "127.0.0.1", mesh.origin.port) is None  # others: reachable
        for host, port in ((own, web_port), (own, exit_relay.config.listen_port),
                           (f"::ffff:{own}", web_port), (own, exit_relay.dht.address[1])):  # fmt: skip
            assert await _begin(mesh, handle, host, port) is EndReason.EXITPOLICY, (host, port)
        assert guarded["connects"][links_opened:] == ["127.0.0.1"]  # refused before any connect
    finally:
        web.close()
        await stop_mesh(mesh, extras)


async def test_a_non_testnet_exit_drops_private_answers(tmp_path, guarded) -> None:
    """Item 4 at an exit without --allow-private-destinations: RESOLVE answers no private address
    (localhost, a hosts-file name), so a client cannot enumerate the exit's internal names."""
    overrides = {"intranet.example": ["127.0.0.1"], "mixed.example": ["10.1.2.3", "93.184.216.34"]}
    mesh, extras, handle = await _one_hop(
        tmp_path, exit_policy="accept *:*", allow_private=False, resolve_overrides=overrides
    )
    mgr = mesh.client.circuits
    try:
        for name in ("localhost", "intranet.example"):
            answered = await mgr.streams.resolve(handle, name, 30)
            assert [t for t, _, _ in answered.answers] == [ResolvedType.ERROR_NONTRANSIENT], name
        mixed = await mgr.streams.resolve(handle, "mixed.example", 30)
        assert [(t, a) for t, a, _ in mixed.answers] == [(ResolvedType.IPV4, "93.184.216.34")]
        assert guarded["refused_connects"] == [] and guarded["lookups"] == []
    finally:
        await stop_mesh(mesh, extras)


async def test_a_non_testnet_exit_refuses_private_addresses_in_disguise(tmp_path, guarded) -> None:
    """Item 5: 6to4, Teredo and NAT64 forms of private addresses are refused before any connect
    (2002:7f00:1::1 went to the exit's default IPv6 route)."""
    mesh, extras, handle = await _one_hop(tmp_path, exit_policy="accept *:*", allow_private=False)
    try:
        disguised = ["2002:7f00:1::1", "2002:a01:203::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
                     "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "::ffff:127.0.0.1", "192.88.99.1"]  # fmt: skip
        for literal in disguised:
            assert await _begin(mesh, handle, literal, 80) is EndReason.EXITPOLICY, literal
        assert guarded["refused_connects"] == [] and guarded["lookups"] == []
    finally:
        await stop_mesh(mesh, extras)
