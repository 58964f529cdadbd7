"""Crypto suites over real sockets: circuits run AES-GCM layers and links AEGIS-256 records with
relays that have hardware AES, and fall back to XChaCha20 layers and ChaCha20-Poly1305 records
with relays that do not; the bytes arrive intact either way.

The relays are separate processes; `ONIONMESH_DISABLE_AES=1` in their environment makes them
behave as machines without AES instructions (their descriptors then offer only circ=3).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onionmesh.crypto.onion_layer import LayerSuite
from onionmesh.crypto.sodium import HARDWARE_AES
from onionmesh.proto.link import SUITE_AEGIS256, SUITE_CHACHA20_POLY1305
from tests.helpers.mesh import start_origin
from tests.helpers.testnet import socks_get, start_testnet

SIZE = 3 * 1024 * 1024


def fetch(socks_port: int, port: int) -> bytes:
    s = socks_get(socks_port, port, f"/blob/{SIZE}", "suites")
    data = bytearray()
    while chunk := s.recv(1 << 16):
        data += chunk
    s.close()
    return bytes(data.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("relays_have_aes", [True, False], ids=["aes-relays", "no-aes-relays"])
async def test_each_hop_and_link_run_the_best_suite_both_ends_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relays_have_aes: bool
) -> None:
    if relays_have_aes and not HARDWARE_AES:
        pytest.skip("this machine has no hardware AES")
    if not relays_have_aes:
        monkeypatch.setenv("ONIONMESH_DISABLE_AES", "1")  # inherited by the relay processes only
    origin, runner = await start_origin()
    net = await start_testnet(tmp_path)
    assert net.client is not None
    try:
        body = await asyncio.to_thread(fetch, net.client.socks.port, origin.port)  # type: ignore[union-attr]
        assert body == origin.blob(SIZE)
        hops = [hop for h in net.client.circuits.circuits.values() for hop in h.circ.hops]
        assert hops
        expected = LayerSuite.AES_GCM if relays_have_aes else LayerSuite.XCHACHA
        assert {hop.forward.suite for hop in hops} | {hop.backward.suite for hop in hops} == {expected}
        links = list(net.client.circuits.links.links)
        assert links and {link.suite for link in links} == {
            SUITE_AEGIS256 if relays_have_aes else SUITE_CHACHA20_POLY1305
        }
    finally:
        await net.stop()
        await runner.cleanup()
