"""The link protocol between two nodes: handshake, then encrypted records of whole cells (sans-I/O).

Theory of operation (bytes: docs/protocol.md, "Links").  The initiator sends an ephemeral
X25519 key; the responder answers with its own and, encrypted under the ephemeral shared
secret, its Ed25519 identity and a signature over the transcript hash.  The initiator checks
that identity against the one it pinned from the relay's descriptor.  Keys come from the
ephemeral secret only, so a later theft of identity keys reveals no past traffic.  The
initiator stays anonymous (clients never authenticate).

After the handshake each direction is a sequence of records:

    record = masked count u16
             | ChaCha20-Poly1305(k, nonce = seq, ad = masked count; count × CELL_LEN bytes) + tag(16)

so the wire carries only whole, fixed-size cells, and an observer sees neither cell types nor
where one stream's data ends.  Records are numbered implicitly: a dropped, replayed or
reordered record fails authentication and kills the link.

Not in this module: sockets and timers (runtime.link), circuit multiplexing (runtime).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from onionmesh.crypto import kdf
from onionmesh.crypto.keys import IdentityKey, verify_signature
from onionmesh.crypto.sodium import chacha20poly1305_decrypt, chacha20poly1305_encrypt
from onionmesh.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from onionmesh.rng import Rng
from onionmesh.wire.cell import CELL_LEN, Cell

LINK_MAGIC = b"OMLK"
LINK_VERSION = 1
MSG1_LEN = 64
MSG2_PLAIN_LEN = 32 + 64 + 4
MSG2_LEN = 32 + MSG2_PLAIN_LEN + 16
MAX_CELLS_PER_RECORD = 64
RECORD_OVERHEAD = 2 + 16
SIG_CONTEXT = b"onionmesh link handshake v1\x00"
KEYS_INFO = b"onionmesh link v1 keys"


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
    """The handshake finished; `peer_identity` is the responder's key (None on the responder side)."""

    peer_identity: bytes | None


def _transcript_hash(msg1: bytes, e_r: bytes) -> bytes:
    return hashlib.blake2b(msg1 + e_r, digest_size=32, person=b"om-link-hash").digest()


class _Direction:
    """One direction's record keys and sequence number."""

    __slots__ = ("hdr_key", "key", "seq")

    def __init__(self, key: bytes, hdr_key: bytes) -> None:
        self.key = key
        self.hdr_key = hdr_key
        self.seq = 0

    def mask(self) -> int:
        return int.from_bytes(
            hashlib.blake2b(self.seq.to_bytes(8, "big"), key=self.hdr_key, digest_size=2).digest(), "big"
        )

    def nonce(self) -> bytes:
        return bytes(4) + self.seq.to_bytes(8, "big")


class LinkProtocol:
    """Sans-I/O link endpoint: feed bytes with `receive_data`, send `data_to_send()`."""

    def __init__(
        self,
        role: LinkRole,
        rng: Rng,
        *,
        identity: IdentityKey | None = None,
        expected_identity: bytes | None = None,
    ) -> None:
        if role is LinkRole.RESPONDER and identity is None:
            raise LocalProtocolError("a responder needs an identity key")
        if role is LinkRole.INITIATOR and expected_identity is None:
            raise LocalProtocolError("an initiator must pin the responder's identity")
        self.role = role
        self._rng = rng
        self._identity = identity
        self._expected = expected_identity
        self._in = bytearray()
        self._out = bytearray()
        # The ephemeral key is made when it is needed: a responder pays for it only once a peer sent
        # a well-formed first message (junk connections cost no public-key operation).
        self._e_secret = b""
        self._e_public = b""
        self._msg1 = b""
        self._send: _Direction | None = None
        self._recv: _Direction | None = None
        self._pending_count: int | None = None
        self.peer_identity: bytes | None = None
        self.state = LinkState.START if role is LinkRole.INITIATOR else LinkState.AWAIT_MSG1
        self.bytes_received = 0
        self.bytes_sent = 0

    # --- handshake ---------------------------------------------------------------------------
    def initiate(self) -> None:
        if self.state is not LinkState.START:
            raise LocalProtocolError("initiate() twice")
        self._make_ephemeral()
        self._msg1 = (
            LINK_MAGIC + LINK_VERSION.to_bytes(2, "big") + bytes(2) + self._e_public + bytes(MSG1_LEN - 40)
        )
        self._out += self._msg1
        self.state = LinkState.AWAIT_MSG2

    def _make_ephemeral(self) -> None:
        self._e_secret = self._rng.random_bytes(32)
        self._e_public = crypto_scalarmult_base(self._e_secret)

    def _derive(self, shared: bytes, h: bytes) -> tuple[bytes, _Direction, _Direction]:
        material = kdf.expand(kdf.extract(shared, salt=h), KEYS_INFO, 160)
        k_hs, k_i2r, k_r2i, h_i2r, h_r2i = (material[i : i + 32] for i in range(0, 160, 32))
        i2r, r2i = _Direction(k_i2r, h_i2r), _Direction(k_r2i, h_r2i)
        return k_hs, i2r, r2i

    def _dh(self, peer_public: bytes) -> bytes:
        try:
            shared = crypto_scalarmult(self._e_secret, peer_public)
        except (NaclRuntimeError, NaclCryptoError, ValueError) as exc:
            raise CryptoError("bad ephemeral key on link") from exc
        if shared == bytes(32):
            raise CryptoError("bad ephemeral key on link")
        return shared

    def _handle_msg1(self) -> list[object]:
        if len(self._in) < MSG1_LEN:
            return []
        msg1 = bytes(self._in[:MSG1_LEN])
        del self._in[:MSG1_LEN]
        if msg1[:4] != LINK_MAGIC:
            raise RemoteProtocolError("not an onionmesh link")
        if int.from_bytes(msg1[4:6], "big") != LINK_VERSION:
            raise RemoteProtocolError("unsupported link version")
        e_i = msg1[8:40]
        self._make_ephemeral()
        h = _transcript_hash(msg1, self._e_public)
        k_hs, i2r, r2i = self._derive(self._dh(e_i), h)
        assert self._identity is not None
        sig = self._identity.sign(SIG_CONTEXT, h)
        plain = self._identity.public + sig + LINK_VERSION.to_bytes(2, "big") + bytes(2)
        self._out += self._e_public + chacha20poly1305_encrypt(plain, h, bytes(12), k_hs)
        self._send, self._recv = r2i, i2r
        self.state = LinkState.OPEN
        return [LinkEstablished(None)]

    def _handle_msg2(self) -> list[object]:
        if len(self._in) < MSG2_LEN:
            return []
        msg2 = bytes(self._in[:MSG2_LEN])
        del self._in[:MSG2_LEN]
        e_r = msg2[:32]
        h = _transcript_hash(self._msg1, e_r)
        k_hs, i2r, r2i = self._derive(self._dh(e_r), h)
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
        self.peer_identity = identity
        self._send, self._recv = i2r, r2i
        self.state = LinkState.OPEN
        return [LinkEstablished(identity)]

    # --- records -----------------------------------------------------------------------------
    def send_cells(self, cells: list[bytes]) -> None:
        """Queue encoded cells (each exactly CELL_LEN bytes) for sending, batched into records."""
        if self.state is not LinkState.OPEN or self._send is None:
            raise LocalProtocolError("link is not open")
        if any(len(c) != CELL_LEN for c in cells):
            raise LocalProtocolError("every cell must be exactly CELL_LEN bytes")
        d = self._send
        for i in range(0, len(cells), MAX_CELLS_PER_RECORD):
            chunk = cells[i : i + MAX_CELLS_PER_RECORD]
            header = (len(chunk) ^ d.mask()).to_bytes(2, "big")
            body = b"".join(chunk)
            self._out += header + chacha20poly1305_encrypt(body, header, d.nonce(), d.key)
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
            need = 2 + count * CELL_LEN + 16
            if len(buf) - pos < need:
                break
            header = bytes(buf[pos : pos + 2])
            with memoryview(buf) as view:
                try:
                    body = chacha20poly1305_decrypt(view[pos + 2 : pos + need], header, d.nonce(), d.key)
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
