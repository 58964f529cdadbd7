"""The libsodium calls on the per-cell hot path, made straight through PyNaCl's cffi handle.

Why: PyNaCl's public wrappers spend more time in argument checks and allocations than
libsodium spends on a 2 KB cell (measured: 4.9 µs through the wrapper against 2.7 µs direct
for one XChaCha20 pass over 2032 bytes).  PyNaCl exposes no raw stream cipher and
no bare Poly1305, so `xchacha20_xor_tail` encrypts with XChaCha20-Poly1305 and drops the tag
(the ciphertext of an AEAD is exactly data ⊕ XChaCha20 keystream from block counter 1), and
`poly1305_mac` takes the tag of an empty message whose associated data is the input.  The AES
twins (`aes256gcm_xor_tail`, `ghash_mac`) use AES-256-GCM the same way, and AEGIS-256 seals link
records; both need the CPU's AES instructions, which `HARDWARE_AES` reports (libsodium has no
software AES-GCM, and its software AEGIS is ~100x slower than ChaCha20).  Callers check every
length and type before they get here; the public wrappers remain the fallback when a PyNaCl
build lacks the cffi handle (and then HARDWARE_AES is False).

Not in this module: what the bytes mean (onion_layer, proto.link).
"""

from __future__ import annotations

import os
from typing import Any

from nacl import bindings as _bindings
from nacl.exceptions import CryptoError as NaclCryptoError

from onionmesh.errors import CryptoError

TAG_LEN = 16
AEGIS_TAG_LEN = 32  # libsodium's AEGIS-256 tags are 256 bits
_ZERO_NONCE12 = bytes(12)

try:  # PyNaCl's compiled module; present in every wheel, but not a documented API
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
    from nacl._sodium import lib as _lib  # type: ignore[import-not-found]

    _xchacha_encrypt = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _chacha_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _chacha_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    _gcm_encrypt = _lib.crypto_aead_aes256gcm_encrypt
    _aegis_encrypt = _lib.crypto_aead_aegis256_encrypt
    _aegis_decrypt = _lib.crypto_aead_aegis256_decrypt
    # libsodium overwrites every output byte, so skip cffi's zero-fill (half the cost of a 2 KB buffer)
    _new = _ffi.new_allocator(should_clear_after_alloc=False)
    DIRECT = True
except (ImportError, AttributeError):  # pragma: no cover - exercised only on unusual builds
    DIRECT = False

# nacl.bindings ran sodium_init() on import, so libsodium has probed the CPU (AES-NI and
# PCLMULQDQ on x86, the crypto extensions on ARM).  ONIONMESH_DISABLE_AES=1 makes a node behave as
# one without (to test the fallback suites, or to rule the AES code out when diagnosing).
HARDWARE_AES = (
    DIRECT
    and bool(_lib.crypto_aead_aes256gcm_is_available())
    and os.environ.get("ONIONMESH_DISABLE_AES") != "1"
)


def _xor_tail(encrypt: Any, data: bytes, tail_len: int, nonce: bytes, key: bytes) -> tuple[bytes, bytes]:
    """An AEAD's ciphertext of data ‖ zeros(tail_len), split, tag dropped: a stream cipher pass."""
    n = len(data)
    total = n + tail_len
    out = _new("unsigned char[]", total + TAG_LEN)
    encrypt(out, _ffi.NULL, data + bytes(tail_len), total, _ffi.NULL, 0, _ffi.NULL, nonce, key)
    buf = _ffi.buffer(out, total)
    return buf[:n], buf[n:total]


def _tag_of(encrypt: Any, data: bytes, key: bytes) -> bytes:
    """An AEAD's 16-byte tag of an empty message with `data` as associated data, nonce zero."""
    out = _ffi.new("unsigned char[16]")
    encrypt(out, _ffi.NULL, _ffi.NULL, 0, data, len(data), _ffi.NULL, _ZERO_NONCE12, key)
    return _ffi.buffer(out, TAG_LEN)[:]


def _seal(encrypt: Any, tag_len: int, message: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    n = len(message) + tag_len
    out = _new("unsigned char[]", n)
    encrypt(out, _ffi.NULL, message, len(message), ad, len(ad), _ffi.NULL, nonce, key)
    return _ffi.buffer(out, n)[:]


def _open(decrypt: Any, tag_len: int, view: memoryview, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    n = len(view) - tag_len
    out = _new("unsigned char[]", max(n, 1))
    if decrypt(out, _ffi.NULL, _ffi.NULL, _ffi.from_buffer(view), len(view), ad, len(ad), nonce, key) != 0:
        raise CryptoError("does not authenticate")
    return _ffi.buffer(out, n)[:]


def xchacha20_xor_tail(data: bytes, tail_len: int, nonce24: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(data ⊕ keystream, the next `tail_len` keystream bytes): XChaCha20(key, nonce24) from block 1.

    One pass yields both the encrypted data and fresh key material bound to (key, nonce).
    """
    if not DIRECT:
        n = len(data)
        sealed = _bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            data + bytes(tail_len), None, nonce24, key
        )
        return sealed[:n], sealed[n : n + tail_len]
    return _xor_tail(_xchacha_encrypt, data, tail_len, nonce24, key)


def poly1305_mac(data: bytes, key: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF) tag of `data` as associated data, empty message, nonce zero.

    A Wegman-Carter MAC: Poly1305 under the one-time key ChaCha20(key, 0) block 0. Secure for
    one message per key, which is how onion layers use it (their keys change every cell).
    """
    if not DIRECT:
        return _bindings.crypto_aead_chacha20poly1305_ietf_encrypt(b"", data, _ZERO_NONCE12, key)
    return _tag_of(_chacha_encrypt, data, key)


def chacha20poly1305_encrypt(message: bytes, ad: bytes, nonce12: bytes, key: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF): ciphertext ‖ 16-byte tag."""
    if not DIRECT:
        return _bindings.crypto_aead_chacha20poly1305_ietf_encrypt(message, ad, nonce12, key)
    return _seal(_chacha_encrypt, TAG_LEN, message, ad, nonce12, key)


def chacha20poly1305_decrypt(
    sealed: bytes | bytearray | memoryview, ad: bytes, nonce12: bytes, key: bytes
) -> bytes:
    """Open ciphertext ‖ tag (any contiguous buffer: a slice of a bytearray is read in place);
    raises CryptoError when it does not authenticate."""
    view = memoryview(sealed)
    if len(view) < TAG_LEN:
        raise CryptoError("sealed data shorter than its tag")
    if not DIRECT:
        try:
            return _bindings.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(view), ad, nonce12, key)
        except (NaclCryptoError, ValueError) as exc:
            raise CryptoError("does not authenticate") from exc
    return _open(_chacha_decrypt, TAG_LEN, view, ad, nonce12, key)


def _need_hardware_aes() -> None:
    if not HARDWARE_AES:
        raise CryptoError("this machine has no hardware AES for libsodium")


def aes256gcm_xor_tail(data: bytes, tail_len: int, nonce12: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(data ⊕ keystream, the next `tail_len` keystream bytes): AES-256-CTR as GCM uses it, from
    counter block nonce12 ‖ 2 (the GCM tag computed alongside is dropped)."""
    _need_hardware_aes()
    return _xor_tail(_gcm_encrypt, data, tail_len, nonce12, key)


def ghash_mac(data: bytes, key: bytes) -> bytes:
    """AES-256-GCM tag of `data` as associated data, empty message, nonce zero: GHASH under
    H = AES(key, 0) masked by AES(key, J0), a Wegman-Carter MAC for one message per key."""
    _need_hardware_aes()
    return _tag_of(_gcm_encrypt, data, key)


def aegis256_encrypt(message: bytes, ad: bytes, nonce32: bytes, key: bytes) -> bytes:
    """AEGIS-256: ciphertext ‖ 32-byte tag."""
    _need_hardware_aes()
    return _seal(_aegis_encrypt, AEGIS_TAG_LEN, message, ad, nonce32, key)


def aegis256_decrypt(sealed: bytes | bytearray | memoryview, ad: bytes, nonce32: bytes, key: bytes) -> bytes:
    """Open AEGIS-256 ciphertext ‖ tag (read in place from any contiguous buffer); raises
    CryptoError when it does not authenticate."""
    _need_hardware_aes()
    view = memoryview(sealed)
    if len(view) < AEGIS_TAG_LEN:
        raise CryptoError("sealed data shorter than its tag")
    return _open(_aegis_decrypt, AEGIS_TAG_LEN, view, ad, nonce32, key)
