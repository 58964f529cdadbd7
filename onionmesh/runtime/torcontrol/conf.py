"""GETCONF / SETCONF / RESETCONF (control-spec §3.1-§3.3): the options controllers ask about.

Options the node maps onto its own settings are the target's (`get_conf`/`set_conf`); the ones
every controller reads but that have one fixed meaning here (no single-hop onion services, the
control port's own settings) are answered by `Options`.  Unknown options: `552 Unrecognized
option`, as Tor; a value the node refuses: `553`.
"""

from __future__ import annotations

from collections.abc import Callable

from onionmesh.errors import ConfError
from onionmesh.runtime.torcontrol.target import ControlTarget

# name -> fixed value(s): read-only facts about this control port and this kind of node
FIXED: dict[str, list[str]] = {
    "HiddenServiceSingleHopMode": ["0"],
    "HiddenServiceNonAnonymousMode": ["0"],
    "ControlSocket": [],
    "Log": ["notice stdout"],
    "MaxCircuitDirtiness": ["600"],
    "AvoidDiskWrites": ["0"],
    "ClientOnly": ["0"],
    "UseMicrodescriptors": ["0"],
    "DirPort": ["0"],
    "DirCache": ["0"],
    "ExtORPort": [],
    "ClientTransportPlugin": [],
    "ServerTransportPlugin": [],
    "__LeaveStreamsUnattached": ["0"],
    "__DisablePredictedCircuits": ["0"],
    "ConnLimit": ["1000"],
    "RelayBandwidthRate": ["0"],
    "BandwidthRate": ["1073741824"],
    "BandwidthBurst": ["1073741824"],
    "Address": [],
    "User": [],
    "MaxAdvertisedBandwidth": ["1073741824"],
}
# Options a controller may set that only change what the control port itself does.
SETTABLE_HERE = {"__OwningControllerProcess"}


class Options:
    def __init__(
        self,
        target: ControlTarget,
        own: Callable[[], dict[str, list[str]]],
        set_own: Callable[[str, str | None], None],
    ) -> None:
        self.target = target
        self.own = own  # ControlPort, CookieAuthentication, ... of the control server
        self.set_own = set_own

    def names(self) -> list[str]:
        return sorted({*FIXED, *self.own(), *self._target_names()})

    def _target_names(self) -> list[str]:
        names = self.target.get_conf("__names__")
        return names or []

    def canonical(self, name: str) -> str:
        for known in self.names():
            if known.lower() == name.lower():
                return known
        raise ConfError(552, f'Unrecognized configuration key "{name[:64]}"')

    def get(self, name: str) -> list[str]:
        key = self.canonical(name)
        own = self.own()
        if key in own:
            return own[key]
        if key in FIXED:
            return FIXED[key]
        return self.target.get_conf(key) or []

    def set(self, values: list[tuple[str, str | None]]) -> None:
        """All or nothing: every key must be known and settable before any is applied.  A fixed
        option may be "set" to the value it has (Tor Browser sets what it read)."""
        resolved = [(self.canonical(name), value) for name, value in values]
        theirs: dict[str, str | None] = {}
        for key, value in resolved:
            if key in SETTABLE_HERE:
                continue
            if key in FIXED or key in self.own():
                if value is not None and [value] != self.get(key):
                    raise ConfError(553, f"Unable to set option: {key} cannot be changed at run time")
                continue
            theirs[key] = value
        if theirs:
            try:
                self.target.set_conf(theirs)
            except ValueError as exc:
                raise ConfError(553, f"Unable to set option: {exc}") from None
        for key, value in resolved:
            if key in SETTABLE_HERE:
                self.set_own(key, value)
