"""Onion-key rotation with a grace period, key files' modes, and link keep-alive/idle handling."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from onionmesh.rng import SystemRng
from onionmesh.runtime.keystore import KeyStore
from onionmesh.runtime.transport import link as link_mod
from onionmesh.runtime.transport.link_setup import open_link
from tests.helpers.mesh import Mesh


def test_key_files_are_private_and_survive_restart(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "d", SystemRng())
    again = KeyStore(tmp_path / "d", SystemRng())
    assert again.identity.public == store.identity.public
    assert again.current.key.public == store.current.key.public
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "d" / "keys").stat().st_mode & 0o777 == 0o700
    for name in os.listdir(tmp_path / "d" / "keys"):
        assert (tmp_path / "d" / "keys" / name).stat().st_mode & 0o777 == 0o600


def test_onion_key_rotates_and_the_old_one_is_accepted_for_the_grace_period(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, SystemRng(), rotation=100, grace=50)
    first = store.current.key.public
    t0 = store.current.since
    assert not store.maybe_rotate(t0 + 99)
    assert store.maybe_rotate(t0 + 120)  # rotation is late (the relay was asleep): grace counts from now
    assert store.current.key.public != first
    store.onion_cert().verify(store.identity.public, t0 + 121)
    assert not store.maybe_rotate(t0 + 170)
    assert store.onion_secret_for(first) is not None  # still accepted: clients may hold the old descriptor
    reloaded = KeyStore(tmp_path, SystemRng(), rotation=100, grace=50)  # and across a restart
    assert reloaded.onion_secret_for(first) is not None
    assert not store.maybe_rotate(t0 + 171)
    assert store.onion_secret_for(first) is None  # past the grace period: forgotten, file removed
    assert not (tmp_path / "keys" / "onion_x25519.old").exists()


async def test_circuit_through_a_relay_whose_key_rotated_since_the_descriptor(mesh: Mesh) -> None:
    relay = mesh.relays[4]  # not an exit: the path's exit is chosen among the others
    old_descriptor_onion = relay.descriptor.onion_pk  # type: ignore[union-attr]
    relay.keys.rotation = 0  # force a rotation now; the client still has the old descriptor
    assert relay.keys.maybe_rotate(relay.keys.current.since + 1)
    assert relay.keys.current.key.public != old_descriptor_onion
    handle = await mesh.client.circuits.build(via=[relay.fingerprint], hops=3)
    assert len(handle.circ.hops) == 3
    relay.keys.previous = None  # past the grace period: the old key no longer works
    mesh.client.circuits.close_all()
    try:
        await mesh.client.circuits.build(via=[relay.fingerprint], hops=3)
    except (OSError, TimeoutError):
        pass
    else:
        raise AssertionError("a circuit was built with a forgotten onion key")


class _Owner:
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def cell_received(self, link, cell) -> None:
        pass

    def link_closed(self, link) -> None:
        self.closed.set()


async def test_idle_links_send_keepalives_and_silent_peers_are_dropped(mesh: Mesh, monkeypatch) -> None:
    monkeypatch.setattr(link_mod, "KEEPALIVE_INTERVAL", 0.3)
    monkeypatch.setattr(link_mod, "IDLE_TIMEOUT", 1.0)
    relay = mesh.relays[1]
    owner = _Owner()
    host, port = relay.config.listen_host, relay.config.listen_port
    link = await open_link(host, port, relay.keys.identity.public, owner, SystemRng())
    # Both ends send PADDING when quiet, so a healthy idle link stays up well past IDLE_TIMEOUT.
    await asyncio.sleep(2.5)
    assert not link.closed
    assert link.proto.bytes_received > 148  # keep-alive records arrived after the handshake
    # A peer that goes silent (we stop reading and writing) is dropped by the relay.
    ours = link.writer.get_extra_info("sockname")
    theirs = [lk for lk in relay.links if lk.writer.get_extra_info("peername") == ours]
    assert len(theirs) == 1 and not theirs[0].closed
    link._tasks[1].cancel()  # our keep-alive loop
    link._tasks[0].cancel()  # our reader
    await asyncio.sleep(2.5)
    assert theirs[0].closed
    assert theirs[0] not in relay.links
    link.close()


def test_refuses_to_start_with_loose_modes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from onionmesh.runtime.keystore import InsecurePermissions

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(InsecurePermissions, match="chmod 700"):
        KeyStore(loose, SystemRng())
    good = tmp_path / "good"
    store = KeyStore(good, SystemRng())
    (good / "keys" / "identity_ed25519").chmod(0o644)
    with pytest.raises(InsecurePermissions, match="chmod 600"):
        KeyStore(good, SystemRng())
    assert store.identity.public  # (the first start was fine)
    result = subprocess.run(
        [sys.executable, "-m", "onionmesh", "relay", "--listen", "127.0.0.1:0", "--data-dir", str(loose)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (
        result.returncode == 2 and "refusing to start" in result.stderr and "Traceback" not in result.stderr
    )
