"""hs-ntor: the onion-service handshake, exactly rend-spec-v3 §3.3.2 ("ntor with extra data").

The client knows the intro point's auth key (AUTH_KEY, Ed25519) and the service's encryption key
B (X25519) for that intro point from the descriptor.  With a fresh x it derives ENC_KEY/MAC_KEY
to seal the INTRODUCE1 plaintext to the service (not forward secret: B is medium-term), and the
service, with a fresh y, answers in RENDEZVOUS1 with Y and AUTH, which proves it holds b; both
then share NTOR_KEY_SEED (forward secret through x and y).  Constants, SHA3-256 and SHAKE-256
are Tor's, so tor's src/test/hs_ntor_ref.py reproduces every value (tests/vectors/hs_tor.json).

onionmesh difference (docs/protocol.md §16.7): the 128 bytes of end-to-end key material,
K = SHAKE-256(NTOR_KEY_SEED | m_hsexpand) as Tor, feed onionmesh's relay layer (suite XCHACHA)
as one virtual hop, instead of Tor's AES-256-CTR + SHA3 running digests.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto.ntor import HopKeys
from onionmesh.crypto.onion_layer import LayerSuite
from onionmesh.crypto.x25519 import x25519
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import Rng

PROTOID = b"tor-hs-ntor-curve25519-sha3-256-1"
T_HSENC = PROTOID + b":hs_key_extract"
T_HSVERIFY = PROTOID + b":hs_verify"
T_HSMAC = PROTOID + b":hs_mac"
M_HSEXPAND = PROTOID + b":hs_key_expand"
HANDSHAKE_INFO_LEN = 64  # SERVER_PK Y (32) | AUTH (32)
E2E_KEY_MATERIAL_LEN = 128  # Df | Db | Kf | Kb, 32 bytes each


def hs_mac(key: bytes, message: bytes) -> bytes:
    """MAC(k, m) = SHA3-256(htonll(len(k)) | k | m) (rend-spec-v3 §0.3)."""
    return hashlib.sha3_256(len(key).to_bytes(8, "big") + key + message).digest()


@dataclass(frozen=True, repr=False)
class IntroKeys:
    """ENC_KEY and MAC_KEY that seal one INTRODUCE1 plaintext."""

    enc_key: bytes
    mac_key: bytes


def _intro_keys(dh: bytes, auth_key: bytes, x_pub: bytes, b_pub: bytes, subcred: bytes) -> IntroKeys:
    secret = dh + auth_key + x_pub + b_pub + PROTOID
    keys = hashlib.shake_256(secret + T_HSENC + M_HSEXPAND + subcred).digest(64)
    return IntroKeys(keys[:32], keys[32:])


def _rend(
    xy: bytes, xb: bytes, auth_key: bytes, b_pub: bytes, x_pub: bytes, y_pub: bytes
) -> tuple[bytes, bytes]:
    """(NTOR_KEY_SEED, AUTH_INPUT_MAC)."""
    secret = xy + xb + auth_key + b_pub + x_pub + y_pub + PROTOID
    seed = hs_mac(secret, T_HSENC)
    verify = hs_mac(secret, T_HSVERIFY)
    auth_input = verify + auth_key + b_pub + y_pub + x_pub + PROTOID + b"Server"
    return seed, hs_mac(auth_input, T_HSMAC)


def e2e_keys(ntor_key_seed: bytes) -> HopKeys:
    """The client's keys for the service's virtual hop: K = SHAKE-256(seed | m_hsexpand, 128) read
    as Df, Db, Kf, Kb (rend-spec-v3 §4.2.1), mapped to the layer's (stream, mac) per direction.
    The service uses the same HopKeys with directions swapped (`swap_directions`)."""
    k = hashlib.shake_256(ntor_key_seed + M_HSEXPAND).digest(E2E_KEY_MATERIAL_LEN)
    df, db, kf, kb = k[0:32], k[32:64], k[64:96], k[96:128]
    return HopKeys(kf, df, kb, db, LayerSuite.XCHACHA)


def swap_directions(keys: HopKeys) -> HopKeys:
    """The other end's view: what one side sends forward, the other receives backward."""
    return HopKeys(keys.backward_stream, keys.backward_mac, keys.forward_stream, keys.forward_mac, keys.suite)


@dataclass(frozen=True, repr=False)
class ClientState:
    """What the client keeps between INTRODUCE1 and RENDEZVOUS2."""

    auth_key: bytes
    enc_pub: bytes
    x_secret: bytes
    x_public: bytes
    intro: IntroKeys


def client_start(auth_key: bytes, enc_pub: bytes, subcred: bytes, rng: Rng) -> ClientState:
    """Pick x and derive the keys that seal the INTRODUCE1 plaintext."""
    return client_start_with(auth_key, enc_pub, subcred, rng.random_bytes(32))


def client_start_with(auth_key: bytes, enc_pub: bytes, subcred: bytes, x: bytes) -> ClientState:
    """`client_start` with a given x (test vectors)."""
    if len(auth_key) != 32 or len(enc_pub) != 32 or len(subcred) != 32:
        raise ValueError("hs-ntor keys are 32 bytes")
    x_pub = crypto_scalarmult_base(x)
    intro = _intro_keys(x25519(x, enc_pub, "hs-ntor"), auth_key, x_pub, enc_pub, subcred)
    return ClientState(auth_key, enc_pub, x, x_pub, intro)


def service_intro_keys(
    auth_key: bytes, enc_secret: bytes, enc_pub: bytes, x_pub: bytes, subcred: bytes
) -> IntroKeys:
    """The service's ENC_KEY/MAC_KEY for an INTRODUCE2 carrying client key X."""
    return _intro_keys(x25519(enc_secret, x_pub, "hs-ntor"), auth_key, x_pub, enc_pub, subcred)


def service_respond(
    auth_key: bytes, enc_secret: bytes, enc_pub: bytes, x_pub: bytes, rng: Rng, y: bytes | None = None
) -> tuple[bytes, bytes]:
    """(HANDSHAKE_INFO = Y | AUTH for RENDEZVOUS1, NTOR_KEY_SEED); `y` only for test vectors."""
    y = rng.random_bytes(32) if y is None else y
    y_pub = crypto_scalarmult_base(y)
    seed, auth = _rend(
        x25519(y, x_pub, "hs-ntor"), x25519(enc_secret, x_pub, "hs-ntor"), auth_key, enc_pub, x_pub, y_pub
    )
    return y_pub + auth, seed


def client_finish(state: ClientState, handshake_info: bytes) -> bytes:
    """NTOR_KEY_SEED from RENDEZVOUS2's HANDSHAKE_INFO; CryptoError unless AUTH proves b."""
    if len(handshake_info) != HANDSHAKE_INFO_LEN:
        raise RemoteProtocolError("HANDSHAKE_INFO has the wrong length")
    y_pub, auth = handshake_info[:32], handshake_info[32:]
    seed, expected = _rend(
        x25519(state.x_secret, y_pub, "hs-ntor"),
        x25519(state.x_secret, state.enc_pub, "hs-ntor"),
        state.auth_key,
        state.enc_pub,
        state.x_public,
        y_pub,
    )
    if not hmac.compare_digest(expected, auth):
        raise CryptoError("the service failed to authenticate in hs-ntor")
    return seed
