"""Relays re-sign their descriptor daily with a 72-hour lifetime (directory-design §7.1), so a
relay adds one RENEW a day to the directory's hourly diffs instead of one an hour; the same signed
bytes still go to the DHT every 30 minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmesh.directory.descriptor import decode_and_verify
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.relay.node import RelayConfig, RelayNode, descriptor_due


def test_a_day_of_maintenance_ticks_resigns_once_and_stores_every_half_hour() -> None:
    signed = stored = 0.0
    resigns = stores = 0
    for minute in range(1, 24 * 60 + 1):  # the maintenance loop wakes every 60 s
        now = minute * 60.0
        resign, store = descriptor_due(now, signed, stored, rotated=False)
        if resign:
            resigns, signed = resigns + 1, now
        if store:
            stores, stored = stores + 1, now
    assert resigns == 1  # at 24 h: one RENEW per relay per day in the diffs, not 48
    assert stores == 48  # the DHT copy refreshed every 30 minutes, as before
    assert descriptor_due(61.0, 0.0, 0.0, rotated=True) == (True, True)  # a rotation: at once


async def test_the_descriptor_is_valid_for_72_hours_and_no_longer(tmp_path: Path) -> None:
    relay = RelayNode(RelayConfig(listen_host="127.0.0.1", listen_port=0, data_dir=tmp_path / "relay"))
    await relay.start()
    try:
        desc = relay.descriptor
        assert desc is not None
        raw = desc.encode()
        assert desc.expires - desc.published == 72 * 3600
        # §9.2: valid (signature and onion-key certificate included) until just before expiry, so
        # a daily re-signing leaves 48 h of margin; not after.
        assert decode_and_verify(raw, desc.published + 72 * 3600 - 1).published == desc.published
        with pytest.raises(OnionmeshError):
            decode_and_verify(raw, desc.published + 72 * 3600)
    finally:
        await relay.stop()
