"""Sealing and checking the introduction messages: ESTABLISH_INTRO's circuit binding and
signature, and INTRODUCE1's hs-ntor encryption and MAC (docs/protocol.md §16.6-16.7).

Why each piece:
* ESTABLISH_INTRO is signed by the intro auth key (so only its holder can register it) and
  carries HANDSHAKE_AUTH, a MAC keyed by the circuit's own hop keys (so an intro point cannot
  replay it on another circuit), as Tor's.
* INTRODUCE1's plaintext (rendezvous cookie, rendezvous point) is sealed to the service's
  intro encryption key with hs-ntor's ENC_KEY (XChaCha20, a zero nonce: the key is fresh per X)
  and its whole body up to the MAC is authenticated with MAC_KEY, so the intro point can neither
  read nor alter it; the padding to a fixed size hides what the client wrote.

Not in this module: the byte layouts (wire.hs_cells), replay caches and rate limits (runtime).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from onionmesh.crypto import hs_ntor, kdf, sodium
from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.crypto.ntor import HopKeys
from onionmesh.errors import CryptoError
from onionmesh.wire.hs_cells import EstablishIntro, Extensions, Introduce1, IntroducePlaintext

ESTABLISH_INTRO_CONTEXT = b"onionmesh establish-intro v1\x00"
CIRCUIT_BINDING_INFO = b"onionmesh hs circuit binding v1"
_ZERO_NONCE24 = bytes(24)


def circuit_binding_key(hop: HopKeys) -> bytes:
    """KH for HANDSHAKE_AUTH: both ends of the hop derive it from the hop's keys *as the
    handshake produced them* (before the first cell ratchets them), so the runtime keeps it then."""
    return kdf.mac(hop.forward_mac, CIRCUIT_BINDING_INFO + hop.backward_mac, 32)


def build_establish_intro(auth: IdentityKey, extensions: Extensions, binding_key: bytes) -> EstablishIntro:
    part = EstablishIntro.authenticated_part(auth.public, extensions)
    handshake_auth = hs_ntor.hs_mac(binding_key, part)
    signature = auth.sign(ESTABLISH_INTRO_CONTEXT, part + handshake_auth)
    return EstablishIntro(auth.public, extensions, handshake_auth, signature)


def check_establish_intro(msg: EstablishIntro, binding_key: bytes) -> None:
    """CryptoError unless signed by its auth key and bound to this circuit."""
    part = EstablishIntro.authenticated_part(msg.auth_key, msg.extensions)
    if not hmac.compare_digest(hs_ntor.hs_mac(binding_key, part), msg.handshake_auth):
        raise CryptoError("ESTABLISH_INTRO is not bound to this circuit")
    verify_signature(msg.auth_key, ESTABLISH_INTRO_CONTEXT, msg.signed_part(), msg.signature)


def _stream(data: bytes, key: bytes) -> bytes:
    return sodium.xchacha20_xor_tail(data, 0, _ZERO_NONCE24, key)[0]


def seal_introduce1(
    state: hs_ntor.ClientState, plaintext: IntroducePlaintext, extensions: Extensions = ()
) -> Introduce1:
    """INTRODUCE1 for the intro point whose keys `state` was started with (hs_ntor.client_start);
    the PoW extension, if any, goes in `extensions` (crypto.hs_pow.solve binds it to X)."""
    ciphertext = _stream(plaintext.encode(), state.intro.enc_key)
    unsigned = Introduce1(state.auth_key, extensions, state.x_public, ciphertext, b"")
    return Introduce1(
        state.auth_key,
        extensions,
        state.x_public,
        ciphertext,
        hs_ntor.hs_mac(state.intro.mac_key, unsigned.mac_input()),
    )


@dataclass(frozen=True)
class OpenedIntroduce:
    plaintext: IntroducePlaintext
    client_pk: bytes


def open_introduce2(msg: Introduce1, enc_secret: bytes, enc_pub: bytes, subcred: bytes) -> OpenedIntroduce:
    """The service's side: check the MAC, then decrypt and parse; RemoteProtocolError otherwise."""
    keys = hs_ntor.service_intro_keys(msg.auth_key, enc_secret, enc_pub, msg.client_pk, subcred)
    if not hmac.compare_digest(hs_ntor.hs_mac(keys.mac_key, msg.mac_input()), msg.mac):
        raise CryptoError("INTRODUCE2 MAC does not verify")
    return OpenedIntroduce(IntroducePlaintext.decode(_stream(msg.ciphertext, keys.enc_key)), msg.client_pk)
