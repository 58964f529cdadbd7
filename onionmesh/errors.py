"""The one error tree of onionmesh.

Peer input can only raise `RemoteProtocolError` (or its `Truncated` cousin, which means
"need more bytes" and is never an error by itself).  Exception text never goes on the wire.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class OnionmeshError(Exception):
    """Base of every error onionmesh raises on purpose."""


class Truncated(OnionmeshError):
    """The input ended before a complete structure: feed more bytes and retry."""


class ProtocolError(OnionmeshError):
    """A protocol rule was broken."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or forbidden."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (a bug on our side)."""


class CryptoError(RemoteProtocolError):
    """A signature, MAC or key agreement did not verify."""


class SocksRefused(RemoteProtocolError):
    """A SOCKS client's handshake is refused (proto.socks_wire); `reply` is what to send before closing."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class DirectoryError(OnionmeshError):
    """A descriptor or directory lookup was unusable."""


class BadOnionAddress(OnionmeshError, ValueError):
    """A `.onion` name that is not a valid v3 address: refused locally (SOCKS 0xF6)."""


class DescriptorDecryptError(OnionmeshError):
    """A client could not open an onion-service descriptor; `auth` says why, for the SOCKS
    replies: "missing" (restricted, no client key: 0xF4), "wrong" (key not accepted: 0xF5)."""

    def __init__(self, message: str, auth: str = "") -> None:
        super().__init__(message)
        self.auth = auth


class PolicyError(OnionmeshError):
    """An exit policy string does not parse."""


class StreamFailed(OnionmeshError):
    """A stream the client asked for ended before it was usable; `reason` is the END reason
    (a `wire.relay_msg.EndReason`, typed loosely here because errors sit below wire)."""

    def __init__(self, reason: IntEnum) -> None:
        super().__init__(reason.name)
        self.reason = reason


class ExitRefused(OnionmeshError):
    """The exit will not connect or resolve; `reason` is the END reason it answers with."""

    def __init__(self, reason: IntEnum) -> None:
        super().__init__(reason.name)
        self.reason = reason


class InsecurePermissions(OnionmeshError, OSError):
    """A data directory or key file that others may read: refuse to run, as Tor does."""


class OnionConfigError(OnionmeshError, ValueError):
    """A persistent onion service's settings or files (port mapping, key file, .auth_private) are unusable."""


class ConfigError(OnionmeshError, ValueError):
    """The settings are unusable; ``problems`` lists every problem found, not just the first
    (one problem may be given as a plain string)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def one_line(self) -> str:
        """The problems on one bounded line (a reply's framing allows no CR or LF)."""
        return " ".join("; ".join(self.problems).split())[:200]


class ListenError(OnionmeshError, OSError):
    """A listener could not be opened: the message is the whole story, for one line on stderr."""

    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        if cause.errno == errno.EADDRINUSE:
            reason = "address already in use (another program, or another onionmesh, has it)"
        shown = f"[{host}]" if ":" in host else host
        super().__init__(cause.errno, f"cannot listen on {shown}:{port} ({what}): {reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class PublicListenerRefused(OnionmeshError, ValueError):
    """SOCKS or control on a non-loopback address without the explicit override."""


# --- Tor's control port: each carries the status code its reply gets ---------------------------
class ControlSyntaxError(RemoteProtocolError):
    """The peer's bytes are not control-protocol lines (too long, binary): answer, then close."""


class ControlReplyError(OnionmeshError):
    """A control-port command refused with one of Tor's status codes (512, 551, 552, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class OnionArgError(ControlReplyError, ValueError):
    """ADD_ONION / DEL_ONION / ONION_CLIENT_AUTH_* arguments refused, with Tor's status code."""


class ConfError(ControlReplyError):
    """GETCONF / SETCONF / RESETCONF refused, with Tor's status code."""


class InfoError(ControlReplyError):
    """GETINFO refused, with Tor's status code."""


class Unsupported(OnionmeshError):
    """The node cannot do this (yet): the control port answers 551 (or 555) with the message."""


class NotFound(OnionmeshError):
    """No such circuit, stream or service: 552."""


class NoHsPath(OnionmeshError):
    """No onion-service path satisfies the rules with the relays known."""


class DirectFetchRefused(OnionmeshError):
    """An HS descriptor fetch from the client's own address: the issue forbids it."""


class GeoIPError(OnionmeshError):
    """A GeoIP file line that does not parse, or ranges that overlap."""


class RestrictionError(OnionmeshError, ValueError):
    """A node list that does not parse."""


class RestrictedExitError(DirectoryError):
    """No exit allowed by the node restrictions (ExitNodes, ExcludeExitNodes, ExcludeNodes)
    accepts the port, though unrestricted exits exist: the SOCKS client is refused, not rerouted."""


class HsCircuitClosed(OnionmeshError):
    """An onion-service circuit closed (or sent the wrong message) while a step waited on it."""


class OnionConnectFailed(OnionmeshError):
    """Reaching an onion service failed; `code` is Tor's extended SOCKS reply (0xF0-0xF7)."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail or f"onion service unreachable (SOCKS 0x{code:02X})")
        self.code = code


class ListenerClash(OnionmeshError, ValueError):
    """Two of a node's own listeners were given the same address."""


class ConfigSaveError(OnionmeshError, ValueError):
    """SAVECONF could not write the settings back to the config file (the file is unchanged)."""


class ApplicationGone(OnionmeshError):
    """The application's socket failed while its stream was connecting (after an early SOCKS reply)."""
