"""The one error tree of onionmesh.

Peer input can only raise `RemoteProtocolError` (or its `Truncated` cousin, which means
"need more bytes" and is never an error by itself).  Exception text never goes on the wire.
"""


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


class DirectoryError(OnionmeshError):
    """A descriptor or directory lookup was unusable."""


class PolicyError(OnionmeshError):
    """An exit policy string does not parse."""
