"""The libsodium calls on the per-cell hot path, made straight through PyNaCl's cffi handle.

Why: PyNaCl's public wrappers spend more time in argument checks and allocations than
libsodium spends on a 2 KB cell (measured: 4.9 µs through the wrapper against 2.7 µs direct
for one XChaCha20 pass over 2032 bytes).  PyNaCl exposes no raw stream cipher and
no bare Poly1305, so `xchacha20_xor_tail` encrypts with XChaCha20-Poly1305 and drops the tag
(the ciphertext of an AEAD is exactly data ⊕ XChaCha20 keystream from block counter 1), and
`poly1305_mac` takes the tag of an empty message whose associated data is the input.  Callers check
every length and type before they get here; the public wrappers remain the fallback when a
PyNaCl build lacks the cffi handle.

Not in this module: what the bytes mean (onion_layer, proto.link).
"""

from __future__ import annotations

from nacl import bindings as _bindings
from nacl.exceptions import CryptoError as NaclCryptoError

from onionmesh.errors import CryptoError

TAG_LEN = 16
_ZERO_NONCE12 = bytes(12)

try:  # PyNaCl's compiled module; present in every wheel, but not a documented API
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
    from nacl._sodium import lib as _lib  # type: ignore[import-not-found]

    _xchacha_encrypt = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _chacha_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _chacha_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    # libsodium overwrites every output byte, so skip cffi's zero-fill (half the cost of a 2 KB buffer)
    _new = _ffi.new_allocator(should_clear_after_alloc=False)
    DIRECT = True
except (ImportError, AttributeError):  # pragma: no cover - exercised only on unusual builds
    DIRECT = False


def xchacha20_xor_tail(data: bytes, tail_len: int, nonce24: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(data ⊕ keystream, the next `tail_len` keystream bytes): XChaCha20(key, nonce24) from block 1.

    One pass yields both the encrypted data and fresh key material bound to (key, nonce).
    """
    n = len(data)
    if not DIRECT:
        sealed = _bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            data + bytes(tail_len), None, nonce24, key
        )
        return sealed[:n], sealed[n : n + tail_len]
    total = n + tail_len
    out = _new("unsigned char[]", total + TAG_LEN)
    _xchacha_encrypt(out, _ffi.NULL, data + bytes(tail_len), total, _ffi.NULL, 0, _ffi.NULL, nonce24, key)
    buf = _ffi.buffer(out, total)
    return buf[:n], buf[n:total]


def poly1305_mac(data: bytes, key: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF) tag of `data` as associated data, empty message, nonce zero.

    A Wegman-Carter MAC: Poly1305 under the one-time key ChaCha20(key, 0) block 0. Secure for
    one message per key, which is how onion layers use it (their keys change every cell).
    """
    if not DIRECT:
        return _bindings.crypto_aead_chacha20poly1305_ietf_encrypt(b"", data, _ZERO_NONCE12, key)
    out = _ffi.new("unsigned char[16]")
    _chacha_encrypt(out, _ffi.NULL, _ffi.NULL, 0, data, len(data), _ffi.NULL, _ZERO_NONCE12, key)
    return _ffi.buffer(out, TAG_LEN)[:]


def chacha20poly1305_encrypt(message: bytes, ad: bytes, nonce12: bytes, key: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF): ciphertext ‖ 16-byte tag."""
    if not DIRECT:
        return _bindings.crypto_aead_chacha20poly1305_ietf_encrypt(message, ad, nonce12, key)
    n = len(message) + TAG_LEN
    out = _new("unsigned char[]", n)
    _chacha_encrypt(out, _ffi.NULL, message, len(message), ad, len(ad), _ffi.NULL, nonce12, key)
    return _ffi.buffer(out, n)[:]


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
    n = len(view) - TAG_LEN
    out = _new("unsigned char[]", max(n, 1))
    src = _ffi.from_buffer(view)
    if _chacha_decrypt(out, _ffi.NULL, _ffi.NULL, src, len(view), ad, len(ad), nonce12, key) != 0:
        raise CryptoError("does not authenticate")
    return _ffi.buffer(out, n)[:]
