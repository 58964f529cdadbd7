"""What the control API shows of a circuit, a stream and a relay: the JSON objects of its answers
and events (docs/control-api.md), kept apart from the server that authenticates and routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from onionmesh.directory.countries import country_name
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.runtime.client.circuit_manager import CircuitHandle


def _no_country(_desc: RelayDescriptor) -> str:
    return "??"


def circuit_json(
    handle: CircuitHandle, country: Callable[[RelayDescriptor], str] = _no_country
) -> dict[str, Any]:
    """A circuit for the API; `country` is the client's GeoIP judgement of a relay (PathPolicy.country)."""
    now = time.monotonic()
    username = handle.isolation[0] if isinstance(handle.isolation, tuple) and handle.isolation else None
    return {
        "id": handle.number,
        "state": "closed" if handle.closed_reason else handle.circ.state.value,
        "hops": [
            {
                "fingerprint": d.fingerprint,
                "nickname": d.nickname,
                "address": f"{d.link_addresses[0][0]}:{d.link_addresses[0][1]}",
                "country": country(d),  # from OUR GeoIP database, never from the relay
                "country_name": country_name(country(d)),
                # The EXTEND round trip to this hop: the client's measured RTT to it.
                "rtt_ms": round(handle.hop_times[i] * 1000, 2) if i < len(handle.hop_times) else None,
                # the relay-crypto layer suite the circuit handshake chose for this hop
                "layer": handle.circ.hops[i].forward.suite.name if i < len(handle.circ.hops) else None,
                # whether the relay publishes an exit policy (`--exit` may name one that does not)
                "exit": d.is_exit,
            }
            for i, d in enumerate(handle.path)
        ],
        "age_s": round(now - handle.created_at, 1),
        "dirty": handle.dirty_since is not None,
        "isolation": username.decode("utf-8", "replace") if isinstance(username, bytes) else username,
        "streams": len(handle.circ.streams),
        "bytes_in": handle.circ.bytes_in,
        "bytes_out": handle.circ.bytes_out,
        "closed_reason": handle.closed_reason,
        # what it is for: "general" (SOCKS streams), or an onion service's "hs_client_intro",
        # "hs_client_rend", "hs_service_intro", "hs_service_rend", ... with the service it is for
        "purpose": getattr(handle, "purpose", "general"),
        "hs_service_id": getattr(handle, "hs_service_id", None),
    }


def stream_json(handle: CircuitHandle, stream_id: int) -> dict[str, Any]:
    stream = handle.circ.streams.get(stream_id)
    return {
        "circuit": handle.number,
        "stream": stream_id,
        "state": stream.state.value if stream else "closed",
        "bytes_in": stream.bytes_in if stream else 0,
        "bytes_out": stream.bytes_out if stream else 0,
        "exit": handle.exit.nickname,
    }


def relay_json(
    desc: RelayDescriptor,
    guards: list[str],
    now: float,
    country: Callable[[RelayDescriptor], str] = _no_country,
) -> dict[str, Any]:
    return {
        "fingerprint": desc.fingerprint,
        "nickname": desc.nickname,
        "address": f"{desc.link_addresses[0][0]}:{desc.link_addresses[0][1]}",
        "country": country(desc),
        "country_name": country_name(country(desc)),
        "exit": desc.is_exit,
        "web_exit": exit_accepts_port(desc, 443) or exit_accepts_port(desc, 80),
        "guard": desc.fingerprint in guards,
        "bandwidth": desc.bandwidth,
        "published_age_s": round(now - desc.published),
    }
