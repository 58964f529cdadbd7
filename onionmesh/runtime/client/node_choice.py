"""Loading the client's GeoIP database and setting its node restrictions, at start and at run time.

The database: Tor-format files given by --geoip-file / --geoip6-file replace, family by family,
the packaged one (`iptocc`: the five regional registries' delegation files, embedded in the
wheel, no file or network I/O at lookup).  Without `iptocc` installed, countries are "??".

`set_restrictions` is THE function a controller calls (the Tor control port's SETCONF ExitNodes,
ExcludeNodes, ExcludeExitNodes, StrictNodes, GeoIPFile, GeoIPv6File through `prepare_conf`): it
replaces the restrictions the path policy reads and retires every circuit that no longer
satisfies them, so that no new stream uses such a circuit (streams already on it finish; Tor
marks dirty circuits unusable the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.geoip import GeoIP, GeoIPTable
from onionmesh.directory.node_restrictions import NodeRestrictions, RouterSet
from onionmesh.errors import ConfError, GeoIPError
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
    return GeoIP(v4, v6, fallback, source, (str(geoip_file or ""), str(geoip6_file or "")))


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


# --- Tor's options (GETCONF / SETCONF / RESETCONF on the control port) ---------------------------
LISTS = {"ExitNodes": "exit_nodes", "ExcludeNodes": "exclude_nodes", "ExcludeExitNodes": "exclude_exit_nodes"}
CONF_OPTIONS = (*LISTS, "StrictNodes", "GeoIPFile", "GeoIPv6File")


def conf_values(policy: PathPolicy) -> dict[str, list[str]]:
    """The options as GETCONF shows them: a node list in canonical form (empty when unset)."""
    rules, geoip = policy.restrictions, policy.geoip
    out = {name: [str(rs)] if (rs := getattr(rules, attr)) else [] for name, attr in LISTS.items()}
    out["StrictNodes"] = ["1" if rules.strict_nodes else "0"]
    out["GeoIPFile"] = [geoip.files[0]] if geoip.files[0] else []
    out["GeoIPv6File"] = [geoip.files[1]] if geoip.files[1] else []
    return out


def settings_values(policy: PathPolicy) -> dict[str, object | None]:
    """The same options as the settings' TOML keys (app/settings_schema.py) and values, for SAVECONF."""
    rules, geoip = policy.restrictions, policy.geoip
    out: dict[str, object | None] = {
        attr: str(rs) if (rs := getattr(rules, attr)) else "" for attr in LISTS.values()
    }
    out["strict_nodes"] = bool(rules.strict_nodes)
    out["geoip_file"] = geoip.files[0] or None
    out["geoip6_file"] = geoip.files[1] or None
    return out


def prepare_conf(
    policy: PathPolicy, circuits: _Circuits, values: dict[str, str | None]
) -> Callable[[], None]:
    """Check and load every node-choice option in `values` (None or "": the default) BEFORE any
    is applied, so that SETCONF is all or nothing; returns what applies them.

    As Tor answers: a value that does not parse (a node list, StrictNodes other than 0/1) is
    `513 Unacceptable option value`; a GeoIP file that cannot be read or parsed is `553 Unable to
    set option` (Tor keeps running without the file and only logs; a client choosing exits by
    country must not silently judge with a database it was not given)."""
    mine = {k: (v or "") for k, v in values.items() if k in CONF_OPTIONS}
    if not mine:
        return lambda: None
    rules = policy.restrictions
    changes: dict[str, object] = {}
    for name, attr in LISTS.items():
        if name in mine:
            try:
                changes[attr] = RouterSet.parse(mine[name])
            except ValueError as exc:
                raise ConfError(513, f"Unacceptable option value: {name}: {exc}") from None
    if "StrictNodes" in mine:
        if mine["StrictNodes"] not in ("", "0", "1"):
            raise ConfError(
                513,
                f"Unacceptable option value: StrictNodes must be 0 or 1, not {mine['StrictNodes'][:16]!r}",
            )
        changes["strict_nodes"] = mine["StrictNodes"] == "1"
    new_rules = replace(rules, **changes)  # type: ignore[arg-type]
    geoip = policy.geoip
    if "GeoIPFile" in mine or "GeoIPv6File" in mine:
        files = (mine.get("GeoIPFile", geoip.files[0]), mine.get("GeoIPv6File", geoip.files[1]))
        try:
            geoip = load_geoip(files[0] or None, files[1] or None)
        except (GeoIPError, OSError, ValueError) as exc:
            raise ConfError(553, f"Unable to set option: GeoIP file: {exc}") from None

    def apply() -> None:
        policy.geoip = geoip
        set_restrictions(policy, circuits, new_rules)  # countries may have moved with the database

    return apply


def hop_countries(path: list[RelayDescriptor], policy: PathPolicy) -> list[str]:
    return [policy.country(d) for d in path]


__all__ = [
    "CONF_OPTIONS",
    "conf_values",
    "hop_countries",
    "load_geoip",
    "packaged_lookup",
    "prepare_conf",
    "set_restrictions",
    "violates",
]
