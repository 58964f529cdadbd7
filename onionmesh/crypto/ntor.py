"""The circuit handshake: an ntor-shaped one-way authenticated key exchange over X25519 and BLAKE2b.

Theory of operation (Goldberg-Stebila-Ustaoglu's ntor, as Tor's tor-spec §5.1.4, with BLAKE2b
for SHA-256/HMAC): the client knows the relay's identity ID and certified onion key B, sends an
ephemeral X; the relay answers with an ephemeral Y and AUTH, a MAC that only a holder of b can
compute.  The client learns that the keys are shared with the holder of b and nobody else; the
relay learns nothing about the client.  Forward secrecy comes from x and y (and from the onion
key's rotation for b).  Exact byte layout: docs/protocol.md, "Circuit handshake".

Not in this module: which onion keys a relay accepts (its key store), cells.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import kdf
from onionmesh.crypto.onion_layer import LOCAL_SUITES, LayerSuite
from onionmesh.crypto.x25519 import x25519
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import Rng

PROTOID = b"onionmesh-ntor-x25519-blake2b-1"
T_KEY = PROTOID + b":key_extract"
T_VERIFY = PROTOID + b":verify"
T_MAC = PROTOID + b":mac"
M_EXPAND = PROTOID + b":key_expand"

# The handshake type names the relay-crypto layer its keys feed (docs/protocol.md §6): 0x0003
# the XCHACHA suite, 0x0004 the AES_GCM suite, both with 12-byte tags.  0x0001 (BEAR) and 0x0002
# (16-byte tags) were earlier layers and are refused, so old and new nodes fail cleanly.
HANDSHAKE_TYPE_XCHACHA = 0x0003
HANDSHAKE_TYPE_AES_GCM = 0x0004
SUITE_OF_TYPE = {HANDSHAKE_TYPE_XCHACHA: LayerSuite.XCHACHA, HANDSHAKE_TYPE_AES_GCM: LayerSuite.AES_GCM}
TYPE_OF_SUITE = {suite: htype for htype, suite in SUITE_OF_TYPE.items()}
LOCAL_TYPES = tuple(TYPE_OF_SUITE[s] for s in LOCAL_SUITES)  # best first
CLIENT_HANDSHAKE_LEN = 96  # ID(32) | B(32) | X(32)
SERVER_HANDSHAKE_LEN = 64  # Y(32) | AUTH(32)
HOP_KEY_MATERIAL_LEN = 128  # forward (Ks 32, Kf 32), backward (Ks 32, Kf 32)


def best_type(offered: frozenset[int] | set[int]) -> int:
    """The best handshake type both this machine and a relay offering `offered` can run."""
    return next((t for t in LOCAL_TYPES if t in offered), HANDSHAKE_TYPE_XCHACHA)


@dataclass(frozen=True)
class HopKeys:
    """The symmetric keys one circuit hop shares with the client, and the layer suite they feed."""

    forward_stream: bytes
    forward_mac: bytes
    backward_stream: bytes
    backward_mac: bytes
    suite: LayerSuite = LayerSuite.XCHACHA

    @classmethod
    def from_material(cls, material: bytes, suite: LayerSuite = LayerSuite.XCHACHA) -> HopKeys:
        if len(material) != HOP_KEY_MATERIAL_LEN:
            raise ValueError("need 128 bytes of key material")
        return cls(material[0:32], material[32:64], material[64:96], material[96:128], suite)


def _derive(
    secret_input: bytes, ident: bytes, onion_pk: bytes, x_pub: bytes, y_pub: bytes, handshake_type: int
) -> tuple[bytes, bytes]:
    """(key_seed, AUTH).  AUTH covers the handshake type, so a type changed on the way (a
    downgrade to another layer suite) fails the handshake at the client instead of the first cell."""
    key_seed = kdf.mac(T_KEY, secret_input, 64)
    verify = kdf.mac(T_VERIFY, secret_input, 32)
    auth_input = (
        verify + ident + onion_pk + y_pub + x_pub + PROTOID + b"Server" + handshake_type.to_bytes(2, "big")
    )
    auth = kdf.mac(T_MAC, auth_input, 32)
    return key_seed, auth


def _hop_keys(key_seed: bytes, handshake_type: int) -> HopKeys:
    """Keys for the layer suite `handshake_type` names; the type is in the expansion's info, so
    the two suites never share key material."""
    material = kdf.expand(key_seed, M_EXPAND + handshake_type.to_bytes(2, "big"), HOP_KEY_MATERIAL_LEN)
    return HopKeys.from_material(material, SUITE_OF_TYPE[handshake_type])


@dataclass(frozen=True)
class ClientHandshakeState:
    """What the client keeps between sending CREATE/EXTEND and reading CREATED/EXTENDED."""

    identity_pk: bytes
    onion_pk: bytes
    x_secret: bytes
    x_public: bytes
    handshake_type: int


def client_start(
    identity_pk: bytes, onion_pk: bytes, rng: Rng, handshake_type: int = LOCAL_TYPES[0]
) -> tuple[ClientHandshakeState, bytes]:
    """Begin a handshake of `handshake_type` (see `best_type`) with the relay named by identity_pk;
    returns the state and the 96-byte onionskin."""
    if len(identity_pk) != 32 or len(onion_pk) != 32:
        raise ValueError("identity and onion keys are 32 bytes")
    if handshake_type not in LOCAL_TYPES:
        raise ValueError("this machine cannot run that handshake type's layer")
    x = rng.random_bytes(32)
    x_pub = crypto_scalarmult_base(x)
    state = ClientHandshakeState(identity_pk, onion_pk, x, x_pub, handshake_type)
    return state, identity_pk + onion_pk + x_pub


def client_finish(state: ClientHandshakeState, reply: bytes) -> HopKeys:
    """Check the relay's reply; raise CryptoError if AUTH does not prove knowledge of b."""
    if len(reply) != SERVER_HANDSHAKE_LEN:
        raise RemoteProtocolError("handshake reply has the wrong length")
    y_pub, auth = reply[:32], reply[32:]
    secret_input = (
        x25519(state.x_secret, y_pub, "ntor")
        + x25519(state.x_secret, state.onion_pk, "ntor")
        + state.identity_pk
        + state.onion_pk
        + state.x_public
        + y_pub
        + PROTOID
    )
    key_seed, expected = _derive(
        secret_input, state.identity_pk, state.onion_pk, state.x_public, y_pub, state.handshake_type
    )
    if not hmac.compare_digest(expected, auth):
        raise CryptoError("relay failed to authenticate in the circuit handshake")
    return _hop_keys(key_seed, state.handshake_type)


@dataclass(frozen=True)
class ParsedOnionskin:
    identity_pk: bytes
    onion_pk: bytes
    x_public: bytes


def parse_onionskin(onionskin: bytes) -> ParsedOnionskin:
    if len(onionskin) != CLIENT_HANDSHAKE_LEN:
        raise RemoteProtocolError("onionskin has the wrong length")
    return ParsedOnionskin(onionskin[:32], onionskin[32:64], onionskin[64:96])


def server_respond(
    skin: ParsedOnionskin, identity_pk: bytes, onion_secret: bytes, rng: Rng, handshake_type: int
) -> tuple[bytes, HopKeys]:
    """Answer an onionskin of `handshake_type` addressed to (identity_pk, onion key with `onion_secret`).

    The caller has already matched skin.identity_pk and skin.onion_pk to one of its keys.
    """
    if handshake_type not in LOCAL_TYPES:
        raise RemoteProtocolError("unknown or unsupported handshake type")
    if not hmac.compare_digest(skin.identity_pk, identity_pk):
        raise RemoteProtocolError("onionskin names another relay")
    y = rng.random_bytes(32)
    y_pub = crypto_scalarmult_base(y)
    secret_input = (
        x25519(y, skin.x_public, "ntor")
        + x25519(onion_secret, skin.x_public, "ntor")
        + identity_pk
        + skin.onion_pk
        + skin.x_public
        + y_pub
        + PROTOID
    )
    key_seed, auth = _derive(secret_input, identity_pk, skin.onion_pk, skin.x_public, y_pub, handshake_type)
    return y_pub + auth, _hop_keys(key_seed, handshake_type)
