"""The link protocol between two nodes: handshake, then encrypted records of whole cells (sans-I/O).

Theory of operation (bytes: docs/protocol.md, "Links").  The initiator sends an ephemeral
X25519 key and the record suites it can use; the responder answers with its own key and,
encrypted under the ephemeral shared secret, its Ed25519 identity, a signature over the
transcript hash and the suite it chose.  The initiator checks that identity against the one it
pinned from the relay's descriptor.  Keys come from the ephemeral secret only, so a later theft
of identity keys reveals no past traffic.  The initiator stays anonymous (clients never
authenticate).

After the handshake each direction is a sequence of records:

    record = masked count u16
             | AEAD(k, nonce = seq, ad = masked count; count × CELL_LEN bytes) + tag

where the AEAD is AEGIS-256 (32-byte tag) when both ends have hardware AES, ChaCha20-Poly1305
(16-byte tag) otherwise.  So the wire carries only whole, fixed-size cells, and an observer sees
neither cell types nor where one stream's data ends.  Records are numbered implicitly: a
dropped, replayed or reordered record fails authentication and kills the link.

Not in this module: sockets and timers (runtime.transport.link), circuit multiplexing (runtime).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import kdf, sodium
from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.crypto.sodium import chacha20poly1305_decrypt, chacha20poly1305_encrypt
from onionmesh.crypto.x25519 import x25519
from onionmesh.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from onionmesh.rng import Rng
from onionmesh.wire.cell import CELL_LEN, Cell

LINK_MAGIC = b"OMLK"
LINK_VERSION = 2
MSG1_LEN = 64
MSG2_PLAIN_LEN = 32 + 64 + 4
MSG2_LEN = 32 + MSG2_PLAIN_LEN + 16
MAX_CELLS_PER_RECORD = 64
SIG_CONTEXT = b"onionmesh link handshake v2\x00"
HANDSHAKE_INFO = b"onionmesh link v2 handshake"
RECORD_KEYS_INFO = b"onionmesh link v2 record keys"  # followed by u16(suite)

# Record suites: the id travels as a u16 in MSG2, the offer in MSG1 has bit (id - 1) set.
SUITE_CHACHA20_POLY1305 = 1  # mandatory
SUITE_AEGIS256 = 2  # only with hardware AES (libsodium's software AEGIS is ~100x slower)
SUITE_NAMES = {SUITE_CHACHA20_POLY1305: "chacha20poly1305", SUITE_AEGIS256: "aegis256"}
SUITE_PREFERENCE = (SUITE_AEGIS256, SUITE_CHACHA20_POLY1305)  # the responder takes the first both have
SUPPORTED_SUITES = frozenset(
    (SUITE_CHACHA20_POLY1305, SUITE_AEGIS256) if sodium.HARDWARE_AES else (SUITE_CHACHA20_POLY1305,)
)
SUITE_TAG_LEN = {SUITE_CHACHA20_POLY1305: sodium.TAG_LEN, SUITE_AEGIS256: sodium.AEGIS_TAG_LEN}
MAX_RECORD_LEN = 2 + MAX_CELLS_PER_RECORD * CELL_LEN + max(SUITE_TAG_LEN.values())

Seal = Callable[[bytes, bytes, bytes, bytes], bytes]
Open = Callable[[memoryview, bytes, bytes, bytes], bytes]
# suite -> (seal, open, nonce length); the nonce is zeros(length - 8) ‖ u64(seq)
_SUITE_AEAD: dict[int, tuple[Seal, Open, int]] = {
    SUITE_CHACHA20_POLY1305: (chacha20poly1305_encrypt, chacha20poly1305_decrypt, 12),
    SUITE_AEGIS256: (sodium.aegis256_encrypt, sodium.aegis256_decrypt, 32),
}


def suite_bit(suite: int) -> int:
    """The suite's bit in MSG1's offer."""
    return 1 << (suite - 1)


class LinkRole(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class LinkState(enum.Enum):
    START = "start"
    AWAIT_MSG1 = "await-msg1"
    AWAIT_MSG2 = "await-msg2"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """The handshake finished; `peer_identity` is the responder's key (None on the responder side),
    `suite` the record suite both ends use (SUITE_CHACHA20_POLY1305 or SUITE_AEGIS256)."""

    peer_identity: bytes | None
    suite: int


def _transcript_hash(msg1: bytes, e_r: bytes) -> bytes:
    return hashlib.blake2b(msg1 + e_r, digest_size=32, person=b"om-link-hash").digest()


class _Direction:
    """One direction's record keys and sequence number."""

    __slots__ = ("hdr_key", "key", "nonce_prefix", "seq")

    def __init__(self, key: bytes, hdr_key: bytes, nonce_len: int) -> None:
        self.key = key
        self.hdr_key = hdr_key
        self.nonce_prefix = bytes(nonce_len - 8)
        self.seq = 0

    def mask(self) -> int:
        return int.from_bytes(
            hashlib.blake2b(self.seq.to_bytes(8, "big"), key=self.hdr_key, digest_size=2).digest(), "big"
        )

    def nonce(self) -> bytes:
        return self.nonce_prefix + self.seq.to_bytes(8, "big")


class LinkProtocol:
    """Sans-I/O link endpoint: feed bytes with `receive_data`, send `data_to_send()`.

    `suites` limits the record suites this end offers (initiator) or accepts (responder); None
    means SUPPORTED_SUITES, what this machine can run fast.
    """

    def __init__(
        self,
        role: LinkRole,
        rng: Rng,
        *,
        identity: IdentityKey | None = None,
        expected_identity: bytes | None = None,
        suites: frozenset[int] | None = None,
    ) -> None:
        if role is LinkRole.RESPONDER and identity is None:
            raise LocalProtocolError("a responder needs an identity key")
        if role is LinkRole.INITIATOR and expected_identity is None:
            raise LocalProtocolError("an initiator must pin the responder's identity")
        suites = SUPPORTED_SUITES if suites is None else frozenset(suites)
        if SUITE_CHACHA20_POLY1305 not in suites or not suites <= SUPPORTED_SUITES:
            raise LocalProtocolError("link suites must include ChaCha20-Poly1305 and be supported here")
        self.role = role
        self._rng = rng
        self._identity = identity
        self._expected = expected_identity
        self._suites = suites
        self._in = bytearray()
        self._out = bytearray()
        # The ephemeral key is made when it is needed: a responder pays for it only once a peer sent
        # a well-formed first message (junk connections cost no public-key operation).
        self._e_secret = b""
        self._e_public = b""
        self._msg1 = b""
        self._send: _Direction | None = None
        self._recv: _Direction | None = None
        self._seal: Seal = chacha20poly1305_encrypt
        self._open: Open = chacha20poly1305_decrypt
        self._tag_len = 0
        self._pending_count: int | None = None
        self.peer_identity: bytes | None = None
        self.suite: int | None = None
        self.state = LinkState.START if role is LinkRole.INITIATOR else LinkState.AWAIT_MSG1
        self.bytes_received = 0
        self.bytes_sent = 0

    @property
    def record_overhead(self) -> int:
        """Bytes a record adds to its cells (header and tag); 0 until the link is open."""
        return 2 + self._tag_len if self._tag_len else 0

    # --- handshake ---------------------------------------------------------------------------
    def initiate(self) -> None:
        if self.state is not LinkState.START:
            raise LocalProtocolError("initiate() twice")
        self._make_ephemeral()
        offer = sum(suite_bit(s) for s in self._suites)
        self._msg1 = (
            LINK_MAGIC
            + LINK_VERSION.to_bytes(2, "big")
            + offer.to_bytes(2, "big")
            + self._e_public
            + bytes(MSG1_LEN - 40)
        )
        self._out += self._msg1
        self.state = LinkState.AWAIT_MSG2

    def _make_ephemeral(self) -> None:
        self._e_secret = self._rng.random_bytes(32)
        self._e_public = crypto_scalarmult_base(self._e_secret)

    def _dh(self, peer_public: bytes) -> bytes:
        return x25519(self._e_secret, peer_public, "link handshake")

    def _open_records(self, prk: bytes, suite: int) -> None:
        """Derive the suite's record keys and bind its AEAD for both directions: the link is open."""
        material = kdf.expand(prk, RECORD_KEYS_INFO + suite.to_bytes(2, "big"), 128)
        k_i2r, k_r2i, h_i2r, h_r2i = (material[i : i + 32] for i in range(0, 128, 32))
        self._seal, self._open, nonce_len = _SUITE_AEAD[suite]
        self._tag_len = SUITE_TAG_LEN[suite]
        i2r, r2i = _Direction(k_i2r, h_i2r, nonce_len), _Direction(k_r2i, h_r2i, nonce_len)
        self._send, self._recv = (i2r, r2i) if self.role is LinkRole.INITIATOR else (r2i, i2r)
        self.suite = suite
        self.state = LinkState.OPEN

    def _handle_msg1(self) -> list[object]:
        if len(self._in) < MSG1_LEN:
            return []
        msg1 = bytes(self._in[:MSG1_LEN])
        del self._in[:MSG1_LEN]
        if msg1[:4] != LINK_MAGIC:
            raise RemoteProtocolError("not an onionmesh link")
        if int.from_bytes(msg1[4:6], "big") != LINK_VERSION:
            raise RemoteProtocolError("unsupported link version")
        offer = int.from_bytes(msg1[6:8], "big")  # unknown bits are ignored
        if not offer & suite_bit(SUITE_CHACHA20_POLY1305):
            raise RemoteProtocolError("link offer lacks ChaCha20-Poly1305")
        suite = next(s for s in SUITE_PREFERENCE if s in self._suites and offer & suite_bit(s))
        e_i = msg1[8:40]
        self._make_ephemeral()
        h = _transcript_hash(msg1, self._e_public)
        prk = kdf.extract(self._dh(e_i), salt=h)
        k_hs = kdf.expand(prk, HANDSHAKE_INFO, 32)
        assert self._identity is not None
        sig = self._identity.sign(SIG_CONTEXT, h)
        plain = self._identity.public + sig + LINK_VERSION.to_bytes(2, "big") + suite.to_bytes(2, "big")
        self._out += self._e_public + chacha20poly1305_encrypt(plain, h, bytes(12), k_hs)
        self._open_records(prk, suite)
        return [LinkEstablished(None, suite)]

    def _handle_msg2(self) -> list[object]:
        if len(self._in) < MSG2_LEN:
            return []
        msg2 = bytes(self._in[:MSG2_LEN])
        del self._in[:MSG2_LEN]
        e_r = msg2[:32]
        h = _transcript_hash(self._msg1, e_r)
        prk = kdf.extract(self._dh(e_r), salt=h)
        k_hs = kdf.expand(prk, HANDSHAKE_INFO, 32)
        try:
            plain = chacha20poly1305_decrypt(msg2[32:], h, bytes(12), k_hs)
        except CryptoError as exc:
            raise CryptoError("link handshake did not authenticate") from exc
        identity, sig = plain[:32], plain[32:96]
        if int.from_bytes(plain[96:98], "big") != LINK_VERSION:
            raise RemoteProtocolError("responder speaks another link version")
        assert self._expected is not None
        if not hmac.compare_digest(identity, self._expected):
            raise CryptoError("relay presented the wrong identity key")
        verify_signature(identity, SIG_CONTEXT, h, sig)
        suite = int.from_bytes(plain[98:100], "big")
        if suite not in self._suites:
            raise RemoteProtocolError("responder chose a link record suite we did not offer")
        self.peer_identity = identity
        self._open_records(prk, suite)
        return [LinkEstablished(identity, suite)]

    # --- records -----------------------------------------------------------------------------
    def send_cells(self, cells: list[bytes]) -> None:
        """Queue encoded cells (each exactly CELL_LEN bytes) for sending, batched into records."""
        if self.state is not LinkState.OPEN or self._send is None:
            raise LocalProtocolError("link is not open")
        if any(len(c) != CELL_LEN for c in cells):
            raise LocalProtocolError("every cell must be exactly CELL_LEN bytes")
        d = self._send
        seal = self._seal
        for i in range(0, len(cells), MAX_CELLS_PER_RECORD):
            chunk = cells[i : i + MAX_CELLS_PER_RECORD]
            header = (len(chunk) ^ d.mask()).to_bytes(2, "big")
            body = b"".join(chunk)
            self._out += header + seal(body, header, d.nonce(), d.key)
            d.seq += 1

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the peer. Returns events: LinkEstablished, then Cell objects in order."""
        if self.state is LinkState.CLOSED:
            return []
        self._in += data
        self.bytes_received += len(data)
        events: list[object] = []
        if self.state is LinkState.AWAIT_MSG1:
            events += self._handle_msg1()
        elif self.state is LinkState.AWAIT_MSG2:
            events += self._handle_msg2()
        elif self.state is LinkState.START:
            raise RemoteProtocolError("peer spoke before the handshake began")
        if self.state is LinkState.OPEN:
            events += self._read_records()
        return events

    def _read_records(self) -> list[object]:
        d = self._recv
        assert d is not None
        buf = self._in
        open_, tag_len = self._open, self._tag_len
        cells: list[object] = []
        pos = 0
        while True:
            if self._pending_count is None:
                if len(buf) - pos < 2:
                    break
                count = int.from_bytes(buf[pos : pos + 2], "big") ^ d.mask()
                if not 1 <= count <= MAX_CELLS_PER_RECORD:
                    raise CryptoError("link record header does not authenticate")
                self._pending_count = count
            count = self._pending_count
            need = 2 + count * CELL_LEN + tag_len
            if len(buf) - pos < need:
                break
            header = bytes(buf[pos : pos + 2])
            with memoryview(buf) as view:
                try:
                    body = open_(view[pos + 2 : pos + need], header, d.nonce(), d.key)
                except CryptoError as exc:
                    raise CryptoError("link record does not authenticate") from exc
            d.seq += 1
            self._pending_count = None
            pos += need
            for off in range(0, len(body), CELL_LEN):
                cells.append(Cell.decode(body[off : off + CELL_LEN]))
        if pos:
            del buf[:pos]
        return cells

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self.bytes_sent += len(out)
        return out

    def close(self) -> None:
        self.state = LinkState.CLOSED
        self._in.clear()

    @property
    def buffered_input(self) -> int:
        return len(self._in)
