"""Loading the client's GeoIP database and setting its node restrictions, at start and at run time.

The database: Tor-format files given by --geoip-file / --geoip6-file replace, family by family,
the packaged one (`iptocc`: the five regional registries' delegation files, embedded in the
wheel, no file or network I/O at lookup).  Without `iptocc` installed, countries are "??".

`set_restrictions` is THE function a controller calls (the Tor control port's SETCONF ExitNodes,
ExcludeNodes, ExcludeExitNodes, StrictNodes): it replaces the restrictions the path policy reads
and retires every circuit that no longer satisfies them, so that no new stream uses such a
circuit (streams already on it finish; Tor marks dirty circuits unusable the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.geoip import GeoIP, GeoIPTable
from onionmesh.directory.node_restrictions import NodeRestrictions
from onionmesh.runtime.client.circuit_handle import MAX_DIRTINESS, CircuitHandle
from onionmesh.runtime.client.path_policy import PathPolicy
from onionmesh.runtime.safelog import get_logger

log = get_logger("onionmesh.geoip")

MAX_GEOIP_FILE = 64 * 1024 * 1024  # Tor's geoip is ~6 MiB, geoip6 ~8 MiB


def packaged_lookup() -> Callable[[str], str | None] | None:
    """iptocc.country_code, or None when the package is not installed."""
    try:
        from iptocc import country_code
    except ImportError:
        return None
    return country_code  # type: ignore[no-any-return]


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_GEOIP_FILE + 1)
    if len(data) > MAX_GEOIP_FILE:
        raise ValueError(f"{path}: larger than {MAX_GEOIP_FILE} bytes")
    return data.decode("ascii", errors="replace")


def load_geoip(geoip_file: str | Path | None = None, geoip6_file: str | Path | None = None) -> GeoIP:
    """The database the client judges relays with; GeoIPError/OSError/ValueError for a bad file."""
    v4 = GeoIPTable.parse_v4(_read(Path(geoip_file))) if geoip_file else None
    v6 = GeoIPTable.parse_v6(_read(Path(geoip6_file))) if geoip6_file else None
    fallback = packaged_lookup()
    parts = []
    if v4 is not None:
        parts.append(f"IPv4 from {Path(geoip_file).name} ({len(v4)} ranges)")  # type: ignore[arg-type]
    if v6 is not None:
        parts.append(f"IPv6 from {Path(geoip6_file).name} ({len(v6)} ranges)")  # type: ignore[arg-type]
    if (v4 is None or v6 is None) and fallback is not None:
        parts.append(("otherwise " if parts else "") + "iptocc (regional registries' delegations)")
    source = "; ".join(parts) or "none (iptocc not installed: every country is ??)"
    return GeoIP(v4, v6, fallback, source)


class _Circuits(Protocol):
    circuits: dict[int, CircuitHandle]


def violates(handle: CircuitHandle, policy: PathPolicy) -> bool:
    """Does this circuit's path break the restrictions as they are now (with its stream's own)?"""
    try:
        rules = policy.restrictions_for(handle.isolation)
    except ValueError:
        return True
    if not rules:
        return False
    allowed = rules.resolve(handle.path, policy.geoip.country)
    if any(d.fingerprint.upper() in allowed.excluded for d in handle.path):
        return True
    return allowed.exits is not None and handle.exit.fingerprint.upper() not in allowed.exits


def set_restrictions(policy: PathPolicy, circuits: _Circuits, restrictions: NodeRestrictions) -> int:
    """Apply new restrictions at run time; returns how many open circuits were retired."""
    policy.restrictions = restrictions
    retired = 0
    for handle in list(circuits.circuits.values()):
        if violates(handle, policy):
            handle.dirty_since = -MAX_DIRTINESS * 2  # takes no new stream; closes when its streams end
            retired += 1
    log.info("node restrictions set", restrictions=restrictions.describe(), circuits_retired=retired)
    return retired


def hop_countries(path: list[RelayDescriptor], policy: PathPolicy) -> list[str]:
    return [policy.country(d) for d in path]


__all__ = ["hop_countries", "load_geoip", "packaged_lookup", "set_restrictions", "violates"]
