"""Shared by the link tests: seeded pairs of LinkProtocol ends, cells, record lengths, per-suite params."""

from __future__ import annotations

import pytest

from onionmesh.crypto.keys import IdentityKey
from onionmesh.crypto.sodium import HARDWARE_AES
from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.proto.link import (
    MAX_CELLS_PER_RECORD,
    SUITE_AEGIS256,
    SUITE_CHACHA20_POLY1305,
    SUITE_TAG_LEN,
    LinkEstablished,
    LinkProtocol,
    LinkRole,
    LinkState,
)
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import CELL_LEN, CELL_PAYLOAD_LEN, Cell, CellCommand

IDENTITY = IdentityKey.generate(SeededRng(b"link identity"))
OTHER_IDENTITY = IdentityKey.generate(SeededRng(b"another identity"))
BUFFER_BOUND = 2 * MAX_CELLS_PER_RECORD * CELL_LEN + 1024
CHACHA = SUITE_CHACHA20_POLY1305
AEGIS = SUITE_AEGIS256
ONLY_CHACHA = frozenset({CHACHA})
BOTH = frozenset({CHACHA, AEGIS})
DEFAULT_SUITE = AEGIS if HARDWARE_AES else CHACHA
needs_aes = pytest.mark.skipif(not HARDWARE_AES, reason="AEGIS-256 needs hardware AES")
# the record suites both ends use: every record test runs once per suite
SUITES = [
    pytest.param(CHACHA, id="chacha20poly1305"),
    pytest.param(AEGIS, id="aegis256", marks=needs_aes),
]


def new_pair(
    seed: int = 0,
    *,
    identity: IdentityKey = IDENTITY,
    pinned: bytes | None = None,
    suites: frozenset[int] | None = None,
    responder_suites: frozenset[int] | None = None,
) -> tuple[LinkProtocol, LinkProtocol]:
    """`suites` for the initiator, and for the responder too unless `responder_suites` is given."""
    initiator = LinkProtocol(
        LinkRole.INITIATOR,
        SeededRng(b"initiator %d" % seed),
        expected_identity=pinned if pinned is not None else identity.public,
        suites=suites,
    )
    responder = LinkProtocol(
        LinkRole.RESPONDER,
        SeededRng(b"responder %d" % seed),
        identity=identity,
        suites=responder_suites if responder_suites is not None else suites,
    )
    return initiator, responder


def suites_for(suite: int | None) -> frozenset[int] | None:
    """Suites that make both ends agree on `suite` (None: this machine's default)."""
    return None if suite is None else frozenset({CHACHA, suite})


def open_pair(seed: int = 0, suite: int | None = None) -> tuple[LinkProtocol, LinkProtocol]:
    initiator, responder = new_pair(seed, suites=suites_for(suite))
    want = DEFAULT_SUITE if suite is None else suite
    initiator.initiate()
    assert responder.receive_data(initiator.data_to_send()) == [LinkEstablished(None, want)]
    assert initiator.receive_data(responder.data_to_send()) == [LinkEstablished(IDENTITY.public, want)]
    assert initiator.suite == responder.suite == want
    return initiator, responder


def make_cells(n: int, tag: int = 0) -> list[Cell]:
    return [
        Cell(
            0x8000_0000 | (tag << 16) | i,
            CellCommand.RELAY if i % 3 else CellCommand.PADDING,
            ((b"%d/%d " % (tag, i)) * 10).ljust(CELL_PAYLOAD_LEN, b"\x00"),
        )
        for i in range(n)
    ]


def encoded(cells: list[Cell]) -> list[bytes]:
    return [c.encode() for c in cells]


def record_len(cells: int, suite: int = DEFAULT_SUITE) -> int:
    return 2 + cells * CELL_LEN + SUITE_TAG_LEN[suite]


def transfer(sender: LinkProtocol, receiver: LinkProtocol, cells: list[Cell]) -> list[object]:
    sender.send_cells(encoded(cells))
    return receiver.receive_data(sender.data_to_send())


def expect_crypto_error(receiver: LinkProtocol, data: bytes, sender: LinkProtocol) -> None:
    """Feed `data`, then as much further traffic as any record header could ask for: it must fail.

    A tampered header may decode to a different cell count and wait for more bytes first, so
    the failure may come only with the next record.
    """
    with pytest.raises(CryptoError):
        receiver.receive_data(data)
        sender.send_cells(encoded(make_cells(MAX_CELLS_PER_RECORD, tag=99)))
        receiver.receive_data(sender.data_to_send())
        raise AssertionError("no CryptoError")  # pragma: no cover


def assert_msg1_field_refused(start: int, value: int, match: str) -> None:
    """A responder fed a real MSG1 whose u16 at `start` is replaced by `value` refuses it with a
    RemoteProtocolError matching `match`, stays closed, and sends nothing back (not even an error)."""
    initiator, responder = new_pair()
    initiator.initiate()
    msg1 = bytearray(initiator.data_to_send())
    msg1[start : start + 2] = value.to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError, match=match):
        responder.receive_data(bytes(msg1))
    assert responder.state is not LinkState.OPEN
    assert not responder.data_to_send()
