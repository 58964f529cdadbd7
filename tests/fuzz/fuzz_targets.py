"""Fuzz targets for every onionmesh parser that reads peer or user bytes.

Each target is a `Target`: `one(data)` runs one input and lets an exception escape only if it is a
bug (an exception type the parser does not document, or a broken invariant: `HarnessFailure`);
`seeds()` is a corpus of valid inputs generated from the code itself (deterministic keys), so that
mutations start from deep inside each parser; `tokens` is a mutation dictionary.

Engines (see run.py and README.md): atheris (coverage-guided libFuzzer) when installed, else
`mutate_engine` below, a pure-Python structured mutator that keeps inputs whose outcome (result
kind or exception type and message) it has not seen yet.  The pytest smoke test uses the latter.

Input layouts are documented per target; most start with one "mode" byte (chunking of the input,
flags), so the seed corpus and the mutations share one format.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import umsgpack

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory.descriptor import (
    MAX_EXIT_POLICY_LEN,
    RelayDescriptor,
    decode_and_verify,
)
from onionmesh.directory.descriptor_file import decode_descriptor_file, encode_descriptor_file
from onionmesh.directory.dht_records import DescriptorStore, StoreResult, node_id_for, sign_hello
from onionmesh.directory.dht_storage import DhtStorage
from onionmesh.directory.exit_policy import DEFAULT_EXIT_POLICY, MAX_POLICY_CHARS, ExitPolicy, summary_allows
from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.errors import OnionmeshError, PolicyError, RemoteProtocolError
from onionmesh.proto.link import (
    CELL_LEN,
    MAX_CELLS_PER_RECORD,
    MAX_RECORD_LEN,
    SUITE_CHACHA20_POLY1305,
    LinkEstablished,
    LinkProtocol,
    LinkRole,
    LinkState,
)
from onionmesh.proto.socks import MAX_BUFFER, SocksServer
from onionmesh.proto.socks_wire import SocksReply, SocksRequest
from onionmesh.rng import SeededRng
from onionmesh.wire import relay_msg as rm
from onionmesh.wire.cell import (
    CELL_PAYLOAD_LEN,
    Cell,
    CellCommand,
    create_payload,
    created_payload,
    parse_create,
    parse_created,
)

T0 = 1_700_000_000
NOW = T0 + 60
HOUR = 3600


class HarnessFailure(AssertionError):
    """An invariant the parser documents was broken (not an exception it raised itself)."""


# Bugs already found and reported (README.md, "Findings").  By default they fail like any other
# crash; with ONIONMESH_FUZZ_TOLERATE_KNOWN=1 (run.py --tolerate-known) they are counted instead,
# so that a long run can go on looking for new ones.
TOLERATE_KNOWN = os.environ.get("ONIONMESH_FUZZ_TOLERATE_KNOWN") == "1"
KNOWN_HITS: dict[str, int] = {}
KNOWN_LOG: Path | None = None


def known(name: str, exc: BaseException, data: bytes) -> str:
    """Count a hit of known bug `name`, or re-raise `exc` unless tolerating known bugs."""
    if not TOLERATE_KNOWN:
        raise exc
    n = KNOWN_HITS[name] = KNOWN_HITS.get(name, 0) + 1
    if n == 1:
        print(
            f"known bug {name} hit by input {data[:200].hex()}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
    if KNOWN_LOG is not None and (n & (n - 1) == 0 or n % 1000 == 0):  # libFuzzer exits without atexit
        KNOWN_LOG.write_text(json.dumps(KNOWN_HITS))
    return f"known:{name}"


def check(ok: bool, message: str) -> None:
    if not ok:
        raise HarnessFailure(message)


def outcome(exc: BaseException) -> str:
    """A short, digit-free label of an expected error, used by the mutate engine as feedback."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "Q", str(exc))
    return f"{type(exc).__name__}:{re.sub(r'[0-9]+', '#', text)[:48]}"


def chunks(data: bytes, mode: int) -> list[bytes]:
    """Split `data` the way a socket might deliver it: whole (mode 0), byte by byte (1), or
    pseudo-random sizes derived from `mode` (odd: sizes around record boundaries)."""
    if mode == 0 or not data:
        return [data]
    if mode == 1:  # byte by byte (the first 512 bytes: enough for every header), then in 97s
        head = [data[i : i + 1] for i in range(min(len(data), 512))]
        return head + [data[i : i + 97] for i in range(512, len(data), 97)]
    rnd = random.Random(mode)
    out, pos = [], 0
    while pos < len(data):
        n = (
            rnd.choice((1, 2, 3, 5, 17, 63, 64, 65, 2047, 2048, 4095, 4096, 4114, 4130, 8192))
            if mode & 1
            else rnd.randint(1, 300)
        )
        out.append(data[pos : pos + n])
        pos += n
    return out


@dataclass
class Target:
    name: str
    one: Callable[[bytes], str | None]
    seeds: Callable[[], list[bytes]]
    max_len: int = 4096
    tokens: tuple[bytes, ...] = ()
    doc: str = ""


# =============================================================================== key material
def _identity(tag: bytes) -> IdentityKey:
    return IdentityKey.generate(SeededRng(b"fuzz identity " + tag))


def make_descriptor(
    k: int,
    *,
    published: int = T0,
    dht_contact: tuple[str, int] | None = None,
    exit_policy: str = "",
    family: Iterable[bytes] = (),
    addresses: Iterable[tuple[str, int]] | None = None,
    nickname: str | None = None,
) -> tuple[IdentityKey, RelayDescriptor]:
    rng = SeededRng(b"fuzz relay %d" % k)
    identity, onion = IdentityKey.generate(rng), OnionKey.generate(rng)
    cert = OnionKeyCert.issue(identity, onion.public, published - HOUR, published + 7 * 24 * HOUR)
    desc = RelayDescriptor.create(
        identity=identity,
        onion_cert=cert,
        nickname=nickname or f"fuzz{k}",
        link_addresses=list(addresses or [(f"198.{51 + k}.100.{k + 1}", 9001)]),
        dht_contact=dht_contact,
        exit_policy=exit_policy,
        bandwidth=1_000_000 + k,
        family=family,
        published=published,
    )
    return identity, desc


_DESC_CACHE: dict[str, list[tuple[IdentityKey, RelayDescriptor]]] = {}


def descriptors() -> list[tuple[IdentityKey, RelayDescriptor]]:
    """A handful of valid descriptors exercising every optional field."""
    if "all" not in _DESC_CACHE:
        fam_a, fam_b = _identity(b"family a").public, _identity(b"family b").public
        _DESC_CACHE["all"] = [
            make_descriptor(0),
            make_descriptor(1, exit_policy=DEFAULT_EXIT_POLICY, dht_contact=("127.0.0.11", 7001)),
            make_descriptor(
                2,
                exit_policy="accept 127.0.0.0/8:*; reject6 [::1]:80; accept [2001:db8::]/32:443,8000-8080",
                dht_contact=("::1", 7002),
                family=sorted([fam_a, fam_b]),
                addresses=[("203.0.113.7", 443), ("2001:db8::7", 9001), ("192.0.2.9", 1)],
            ),
            make_descriptor(3, exit_policy="accept *:*", dht_contact=("127.0.0.13", 7003)),
            make_descriptor(3, published=T0 + 30, exit_policy="reject *:*", dht_contact=("127.0.0.13", 7003)),
            make_descriptor(4, dht_contact=("127.0.0.14", 7004), nickname="A" * 19),
        ]
    return _DESC_CACHE["all"]


# =============================================================================== 1. link
LINK_ID = _identity(b"link responder")
MAX_LINK_BUFFER = MAX_RECORD_LEN  # a record of 64 cells under the suite with the longest tag
ONLY_CHACHA = frozenset({SUITE_CHACHA20_POLY1305})


def _responder(suites: frozenset[int] | None = None) -> LinkProtocol:
    return LinkProtocol(
        LinkRole.RESPONDER, SeededRng(b"fuzz link responder"), identity=LINK_ID, suites=suites
    )


def _initiator(suites: frozenset[int] | None = None) -> LinkProtocol:
    link = LinkProtocol(
        LinkRole.INITIATOR, SeededRng(b"fuzz link initiator"), expected_identity=LINK_ID.public, suites=suites
    )
    link.initiate()
    return link


def _open_pair(suites: frozenset[int] | None = None) -> tuple[LinkProtocol, LinkProtocol]:
    """Both ends on this machine's preferred suite, or on `suites` (ChaCha20-Poly1305 only)."""
    ini, resp = _initiator(suites), _responder(suites)
    resp.receive_data(ini.data_to_send())
    ini.receive_data(resp.data_to_send())
    assert ini.state is resp.state is LinkState.OPEN
    return ini, resp


def _cells_from(stream: bytes) -> tuple[list[list[bytes]], bytes]:
    """Trusted-records layout: repeated [u8 k][k cells]; cell = circ_id u32 | cmd u8 | u8 n | n bytes
    (zero-padded to a full cell).  k % 65 == 0 ends the records: the rest is raw bytes."""
    records: list[list[bytes]] = []
    pos, total = 0, 0
    while pos < len(stream) and total < 2 * MAX_CELLS_PER_RECORD:
        k = stream[pos] % (MAX_CELLS_PER_RECORD + 1)
        pos += 1
        if k == 0:
            return records, stream[pos:]
        cells = []
        for _ in range(k):
            head = stream[pos : pos + 5].ljust(5, b"\x00")
            n = stream[pos + 5] if pos + 5 < len(stream) else 0
            body = stream[pos + 6 : pos + 6 + n]
            pos += 6 + n
            cells.append((head + body).ljust(CELL_LEN, b"\x00"))
        records.append(cells)
        total += k
    return records, b""


def _feed_link(link: LinkProtocol, pieces: list[bytes]) -> tuple[list[object], str | None]:
    events: list[object] = []
    for piece in pieces:
        try:
            got = link.receive_data(piece)
        except OnionmeshError as exc:
            return events, outcome(exc)
        for ev in got:
            check(isinstance(ev, LinkEstablished | Cell), f"unexpected link event {ev!r}")
        events += got
        check(link.buffered_input <= MAX_LINK_BUFFER, f"link buffers {link.buffered_input} bytes")
        link.data_to_send()
    return events, None


def _link_one(role: LinkRole, data: bytes) -> str | None:
    """Layout: mode u8 | stream.  mode bit 7 clear: `stream` is fed raw (after initiate() for the
    initiator), split by chunks(mode & 0x7f).  Bit 7 set: an honest handshake first, then `stream`
    read as trusted records (see _cells_from), encrypted by the honest peer and fed, chunked; with
    bit 6 also set both ends use ChaCha20-Poly1305 records, else this machine's preferred suite."""
    if not data:
        return None
    mode, stream = data[0], data[1:]
    if not mode & 0x80:
        link = _responder() if role is LinkRole.RESPONDER else _initiator()
        if role is LinkRole.INITIATOR:
            check(len(link.data_to_send()) == 64, "msg1 is not 64 bytes")
        events, err = _feed_link(link, chunks(stream, mode & 0x7F))
        return err or f"ok:{len(events) > 0}"
    ini, resp = _open_pair(ONLY_CHACHA if mode & 0x40 else None)
    link, peer = (resp, ini) if role is LinkRole.RESPONDER else (ini, resp)
    records, raw = _cells_from(stream)
    wire, sent = b"", []
    for cells in records:
        peer.send_cells(cells)
        sent += cells
        wire += peer.data_to_send()
    events, err = _feed_link(link, chunks(wire + raw, mode & 0x7F))
    got = [c for c in events if isinstance(c, Cell)]
    for cell, raw_cell in zip(got, sent, strict=False):
        check(cell.encode() == raw_cell, "a record decrypted to other cells than were sent")
    if err is None:
        check(len(got) == len(sent), "cells lost in honest records")
    return err or "ok"


def _link_seeds(role: LinkRole) -> list[bytes]:
    ini, resp = _initiator(), _responder()
    msg1 = ini.data_to_send()
    resp.receive_data(msg1)
    msg2 = resp.data_to_send()
    ini.receive_data(msg2)
    cells = [
        Cell(0x8000_0001, CellCommand.CREATE, create_payload(2, bytes(range(84)))).encode(),
        Cell(0x8000_0001, CellCommand.RELAY, bytes(range(256)) * 7).encode(),
        Cell(7, CellCommand.DESTROY, b"\x03").encode(),
    ]
    peer = ini if role is LinkRole.RESPONDER else resp
    peer.send_cells(cells[:1])
    rec1 = peer.data_to_send()
    peer.send_cells(cells[1:])
    rec2 = peer.data_to_send()
    hello = msg1 if role is LinkRole.RESPONDER else msg2
    trusted = (
        b"\x03" + b"".join(c[:5] + bytes([16]) + c[5:21] for c in cells) + b"\x01" + cells[0][:5] + b"\x00"
    )
    return [
        b"\x00" + hello,
        b"\x00" + hello + rec1 + rec2,
        b"\x01" + hello + rec1,
        b"\x06" + hello + rec1 + rec2,
        b"\x07" + hello + rec2[:100],
        b"\x00" + hello[:40],
        b"\x00" + b"GET / HTTP/1.1\r\n\r\n",
        b"\x00" + bytes(len(hello)) + rec1,
        b"\x80" + trusted,
        b"\x81" + trusted,
        b"\xc0" + trusted,
        b"\xc1" + trusted,
        b"\x85" + trusted + b"\x00" + rec1[:2] + b"\xff" * 20,
        b"\x80" + b"\x01" + b"\x00\x00\x00\x01\x63\x00",
    ]


# =============================================================================== 2. cells
def _cell_one(data: bytes) -> str | None:
    """Layout: sel u8 | payload.  sel%4: 0 Cell.decode(raw), 1 Cell.decode(padded/cut to CELL_LEN),
    2 parse_create, 3 parse_created."""
    if not data:
        return None
    sel, payload = data[0] % 4, data[1:]
    try:
        if sel <= 1:
            if sel == 1:
                payload = payload[:CELL_LEN].ljust(CELL_LEN, b"\x00")
            cell = Cell.decode(payload)
            check(cell.encode() == payload, "Cell.decode/encode is not a round trip")
            return f"cell:{cell.command.name}"
        if sel == 2:
            htype, hdata = parse_create(payload)
            enc = create_payload(htype, hdata)
            check(payload.startswith(enc), "parse_create does not match create_payload")
            return "create"
        hdata = parse_created(payload)
        check(payload.startswith(created_payload(hdata)), "parse_created does not match created_payload")
        return "created"
    except RemoteProtocolError as exc:
        return outcome(exc)


def _cell_seeds() -> list[bytes]:
    cells = [
        Cell(0x8000_0001, CellCommand.CREATE, create_payload(2, bytes(84))),
        Cell(5, CellCommand.CREATED, created_payload(bytes(64))),
        Cell(5, CellCommand.RELAY, bytes(range(256)) * 4),
        Cell(5, CellCommand.DESTROY, b"\x09"),
        Cell(0, CellCommand.PADDING),
    ]
    out = [b"\x00" + c.encode() for c in cells] + [b"\x01" + c.encode()[:40] for c in cells]
    out += [
        b"\x02" + create_payload(2, bytes(84)),
        b"\x02" + create_payload(0xFFFF, b""),
        b"\x02\x00\x02\xff\xff",
    ]
    out += [b"\x03" + created_payload(bytes(64)), b"\x03\x00", b"\x03\x00\x05abc"]
    return out


# =============================================================================== 3. relay messages
BODY_CODECS: tuple[type, ...] = (
    rm.Begin,
    rm.Connected,
    rm.End,
    rm.Resolve,
    rm.Resolved,
    rm.Extend,
    rm.Extended,
    rm.Sendme,
    rm.Truncated_,
)
BODY_FOR_COMMAND = {
    rm.RelayCommand.BEGIN: rm.Begin,
    rm.RelayCommand.CONNECTED: rm.Connected,
    rm.RelayCommand.END: rm.End,
    rm.RelayCommand.RESOLVE: rm.Resolve,
    rm.RelayCommand.RESOLVED: rm.Resolved,
    rm.RelayCommand.EXTEND: rm.Extend,
    rm.RelayCommand.EXTENDED: rm.Extended,
    rm.RelayCommand.SENDME: rm.Sendme,
    rm.RelayCommand.TRUNCATED: rm.Truncated_,
}


def _body_roundtrip(codec: type, value: object) -> None:
    enc = value.encode()  # type: ignore[attr-defined]
    again = codec.decode(enc)  # type: ignore[attr-defined]
    check(again.encode() == enc, f"{codec.__name__}: encode(decode(encode(x))) != encode(x)")


def _relay_one(data: bytes) -> str | None:
    """Layout: sel u8 | bytes.  sel%10 == 0: RelayMessage.decode_plain (bytes padded/cut to CELL_PAYLOAD_LEN
    unless sel bit 7), then the body codec of its command; else body codec BODY_CODECS[sel%10-1]."""
    if not data:
        return None
    sel, body = data[0], data[1:]
    try:
        if sel % 10 == 0:
            if not sel & 0x80:
                body = body[:CELL_PAYLOAD_LEN].ljust(CELL_PAYLOAD_LEN, b"\x00")
            msg = rm.RelayMessage.decode_plain(body)
            check(rm.RelayMessage.decode_plain(msg.encode_plain()) == msg, "decode_plain round trip")
            codec = BODY_FOR_COMMAND.get(msg.command)
            if codec is None:
                return f"plain:{msg.command.name}"
            _body_roundtrip(codec, codec.decode(msg.body))
            return f"plain+body:{msg.command.name}"
        codec = BODY_CODECS[sel % 10 - 1]
        _body_roundtrip(codec, codec.decode(body))
        return f"body:{codec.__name__}"
    except RemoteProtocolError as exc:
        return outcome(exc)


def _relay_seeds() -> list[bytes]:
    ident = bytes(range(32))
    bodies = [
        rm.Begin("example.com", 443),
        rm.Begin("192.0.2.1", 80, rm.BeginFlags.IPV4_NOT_OK),
        rm.Begin("2001:db8::1", 22),
        rm.Connected("192.0.2.1", 300),
        rm.Connected(None),
        rm.Connected("2001:db8::2", 60),
        rm.End(rm.EndReason.DONE),
        rm.Resolve("example.org"),
        rm.Resolve("192.0.2.5"),
        rm.Resolved(
            (
                (rm.ResolvedType.IPV4, "192.0.2.1", 60),
                (rm.ResolvedType.IPV6, "2001:db8::3", 60),
                (rm.ResolvedType.HOSTNAME, "host.example", 10),
                (rm.ResolvedType.ERROR_TRANSIENT, "", 0),
            )
        ),
        rm.Extend((("192.0.2.1", 9001), ("2001:db8::1", 9001)), ident, 2, bytes(84)),
        rm.Extended(bytes(64)),
        rm.Sendme(1, bytes(16)),
        rm.Sendme(),
        rm.Truncated_(8),
    ]
    out = []
    for value in bodies:
        idx = BODY_CODECS.index(type(value)) + 1
        out.append(bytes([idx]) + value.encode())
        command = next(c for c, k in BODY_FOR_COMMAND.items() if k is type(value))
        sid = 0 if command in rm.CIRCUIT_COMMANDS else 7
        out.append(b"\x00" + rm.RelayMessage(command, sid, value.encode()).encode_plain())
    out.append(b"\x00" + rm.RelayMessage(rm.RelayCommand.DATA, 3, b"hello").encode_plain(b"nonce"))
    out.append(b"\x00" + rm.RelayMessage(rm.RelayCommand.DROP, 0).encode_plain())
    out.append(b"\x80" + rm.RelayMessage(rm.RelayCommand.DATA, 3, b"x" * 100).encode_plain()[:200])
    return out


# =============================================================================== 4. SOCKS
def _socks_run(data: bytes, pieces: list[bytes], socks4: bool, auth: bool) -> tuple[object, ...]:
    server = SocksServer(allow_socks4=socks4, require_auth=auth)
    events, out = [], b""
    for piece in pieces:
        server.receive_data(piece)
        while (ev := server.next_event()) is not None:
            events.append(ev)
        out += server.data_to_send()
        check(server.buffered <= MAX_BUFFER, f"SOCKS buffers {server.buffered} bytes")
    check(len(events) <= 1, f"more than one SOCKS event: {events!r}")
    if events and isinstance(events[0], SocksRequest):
        server.reply(SocksReply.SUCCEEDED)
        out += server.data_to_send()
        server.receive_data(b"after")
        check(server.next_event() is None, "event after the request")
    return tuple(events), out, server.leftover, server.state


def _socks_one(data: bytes) -> str | None:
    """Layout: mode u8 | client bytes.  mode bit0: SOCKS4 disabled, bit1: auth required, bits
    2..7: chunking (multiples of 32: byte by byte).  Invariants: never raises, one event at most,
    buffer bounded, and chunked feeding gives exactly what one whole feed gives (module docstring)."""
    if not data:
        return None
    mode, stream = data[0], data[1:]
    socks4, auth = not mode & 1, bool(mode & 2)
    whole = _socks_run(stream, [stream], socks4, auth)
    # Byte by byte for one mode in eight: SocksServer re-parses its whole buffer on every call
    # (quadratic, README "Findings"), so it is the costly split.
    m = 1 if (mode >> 2) % 8 == 0 else mode >> 2
    split = _socks_run(stream, chunks(stream, m), socks4, auth)
    check(split == whole, f"chunking (mode {m}) changes SOCKS results: {whole!r} vs {split!r}")
    ev = whole[0][0] if whole[0] else None
    return f"{type(ev).__name__}:{getattr(ev, 'reason', '')}{getattr(ev, 'command', '')}"


def _socks_seeds() -> list[bytes]:
    s5 = [
        b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.com\x01\xbb",
        b"\x05\x02\x00\x02" + b"\x01\x04user\x04pass" + b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50GET",
        b"\x05\x01\x00" + b"\x05\xf0\x00\x03\x0bexample.com\x00\x00",
        b"\x05\x01\x00" + b"\x05\xf1\x00\x04" + bytes(15) + b"\x01\x00\x00",
        b"\x05\x01\x00" + b"\x05\xf1\x00\x03\x07" + b"1.2.3.4" + b"\x00\x00",
        b"\x05\x01\x00" + b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00",
        b"\x05\x01\x02" + b"\x01\x00\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16",
        b"\x05\x00",
        b"\x05\x01\xff",
    ]
    s4 = [
        b"\x04\x01\x00\x50\xc0\x00\x02\x01user\x00",
        b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00data",
        b"\x04\xf0\x00\x00\x00\x00\x00\x07id\x00host\x00",
        b"\x04\x02\x00\x50\x01\x02\x03\x04\x00",
    ]
    other = [b"GET http://x/ HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00", b""]
    return [bytes([m]) + s for s in s5 + s4 + other for m in (0, 5, 2)]


# =============================================================================== 5. descriptors
def _descriptor_one(data: bytes) -> str | None:
    """Layout: the descriptor bytes, verified at NOW (inside every seed's validity window).
    RelayDescriptor.decode may raise RemoteProtocolError only; decode_and_verify OnionmeshError."""
    try:
        desc = RelayDescriptor.decode(data)
    except RemoteProtocolError as exc:
        return outcome(exc)
    check(desc.encode() == data, "decode accepted a non-canonical encoding")
    # Values a client derives from any decoded descriptor must not raise either.
    _ = (desc.fingerprint, desc.dht_key, desc.usable_until, desc.is_exit)
    exit_accepts_port(desc, 80)
    exit_accepts_port(desc, None)
    try:
        decode_and_verify(data, NOW)
    except OnionmeshError as exc:
        return outcome(exc)
    return "verified"


def _descriptor_seeds() -> list[bytes]:
    out = [d.encode() for _, d in descriptors()]
    out.append(descriptors()[1][1].encode()[:-64] + bytes(64))  # bad signature
    return out


def _descriptor_file_one(data: bytes) -> str | None:
    """Layout: mode u8 | rest.  mode bit0 clear: `rest` as text (UTF-8, bad bytes escaped); set:
    `rest` split on b"\\x00DSC" into raw descriptors, base64'd into a directory file whose version
    and extras come from mode bits 1..3."""
    if not data:
        return None
    mode, rest = data[0], data[1:]
    if not mode & 1:
        text = rest.decode("utf-8", "surrogateescape")
    else:
        entries: list[object] = [base64.b64encode(p).decode() for p in rest.split(b"\x00DSC")]
        if mode & 2:
            entries.append(mode)
        if mode & 4:
            entries.append(rest[:20].decode("latin-1"))
        version: object = 1 if not mode & 8 else [1, True, 1.0, "1", None][mode % 5]
        text = json.dumps({"version": version, "descriptors": entries})
    try:
        descs, errors = decode_descriptor_file(text, NOW)
    except OnionmeshError as exc:
        return outcome(exc)
    check(isinstance(descs, list) and isinstance(errors, list), "bad return type")
    check(len({d.identity_pk for d in descs}) == len(descs), "two descriptors for one identity kept")
    for d in descs:
        decode_and_verify(d.encode(), NOW)
    return f"ok:{len(descs)}:{len(errors)}"


def _descriptor_file_seeds() -> list[bytes]:
    descs = [d for _, d in descriptors()]
    text = encode_descriptor_file(descs)
    raws = [d.encode() for d in descs]
    return [
        b"\x00" + text.encode(),
        b"\x00" + encode_descriptor_file(descs[:1]).encode(),
        b"\x00" + b'{"version": 1, "descriptors": []}',
        b"\x00" + b'{"version": 1, "descriptors": ["AAAA", 1, null]}',
        b"\x01" + b"\x00DSC".join(raws),
        b"\x01" + raws[3] + b"\x00DSC" + raws[4] + b"\x00DSC" + raws[3],
        b"\x07" + raws[0],
        b"\x09" + raws[1],
    ]


# =============================================================================== 6a. DHT store
def _store_one(data: bytes) -> str | None:
    """Layout: msgpack.  A list of [key, value] pairs is offered in order; one [key, value] pair
    is offered; anything else is offered as both key and value.  The store (max 3 entries) must
    answer a StoreResult and never raise, whatever the decoded objects are."""
    try:
        obj = umsgpack.unpackb(data)
    except Exception as exc:  # umsgpack's own errors: not onionmesh's parser
        return "msgpack:" + type(exc).__name__
    if isinstance(obj, list) and obj and all(isinstance(p, list) and len(p) == 2 for p in obj):
        offers = [tuple(p) for p in obj]
    elif isinstance(obj, list) and len(obj) == 2:
        offers = [tuple(obj)]
    else:
        offers = [(obj, obj)]
    store = DescriptorStore(lambda: NOW, max_entries=3)
    results = []
    for key, value in offers:
        result = store.offer(key, value)
        check(isinstance(result, StoreResult), f"offer returned {result!r}")
        results.append(result.value)
        check(len(store) <= 3, "store exceeded max_entries")
        if result is StoreResult.STORED:
            check(store.get(key) == value, "stored value not returned")
    list(store)
    store.iter_older_than(0)
    return ",".join(results)


def _store_seeds() -> list[bytes]:
    pairs = [[d.dht_key, d.encode()] for _, d in descriptors()]
    return [
        umsgpack.packb(pairs[0]),
        umsgpack.packb(pairs),
        umsgpack.packb([pairs[3], pairs[4], pairs[3], pairs[4]]),
        umsgpack.packb([pairs[0][0], pairs[1][1]]),
        umsgpack.packb([pairs[0][0], "text"]),
        umsgpack.packb([[1, 2], {"a": b"b"}]),
        umsgpack.packb(pairs[1][1]),
        umsgpack.packb([pairs[0][0], pairs[0][1][:-1] + b"\x00"]),
    ]


# =============================================================================== 6b. DHT datagrams
_DHT_PEERS = [(2, 7002), (1, 7001), (3, 7003), (5, 7004)]  # descriptor index -> its dht_contact port
_ADDRS = [
    ("127.0.0.11", 7001),
    ("::1", 7002),
    ("127.0.0.13", 7003),
    ("127.0.0.14", 7004),
    ("10.9.8.7", 65535),
]
_DHT_LOOP: asyncio.AbstractEventLoop | None = None


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((bytes(data), addr))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def _loop() -> asyncio.AbstractEventLoop:
    global _DHT_LOOP
    if _DHT_LOOP is None:
        _DHT_LOOP = asyncio.new_event_loop()
        _DHT_LOOP.set_exception_handler(lambda loop, ctx: _LOOP_ERRORS.append(ctx))
    return _DHT_LOOP


_LOOP_ERRORS: list[dict] = []


def _dht_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """[u8 kind][u8 addr][u16 len][payload]... (a short tail is one last record)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((data[pos], data[pos + 1], data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


async def _dht_session(data: bytes) -> str:
    from kademlia.node import Node

    from onionmesh.runtime.dht.protocol import OnionmeshDhtProtocol

    own_id, own_desc = descriptors()[0]
    store = DhtStorage(lambda: NOW)  # what every DHT node stores with: relay and onion-service records
    proto = OnionmeshDhtProtocol(
        Node(node_id_for(own_id.public), "127.0.0.1", 7000),
        store,
        20,
        lambda: (own_desc.encode(), lambda nonce: sign_hello(own_id, nonce)),
        clock=lambda: NOW,
    )
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]

    def with_token(datagram: bytes, addr: tuple[str, int]) -> bytes:
        """A REQUEST whose token field is all 0xff gets the valid token for its source."""
        if datagram[:1] == b"\x02" and datagram[21:37] == b"\xff" * 16:
            return datagram[:21] + proto.address_check.mint(addr, time.monotonic()) + datagram[37:]
        return datagram

    for kind, addr_sel, payload in _dht_records(data):
        kind %= 4
        addr = _ADDRS[addr_sel % len(_ADDRS)]
        requests = [(d, a) for d, a in transport.sent if d[:1] == b"\x02"]
        if kind == 0:
            datagram = with_token(payload, addr)
        elif kind in (1, 2) and requests:
            req, to = requests[-1] if addr_sel < 128 else requests[addr_sel % len(requests)]
            if addr_sel & 64:
                addr = to
            if kind == 1:
                datagram = b"\x03" + req[1:21] + bytes(16) + payload
            else:  # an honest hello from peer `addr_sel`, answering the request's nonce
                try:
                    _name, args = umsgpack.unpackb(req[37:])
                    nonce = args[0]
                except Exception:
                    continue
                idx, _port = _DHT_PEERS[addr_sel % len(_DHT_PEERS)]
                ident, desc = descriptors()[idx]
                proof = umsgpack.packb([desc.encode(), sign_hello(ident, nonce)])
                datagram = b"\x03" + req[1:21] + bytes(16) + proof
        else:
            datagram = b""
        if datagram:
            proto.datagram_received(datagram, addr)
        for _ in range(3 if kind != 3 else 10):
            await asyncio.sleep(0)
        for a in _ADDRS:
            received, sent = proto.address_check.ledger(a)
            check(sent <= received, f"DHT sent {sent} bytes to unproven {a} that sent {received}")
    check(proto.stats["internal_error"] == 0, "a datagram hit the catch-all (stats['internal_error'])")
    proto.close()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for res in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
            raise res
    return ",".join(sorted(k for k, v in proto.stats.items() if v))


def _dht_one(data: bytes) -> str | None:
    """Layout: records (see _dht_records): kind 0 a raw datagram from one of five addresses; 1 an
    answer (payload after the msg id) to a request the node sent; 2 an honest hello answer to its
    last request; 3 let the loop run.  Nothing may escape datagram_received or the tasks it
    spawns; stats['internal_error'] must stay 0; no unproven address is sent more than it sent.
    A REQUEST whose token field is 16 bytes of 0xff is given the valid token for its source."""
    _LOOP_ERRORS.clear()
    label = _loop().run_until_complete(_dht_session(data))
    check(not _LOOP_ERRORS, f"event loop reported: {_LOOP_ERRORS!r}")
    return label


def _dht_seeds() -> list[bytes]:
    def rec(kind: int, addr: int, payload: bytes) -> bytes:
        return bytes([kind, addr]) + len(payload).to_bytes(2, "big") + payload

    def req(name: str, args: list, proven: bool = True) -> bytes:
        token = b"\xff" * 16 if proven else bytes(16)  # 0xff..: the harness puts in the valid token
        return b"\x02" + bytes(range(20)) + token + umsgpack.packb([name, args])

    descs = descriptors()
    peer_idx, _ = _DHT_PEERS[0]
    peer_id = node_id_for(descs[peer_idx][0].public)
    key = descs[1][1].dht_key
    ping = req("ping", [peer_id])
    seeds = [
        rec(0, 1, ping) + rec(2, 64, b"") + rec(3, 0, b""),
        rec(0, 1, ping) + rec(1, 64, umsgpack.packb([descs[2][1].encode(), bytes(64)])),
        rec(0, 0, req("store", [node_id_for(descs[1][0].public), key, descs[1][1].encode()])),
        rec(0, 1, ping)
        + rec(2, 64, b"")
        + rec(0, 0, req("store", [peer_id, key, descs[1][1].encode()]))
        + rec(3, 0, b""),
        rec(0, 0, req("store", [node_id_for(descs[1][0].public), key, descs[1][1].encode()]))
        + rec(0, 1, ping)
        + rec(2, 64, b"")
        + rec(1, 64, umsgpack.packb(True))
        + rec(3, 0, b""),
        rec(0, 2, req("find_node", [peer_id, key])),
        rec(0, 2, req("find_value", [peer_id, key])),
        rec(0, 0, req("store", [peer_id, key, descs[1][1].encode()]))
        + rec(0, 2, req("find_value", [peer_id, key])),
        rec(0, 3, req("descriptor", [bytes(16)])),
        rec(0, 3, req("ping", [b"short"])),
        rec(0, 3, req("find_value", [peer_id, key], proven=False)),
        rec(0, 4, b"\x03" + bytes(36) + umsgpack.packb(True)),
        rec(0, 4, b"\x02" + bytes(30)),
        rec(0, 1, b"\x02" + bytes(20) + b"\xff" * 16 + b"\xc1"),
        rec(0, 1, b"\x00" + bytes(20) + b"\xc1"),
    ]
    return seeds


# =============================================================================== 7. exit policies
def _policy_one(data: bytes) -> str | None:
    """Layout: flags u8 (bit0: reject_private) | policy text (UTF-8, bad bytes escaped).
    Only PolicyError may escape parse; a parsed policy must print to text that parses back to it
    (when that text is within MAX_POLICY_CHARS), evaluate any address, and summarise consistently
    with allows_port_somewhere.  (Whether it fits a descriptor is checked where policies enter:
    the config target, finding 3.)"""
    if not data:
        return None
    text = data[1:].decode("utf-8", "surrogateescape")
    try:
        policy = ExitPolicy.parse(text, reject_private=bool(data[0] & 1))
    except PolicyError as exc:
        return outcome(exc)
    canonical = str(policy)
    label = f"ok:{min(len(policy.rules), 5)}:{len(canonical.encode()) > MAX_EXIT_POLICY_LEN}"
    if len(canonical) <= MAX_POLICY_CHARS:
        again = ExitPolicy.parse(canonical)
        check(again == policy, f"str() does not round-trip: {text!r} -> {policy} -> {again}")
    for addr in ("192.0.2.1", "10.0.0.1", "::ffff:127.0.0.1", "2001:db8::1", "64:ff9b::a00:1"):
        policy.allows(addr, 80)
    if len(policy.rules) <= 12:
        summary = policy.summary()
        ports = (
            {1, 25, 80, 443, 65535} | {r.port_lo for r in policy.rules} | {r.port_hi for r in policy.rules}
        )
        for port in ports:
            check(
                summary_allows(summary, port) == policy.allows_port_somewhere(port),
                f"summary {summary!r} disagrees on port {port} for {policy}",
            )
    return label


def _policy_seeds() -> list[bytes]:
    texts = [
        DEFAULT_EXIT_POLICY,
        "accept *:*",
        "reject *:*",
        "accept 127.0.0.0/8:*",
        "accept 192.0.2.0/255.255.255.0:80,443,8000-8080",
        "reject6 [2001:db8::]/32:*, accept6 [::1]:22",
        "accept [::ffff:10.0.0.0]/104:80\nreject private:*",
        "reject *4:25; accept *6:1-1024; reject6 private:*",
        "ACCEPT 1.2.3.4/32:65535",
        "accept [64:ff9b::]/96:53 ; reject [fe80::1%eth0]:1",
        "",
        "   ;;\n",
    ]
    return [bytes([f]) + t.encode() for t in texts for f in (0, 1)]


# =============================================================================== 8. control API
_CONTROL: dict[str, object] = {}
COOKIE = bytes(range(32))


def _control_server() -> object:
    if "server" not in _CONTROL:
        from onionmesh.runtime.client.control import ControlServer
        from onionmesh.runtime.client.path_policy import PathPolicy

        relays = [
            make_descriptor(
                10 + i, exit_policy="accept *:*" if i % 2 else "", addresses=[(f"198.{60 + i}.0.1", 9001)]
            )[1]
            for i in range(5)
        ]
        policy = PathPolicy(None, SeededRng(b"fuzz control"))

        class FakeCircuits:
            """CircuitMgr.build up to the network: the real path selection, then 'no route'."""

            async def build(self, *, hops=None, exit_fp=None, via=None, isolation=None, **_kw):
                policy.choose(relays, hops=hops or 3, exit_fp=exit_fp, via=via, avoid=set())
                raise OSError("fuzz harness: no network")

        class FakeNode:
            circuits = FakeCircuits()

        _CONTROL["server"] = ControlServer(FakeNode(), "127.0.0.1", 0, COOKIE)  # type: ignore[arg-type]
        _CONTROL["fps"] = [d.fingerprint for d in relays]
    return _CONTROL["server"]


SESSION = "fuzz-session"  # a browser session the server knows (control.py's login cookie)
LOGIN_TOKEN = "fuzz-token"  # a one-time login token the server knows


async def _control_request(headers: dict[str, str], body: bytes, path: str = "/circuits") -> int | str:
    """One request through the real auth middleware to the real POST /circuits handler."""
    import time

    from aiohttp import web
    from aiohttp.streams import StreamReader
    from aiohttp.test_utils import make_mocked_request

    server = _control_server()
    payload = StreamReader(_MockProto(), 2**16, loop=asyncio.get_running_loop())
    if body:
        payload.feed_data(body)
    payload.feed_eof()
    if "template" not in _CONTROL:  # make_mocked_request builds a dozen mocks: once is enough
        template = make_mocked_request(
            "POST", "/circuits", headers={"Content-Type": "application/json"}, client_max_size=64 * 1024
        )
        # Its protocol mock records every access (clone() reads three properties): a plain object
        # instead, or a million inputs would keep a million call records.
        template._protocol = _PlainProtocol()
        _CONTROL["template"] = template
    request = _CONTROL["template"].clone(headers=headers, rel_url=path)  # type: ignore[attr-defined]
    request._payload = payload  # the body of this input (clone() keeps the template's otherwise)
    sessions, tokens = server.logins.sessions, server.logins.tokens  # type: ignore[attr-defined]
    sessions.clear()
    sessions[SESSION] = time.monotonic() + 600
    tokens.clear()
    tokens[LOGIN_TOKEN] = time.monotonic() + 600
    try:
        response = await server._auth(request, server._build)  # type: ignore[attr-defined]
    except web.HTTPException as exc:  # aiohttp turns these into their response (e.g. 413, 302)
        return exc.status
    except LookupError as exc:  # finding 1: unknown charset in Content-Type
        return known("control-unknown-charset", exc, body)
    except RecursionError as exc:  # finding 2: deeply nested JSON
        return known("control-deep-json", exc, body)
    except TypeError as exc:  # finding 4: non-ASCII session cookie, before authentication
        if "non-ASCII" not in str(exc):
            raise
        return known("control-session-cookie-non-ascii", exc, repr(headers).encode())
    return response.status


class _PlainProtocol:
    ssl_context = None
    peername = ("127.0.0.1", 40000)
    sockname = ("127.0.0.1", 9051)
    transport = None


class _MockProto:
    _reading_paused = False

    def pause_reading(self, *args: object, **kw: object) -> None: ...
    def resume_reading(self, *args: object, **kw: object) -> None: ...


def _control_one(data: bytes) -> str | None:
    """Layout: mode u8 | rest.  mode%4 == 3: the Authorization header is rest's first line;
    otherwise the right cookie.  The next lines are, if mode bit 2: the Content-Type header;
    bit 4: the Cookie header (the server knows session "fuzz-session"); bit 5: the query of a
    GET /login (the server knows token "fuzz-token") instead of POST /circuits.  The remainder
    is the body.  Allowed answers: 400, 401, 403, 413 (too large), 415, 502 (the harness's build raises
    OSError after the real path selection) and 302 (login); never an exception."""
    from urllib.parse import quote

    if not data:
        return None
    mode, rest = data[0], data[1:]
    headers = {"Content-Type": "application/json"}
    if mode % 4 == 3:
        line, _, rest = rest.partition(b"\n")
        headers["Authorization"] = line.decode("latin-1")
    else:
        headers["Authorization"] = "Cookie " + COOKIE.hex()
    if mode & 4:
        line, _, rest = rest.partition(b"\n")
        headers["Content-Type"] = line.decode("latin-1")
    if mode & 16:
        line, _, rest = rest.partition(b"\n")
        headers["Cookie"] = line.decode("latin-1")
    path = "/circuits"
    if mode & 32:
        line, _, rest = rest.partition(b"\n")
        path = "/login?" + quote(line, safe="=&;")
    if mode & 8 and rest.startswith(b"{"):  # name real relays so path selection gets further
        fps = _control_server() and _CONTROL["fps"]
        rest = rest.replace(b"FP0", fps[0].encode()).replace(b"FP1", fps[1].encode())  # type: ignore[index]
    status = _loop().run_until_complete(_control_request(headers, rest, path))
    if isinstance(status, str):
        return status
    # 403: a session request without Origin; 415: not application/json (issue 15, item 2)
    check(status in (400, 401, 403, 413, 415, 502, 302), f"{path} answered {status}")
    check(status != 302 or path.startswith("/login"), "302 outside /login")
    return str(status)


def _control_seeds() -> list[bytes]:
    bodies = [
        b"{}",
        b'{"hops": 3}',
        b'{"hops": 1, "exit": "FP1"}',
        b'{"hops": 3, "via": ["FP0"], "exit": "FP1"}',
        b'{"hops": 2, "via": ["FP0", "FP1"]}',
        b'{"hops": 9}',
        b'{"hops": true}',
        b'{"via": "abc"}',
        b'{"exit": 5}',
        b"[1, 2]",
        b"not json",
        b"",
        b'{"hops": 1e400}',
    ]
    out = [bytes([m]) + b for b in bodies for m in (0, 8)]
    out += [b"\x03Cookie 00\n{}", b"\x03Basic abc\n{}", b"\x04application/json; charset=latin-1\n{}"]
    out += [
        b"\x13\nom_session=fuzz-session\n{}",
        b"\x13\nom_session=other; theme=dark\n{}",
        b"\x33\n\ntoken=fuzz-token\n",
        b"\x23\ntoken=fuzz-token&x=1\n",
        b"\x23\ntoken=nope\n",
    ]
    return out


# =============================================================================== 9. config files
_CONFIG_COMMANDS = (None, "relay", "proxy", "testnet")


def _config_one(data: bytes) -> str | None:
    """Layout: command u8 (%4: None, relay, proxy, testnet) | the config file's raw bytes.
    check_file documents no exception for a bad file (it returns "FILE:LINE: problem" strings);
    resolve(command, {}, {}, file) may raise ConfigError only."""
    if not data:
        return None
    from onionmesh.app import config

    if "tmp" not in _CONTROL:
        import tempfile

        _CONTROL["tmp"] = Path(tempfile.mkdtemp(prefix="onionmesh-fuzz-config-")) / "onionmesh.toml"
    path: Path = _CONTROL["tmp"]  # type: ignore[assignment]
    path.write_bytes(data[1:])
    command = _CONFIG_COMMANDS[data[0] % 4]
    try:
        problems = config.check_file(path, command)
    except RuntimeError as exc:  # finding 5: "~user" paths of unknown users
        if "home directory" not in str(exc):
            raise
        return known("config-unknown-user-home", exc, data)
    check(isinstance(problems, list) and all(isinstance(p, str) for p in problems), "check_file result")
    check(all(p.startswith(str(path)) for p in problems), "a problem without its file name")
    if command is not None:
        try:
            values = config.resolve(command, {}, {}, path)
        except config.ConfigError as exc:
            check(bool(exc.problems), "ConfigError without problems")
            return f"{command}:problems"
        check(not problems, f"resolve accepted a file check_file rejects: {problems}")
        check(set(values) == set(config.SCHEMAS[command]), "resolve returned other keys")
        policy = values.get("exit_policy")
        if isinstance(policy, str) and policy.strip():  # finding 3: what config accepts, a relay publishes
            canonical = str(ExitPolicy.parse(policy))
            check(len(canonical.encode()) <= MAX_EXIT_POLICY_LEN, "accepted exit policy too long to publish")
    return f"{command}:{len(problems) > 0}"


def _config_seeds() -> list[bytes]:
    files = [
        b'listen = "127.0.0.1:9001"\ndata_dir = "/tmp/relay"\nnickname = "fuzz1"\n'
        b'exit_policy = "accept *:80,443,1000-2000; reject *:*"\n'
        b'bootstrap = ["127.0.0.1:7001", "[::1]:7002"]\nbandwidth = 1000000\n',
        b'[relay]\nlisten = ["::1", 9001]\ndata_dir = "~/onionmesh"\nadvertise = "192.0.2.1:443"\n'
        b"log_level = 'debug'\nunsafe_logging = true\n",
        b'[proxy]\nsocks = "127.0.0.1:9050"\ncontrol = ":9051"\nhops = 3\ndht_refresh = 60.5\n'
        b'data_dir = "/tmp/client"\nbootstrap_file = "/tmp/contacts"\n',
        b'[testnet]\nrelays = 5\nstate_dir = "state"\nhops = 2\n\n[relay]\nnickname = "x"\n',
        b"hops = 9\nrelay = 1\n[rel]\nnicknam = 'a'\n[proxy.socks]\nx = 1\n",
        b'a.b."c" = 1\n[[relay]]\nlisten = 5\n',
        b"not toml = = =",
        b"\xff\xfe",
        b"",
    ]
    return [bytes([c]) + f for f in files for c in range(4)]


def config_available() -> bool:
    try:
        from onionmesh.app import config
    except ImportError:
        return False
    return hasattr(config, "check_file")


# =============================================================================== registry
_POLICY_TOKENS = tuple(
    t.encode()
    for t in (
        "accept ", "reject ", "accept6 ", "reject6 ", "private", "*", "*4", "*6", ":", "/", "[", "]",
        "::ffff:", "64:ff9b::", "0.0.0.0", "255.255.255.0", ",", ";", "\n", "-", "65535", "65536",
        "/128", "/96", "/0", "%", "::", "1.2.3.4",
    )
)  # fmt: skip
_JSON_TOKENS = tuple(
    t.encode()
    for t in (
        '"hops"', '"via"', '"exit"', "FP0", "FP1", "true", "null", "[", "]", "{", "}", ",", ":", "1e999",
        "-0", '"\\ud800"', "NaN", "Infinity", "[" * 64,
    )
)  # fmt: skip
_CONFIG_TOKENS = (
    b"[proxy]", b"[relay]", b"[testnet]", b" = ", b'"', b"'", b"\n", b"true", b"[", b"]", b"data_dir",
    b"listen", b"bootstrap", b"exit_policy", b"~", b":9050", b"[::1]:",
)  # fmt: skip
_FILE_TOKENS = (b"\x00DSC", b'"version"', b'"descriptors"', b'"', b"[", b"]", b"{", b"}", b"null")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "link_responder",
            lambda d: _link_one(LinkRole.RESPONDER, d),
            lambda: _link_seeds(LinkRole.RESPONDER),
            max_len=12000,
            doc="LinkProtocol RESPONDER.receive_data",
        ),
        Target(
            "link_initiator",
            lambda d: _link_one(LinkRole.INITIATOR, d),
            lambda: _link_seeds(LinkRole.INITIATOR),
            max_len=12000,
            doc="LinkProtocol INITIATOR (after initiate()).receive_data",
        ),
        Target("cell", _cell_one, _cell_seeds, max_len=2100, doc="Cell.decode, parse_create, parse_created"),
        Target(
            "relay_msg", _relay_one, _relay_seeds, max_len=2100, doc="decode_plain and the 9 body decoders"
        ),
        Target("socks", _socks_one, _socks_seeds, max_len=800, doc="SocksServer receive_data/next_event/..."),
        Target(
            "descriptor", _descriptor_one, _descriptor_seeds, max_len=2100, doc="decode, decode_and_verify"
        ),
        Target(
            "descriptor_file",
            _descriptor_file_one,
            _descriptor_file_seeds,
            max_len=8192,
            tokens=_FILE_TOKENS,
            doc="decode_descriptor_file",
        ),
        Target(
            "dht_store", _store_one, _store_seeds, max_len=4096, doc="DescriptorStore.offer (msgpack objects)"
        ),
        Target(
            "dht_protocol",
            _dht_one,
            _dht_seeds,
            max_len=6000,
            doc="OnionmeshDhtProtocol.datagram_received/_solve_datagram and spawned tasks",
        ),
        Target(
            "exit_policy",
            _policy_one,
            _policy_seeds,
            max_len=4200,
            tokens=_POLICY_TOKENS,
            doc="ExitPolicy.parse",
        ),
        Target(
            "control",
            _control_one,
            _control_seeds,
            max_len=8192,
            tokens=_JSON_TOKENS,
            doc="POST /circuits (auth middleware + JSON validation + path selection)",
        ),
        Target(
            "config",
            _config_one,
            _config_seeds,
            max_len=4096,
            tokens=_CONFIG_TOKENS,
            doc="app.config.check_file and resolve",
        ),
    )
}


# =============================================================================== mutate engine
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 16, 32, 64, 65, 255, 2048, 4091)


def mutate(
    data: bytes, rnd: random.Random, corpus: list[bytes], tokens: tuple[bytes, ...], max_len: int
) -> bytes:
    """One to four libFuzzer-style mutations."""
    buf = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rnd.randrange(11)
        n = len(buf)
        if op == 0 and n:
            i = rnd.randrange(n)
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:
            buf[rnd.randrange(n)] = rnd.randrange(256)
        elif op == 2:
            i = rnd.randrange(n + 1)
            buf[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 1, 2, 4, 16))))
        elif op == 3 and n:
            i = rnd.randrange(n)
            del buf[i : i + rnd.choice((1, 1, 2, 4, 16, 128))]
        elif op == 4 and n:
            i = rnd.randrange(n)
            j = rnd.randrange(i, min(n, i + 256) + 1)
            k = rnd.randrange(n + 1)
            buf[k:k] = buf[i:j]
        elif op == 5 and n >= 2:
            i = rnd.randrange(n - 1)
            width = rnd.choice((1, 2, 4)) if n - i >= 4 else 1
            v = rnd.choice(INTERESTING) % (1 << (8 * width))
            buf[i : i + width] = v.to_bytes(width, rnd.choice(("big", "little")))
        elif op == 6 and corpus:
            other = rnd.choice(corpus)
            if other:
                i, j = rnd.randrange(n + 1), rnd.randrange(len(other))
                buf = buf[:i] + other[j:]
        elif op == 7 and n:
            del buf[rnd.randrange(n) :]
        elif op == 8 and tokens:
            i = rnd.randrange(n + 1)
            buf[i:i] = rnd.choice(tokens)
        elif op == 9 and n:
            i = rnd.randrange(n)
            buf[i] = (buf[i] + rnd.choice((-1, 1, -16, 16))) % 256
        elif op == 10 and n:
            i = rnd.randrange(n)
            j = rnd.randrange(i, min(n, i + 64) + 1)
            buf[i:j] = bytes(buf[i:j])[::-1] if rnd.random() < 0.5 else bytes(j - i)
    return bytes(buf[:max_len])


@dataclass
class MutateStats:
    inputs: int = 0
    corpus: int = 0
    outcomes: set[str] = field(default_factory=set)


def mutate_engine(
    target: Target,
    inputs: int,
    *,
    seed: int = 0,
    crash_dir: Path | None = None,
    progress: Callable[[MutateStats], None] | None = None,
    max_corpus: int = 4096,
) -> MutateStats:
    """Run `inputs` inputs (the seeds first, then mutants); raise on the first bug found."""
    rnd = random.Random(seed)
    seeds = [s[: target.max_len] for s in target.seeds()]
    corpus = list(seeds)
    stats = MutateStats()
    for i in range(inputs):
        data = (
            seeds[i]
            if i < len(seeds)
            else mutate(rnd.choice(corpus), rnd, corpus, target.tokens, target.max_len)
        )
        try:
            label = target.one(data)
        except BaseException:
            if crash_dir is not None:
                crash_dir.mkdir(parents=True, exist_ok=True)
                path = crash_dir / f"crash-{target.name}-{i}"
                path.write_bytes(data)
                print(f"crash input saved to {path}", file=sys.stderr)
            print(f"CRASH in {target.name} on input #{i}: {data.hex()}", file=sys.stderr)
            raise
        stats.inputs += 1
        if label is not None and label not in stats.outcomes:
            stats.outcomes.add(label)
            if len(corpus) < max_corpus:
                corpus.append(data)
        if progress is not None and stats.inputs % 50_000 == 0:
            stats.corpus = len(corpus)
            progress(stats)
    stats.corpus = len(corpus)
    return stats


def _register_bridge_target() -> None:
    """The bridge parsers have their own module (tests/fuzz/bridge_targets.py)."""
    from tests.fuzz.bridge_targets import BRIDGE_TARGET

    TARGETS[BRIDGE_TARGET.name] = BRIDGE_TARGET


_register_bridge_target()
