"""Tests for onionmesh.wire.relay_msg: the relay header, its stream-id rules and every body codec.

Two families of property tests: generated values round-trip through encode/decode, and
arbitrary bytes fed to every decoder raise nothing but `RemoteProtocolError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.buffer import Buffer
from onionmesh.wire.cell import CELL_PAYLOAD_LEN
from onionmesh.wire.relay_address import AddrType, pull_address, push_address
from onionmesh.wire.relay_msg import (
    CIRCUIT_COMMANDS,
    RELAY_BODY_MAX,
    RELAY_HEADER_LEN,
    STREAM_COMMANDS,
    TAG_LEN,
    Begin,
    BeginFlags,
    Connected,
    End,
    EndReason,
    Extend,
    Extended,
    LinkSpecType,
    RelayCommand,
    RelayMessage,
    Resolve,
    Resolved,
    ResolvedType,
    Sendme,
    Truncated_,
)

ALL_DECODERS: dict[str, Callable[[bytes], object]] = {
    "Begin": Begin.decode,
    "Connected": Connected.decode,
    "End": End.decode,
    "Resolve": Resolve.decode,
    "Resolved": Resolved.decode,
    "Extend": Extend.decode,
    "Extended": Extended.decode,
    "Sendme": Sendme.decode,
    "Truncated_": Truncated_.decode,
}
IDENTITY = bytes(range(32))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- strategies

PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
hostnames = st.text(PRINTABLE, min_size=1, max_size=255).filter(lambda h: not _is_ip(h))
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
hosts = st.one_of(hostnames, ipv4s, ipv6s)
ports = st.integers(1, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
ascii_text = st.text(st.characters(max_codepoint=0x7F), max_size=255)

begins = st.builds(Begin, hosts | st.none(), ports, st.integers(0, 7).map(BeginFlags))
connecteds = st.builds(Connected, st.one_of(st.none(), hosts), u32)
ends = st.builds(End, st.sampled_from(list(EndReason)))
resolves = st.builds(Resolve, hosts)
answers = st.one_of(
    st.tuples(st.just(ResolvedType.IPV4), ipv4s, u32),
    st.tuples(st.just(ResolvedType.IPV6), ipv6s, u32),
    st.tuples(
        st.sampled_from(
            [ResolvedType.HOSTNAME, ResolvedType.ERROR_TRANSIENT, ResolvedType.ERROR_NONTRANSIENT]
        ),
        ascii_text,
        u32,
    ),
)
resolveds = st.builds(Resolved, st.lists(answers, max_size=12).map(tuple))
extends = st.builds(
    Extend,
    st.lists(st.tuples(st.one_of(ipv4s, ipv6s), ports), min_size=1, max_size=7).map(tuple),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 0xFFFF),
    st.binary(max_size=1500),
)
extendeds = st.builds(Extended, st.binary(max_size=RELAY_BODY_MAX - 2))
sendmes = st.builds(Sendme, st.just(1), st.binary(max_size=255))
truncateds = st.builds(Truncated_, st.integers(0, 255))
ANY_BODY = st.one_of(begins, connecteds, ends, resolves, resolveds, extends, extendeds, sendmes, truncateds)


def _stream_id_for(command: RelayCommand) -> st.SearchStrategy[int]:
    if command in STREAM_COMMANDS:
        return st.integers(1, 0xFFFF)
    if command in CIRCUIT_COMMANDS:
        return st.just(0)
    return st.integers(0, 0xFFFF)  # SENDME: stream or circuit level


relay_messages = st.sampled_from(list(RelayCommand)).flatmap(
    lambda c: st.builds(RelayMessage, st.just(c), _stream_id_for(c), st.binary(max_size=RELAY_BODY_MAX))
)


# --------------------------------------------------------------------------- the relay header


def test_layout_constants() -> None:
    assert TAG_LEN + RELAY_HEADER_LEN + RELAY_BODY_MAX == CELL_PAYLOAD_LEN
    assert RELAY_BODY_MAX == 4074
    assert STREAM_COMMANDS.isdisjoint(CIRCUIT_COMMANDS)
    assert set(RelayCommand) - STREAM_COMMANDS - CIRCUIT_COMMANDS == {RelayCommand.SENDME}


def test_encode_plain_layout() -> None:
    raw = RelayMessage(RelayCommand.DATA, 0x1234, b"hello").encode_plain()
    assert len(raw) == CELL_PAYLOAD_LEN
    assert raw[:TAG_LEN] == bytes(TAG_LEN)
    assert raw[TAG_LEN] == RelayCommand.DATA
    assert raw[TAG_LEN + 1 : TAG_LEN + 3] == b"\x12\x34"
    assert raw[TAG_LEN + 3 : TAG_LEN + 5] == b"\x00\x05"
    assert raw[TAG_LEN + 5 : TAG_LEN + 10] == b"hello"
    assert raw[TAG_LEN + 10 :] == bytes(RELAY_BODY_MAX - 5)


@pytest.mark.parametrize("command", list(RelayCommand))
def test_every_command_round_trips(command: RelayCommand) -> None:
    sid = 0 if command in CIRCUIT_COMMANDS else 77
    msg = RelayMessage(command, sid, b"body \x00 bytes")
    assert RelayMessage.decode_plain(msg.encode_plain()) == msg


@pytest.mark.parametrize("size", [0, 1, RELAY_BODY_MAX - 1, RELAY_BODY_MAX])
def test_body_length_bounds(size: int) -> None:
    msg = RelayMessage(RelayCommand.DATA, 1, b"\x5a" * size)
    decoded = RelayMessage.decode_plain(msg.encode_plain())
    assert decoded.body == msg.body


def test_body_too_long_is_refused_locally() -> None:
    with pytest.raises(ValueError):
        RelayMessage(RelayCommand.DATA, 1, bytes(RELAY_BODY_MAX + 1)).encode_plain()


@pytest.mark.parametrize("length_field", [RELAY_BODY_MAX + 1, RELAY_BODY_MAX + 2, 4096, 0xFFFF])
def test_length_field_too_large_is_a_remote_error(length_field: int) -> None:
    raw = bytearray(RelayMessage(RelayCommand.DATA, 1, b"x").encode_plain())
    raw[TAG_LEN + 3 : TAG_LEN + 5] = length_field.to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError, match="length field"):
        RelayMessage.decode_plain(bytes(raw))


def test_length_field_selects_the_body_and_ignores_padding() -> None:
    raw = bytearray(RelayMessage(RelayCommand.DATA, 1, b"abcdef").encode_plain())
    raw[TAG_LEN + 3 : TAG_LEN + 5] = (3).to_bytes(2, "big")
    assert RelayMessage.decode_plain(bytes(raw)).body == b"abc"


@pytest.mark.parametrize("length", [0, CELL_PAYLOAD_LEN - 1, CELL_PAYLOAD_LEN + 1])
def test_wrong_payload_length_is_a_remote_error(length: int) -> None:
    raw = RelayMessage(RelayCommand.DATA, 1, b"x").encode_plain() + bytes(8)
    with pytest.raises(RemoteProtocolError, match="wrong length"):
        RelayMessage.decode_plain(raw[:length])


@pytest.mark.parametrize("command", [0, *range(max(RelayCommand) + 1, 256)])
def test_unknown_relay_command_is_a_remote_error(command: int) -> None:
    raw = bytearray(RelayMessage(RelayCommand.DATA, 1, b"x").encode_plain())
    raw[TAG_LEN] = command
    with pytest.raises(RemoteProtocolError, match="unknown relay command"):
        RelayMessage.decode_plain(bytes(raw))


@pytest.mark.parametrize("command", sorted(STREAM_COMMANDS))
def test_stream_commands_need_a_stream(command: RelayCommand) -> None:
    with pytest.raises(RemoteProtocolError, match="needs a stream"):
        RelayMessage.decode_plain(RelayMessage(command, 0, b"").encode_plain())
    assert RelayMessage.decode_plain(RelayMessage(command, 0xFFFF, b"").encode_plain()).stream_id == 0xFFFF


@pytest.mark.parametrize("command", sorted(CIRCUIT_COMMANDS))
def test_circuit_commands_must_not_name_a_stream(command: RelayCommand) -> None:
    for sid in (1, 0xFFFF):
        with pytest.raises(RemoteProtocolError, match="must not name a stream"):
            RelayMessage.decode_plain(RelayMessage(command, sid, b"").encode_plain())
    assert RelayMessage.decode_plain(RelayMessage(command, 0, b"").encode_plain()).stream_id == 0


@pytest.mark.parametrize("sid", [0, 1, 0xFFFF])
def test_sendme_may_be_circuit_or_stream_level(sid: int) -> None:
    msg = RelayMessage(RelayCommand.SENDME, sid, Sendme(1, b"d" * 16).encode())
    assert RelayMessage.decode_plain(msg.encode_plain()) == msg


def test_decode_plain_does_not_check_the_tag() -> None:
    # the tag is checked by the layer (is_recognized) before decoding
    raw = b"\xff" * TAG_LEN + RelayMessage(RelayCommand.DROP, 0, b"").encode_plain()[TAG_LEN:]
    assert RelayMessage.decode_plain(raw) == RelayMessage(RelayCommand.DROP, 0, b"")


@given(relay_messages)
def test_relay_message_round_trip_generated(msg: RelayMessage) -> None:
    raw = msg.encode_plain()
    assert len(raw) == CELL_PAYLOAD_LEN
    assert RelayMessage.decode_plain(raw) == msg


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("host", "kind", "decoded"),
    [
        (None, AddrType.NONE, None),
        ("example.com", AddrType.HOSTNAME, "example.com"),
        ("192.0.2.1", AddrType.IPV4, "192.0.2.1"),
        ("2001:db8::1", AddrType.IPV6, "2001:db8::1"),
        ("[2001:db8::1]", AddrType.IPV6, "2001:db8::1"),
        ("2001:0db8:0000::0001", AddrType.IPV6, "2001:db8::1"),
    ],
)
def test_address_encoding(host: str | None, kind: AddrType, decoded: str | None) -> None:
    buf = Buffer()
    push_address(buf, host)
    raw = buf.getvalue()
    assert raw[0] == kind
    assert pull_address(Buffer(raw)) == decoded


@pytest.mark.parametrize("host", ["", "x" * 256, "h\u00e9llo"])
def test_unencodable_hostnames_are_refused_locally(host: str) -> None:
    with pytest.raises(ValueError):
        push_address(Buffer(), host)


def test_longest_hostname() -> None:
    host = "a" * 255
    assert Begin.decode(Begin(host, 80).encode()).host == host


# --------------------------------------------------------------------------- body codecs by hand


@pytest.mark.parametrize(
    "value",
    [
        Begin("example.com", 443),
        Begin("192.0.2.10", 80, BeginFlags(0)),
        Begin("2001:db8::7", 22, BeginFlags.IPV6_OK | BeginFlags.IPV6_PREFERRED),
        Begin("onion.example", 0xFFFF, BeginFlags.IPV4_NOT_OK),
        Begin(None, 443),
        Connected(None),
        Connected("192.0.2.1", 300),
        Connected("2001:db8::1", 0xFFFF_FFFF),
        Connected("host.example", 5),
        End(EndReason.DONE),
        End(EndReason.EXITPOLICY),
        Resolve("example.com"),
        Resolve("192.0.2.1"),
        Resolve("2001:db8::1"),
        Resolved(()),
        Resolved(((ResolvedType.IPV4, "192.0.2.1", 60), (ResolvedType.IPV6, "2001:db8::2", 61))),
        Resolved(((ResolvedType.HOSTNAME, "ptr.example", 1),)),
        Resolved(((ResolvedType.ERROR_TRANSIENT, "", 0), (ResolvedType.ERROR_NONTRANSIENT, "", 0))),
        Extend((("192.0.2.1", 9001),), IDENTITY, 1, bytes(96)),
        Extend((("192.0.2.1", 9001), ("2001:db8::1", 443)), IDENTITY, 0xFFFF, b""),
        Extended(bytes(64)),
        Extended(b""),
        Sendme(),
        Sendme(1, bytes(range(16))),
        Sendme(1, b""),
        Truncated_(0),
        Truncated_(255),
    ],
    ids=repr,
)
def test_body_round_trip(value: object) -> None:
    raw = value.encode()  # type: ignore[attr-defined]
    assert type(value).decode(raw) == value  # type: ignore[attr-defined]
    # every codec fills its input exactly: a trailing byte is rejected
    with pytest.raises(RemoteProtocolError):
        type(value).decode(raw + b"\x00")  # type: ignore[attr-defined]
    # and every proper prefix is rejected (truncation is an error, not a partial value)
    for cut in range(len(raw)):
        try:
            got = type(value).decode(raw[:cut])  # type: ignore[attr-defined]
        except RemoteProtocolError:
            continue
        raise AssertionError(f"prefix of {len(raw[:cut])} bytes decoded as {got!r}")


def test_begin_rejects_port_zero() -> None:
    good = Begin("example.com", 80).encode()
    with pytest.raises(RemoteProtocolError):
        Begin.decode(good[:-6] + b"\x00\x00" + good[-4:])
    with pytest.raises(RemoteProtocolError):
        Begin.decode(bytes([AddrType.NONE]) + b"\x00\x00" + bytes(4))


def test_begin_to_an_onion_service_carries_only_the_port() -> None:
    """Tor's `:port` on a rendezvous circuit: the empty address (type NONE), byte for byte."""
    raw = Begin(None, 80).encode()
    assert raw == bytes([AddrType.NONE]) + b"\x00\x50" + b"\x00\x00\x00\x01"
    assert Begin.decode(raw) == Begin(None, 80)


def test_begin_ignores_unknown_flag_bits() -> None:
    raw = Begin("example.com", 80).encode()[:-4] + (0xFFFF_FFF8 | 2).to_bytes(4, "big")
    assert Begin.decode(raw).flags == BeginFlags.IPV4_NOT_OK


@pytest.mark.parametrize("bad", [b" ", b"a b", b"\x00", b"\x7f", b"tab\there", b"\x80abc"])
def test_begin_rejects_unprintable_hostnames(bad: bytes) -> None:
    raw = bytes([AddrType.HOSTNAME, len(bad)]) + bad + b"\x00\x50" + bytes(4)
    with pytest.raises(RemoteProtocolError):
        Begin.decode(raw)


def test_begin_rejects_empty_hostname_and_unknown_address_type() -> None:
    with pytest.raises(RemoteProtocolError):
        Begin.decode(bytes([AddrType.HOSTNAME, 0]) + b"\x00\x50" + bytes(4))
    with pytest.raises(RemoteProtocolError):
        Begin.decode(bytes([9]) + bytes(4) + b"\x00\x50" + bytes(4))


@pytest.mark.parametrize("host", ["a b", "tab\there", "nul\x00", "del\x7f"])
def test_begin_encoder_refuses_what_the_decoder_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        Begin(host, 80).encode()


def test_resolve_needs_a_host() -> None:
    with pytest.raises(RemoteProtocolError):
        Resolve.decode(bytes([AddrType.NONE]))


@pytest.mark.parametrize("value", [*list(EndReason)])
def test_end_reasons(value: EndReason) -> None:
    assert End.decode(bytes([value])).reason is value


@pytest.mark.parametrize("value", [0, 14, 200, 255])
def test_unknown_end_reason_reads_as_misc(value: int) -> None:
    assert End.decode(bytes([value])).reason is EndReason.MISC


def test_resolved_rejects_bad_answers() -> None:
    with pytest.raises(RemoteProtocolError):  # unknown type
        Resolved.decode(b"\x01\x07\x00" + bytes(4))
    with pytest.raises(RemoteProtocolError):  # IPv4 answer of 3 bytes
        Resolved.decode(b"\x01\x04\x03abc" + bytes(4))
    with pytest.raises(RemoteProtocolError):  # IPv6 answer of 4 bytes
        Resolved.decode(b"\x01\x06\x04abcd" + bytes(4))
    with pytest.raises(RemoteProtocolError):  # non-ASCII hostname
        Resolved.decode(b"\x01\x00\x01\xff" + bytes(4))
    with pytest.raises(RemoteProtocolError):  # count larger than the answers present
        Resolved.decode(b"\x02\x04\x04\xc0\x00\x02\x01" + bytes(4))


def _extend_raw(specs: list[tuple[int, bytes]], tail: bytes = b"\x00\x01\x00\x00") -> bytes:
    buf = Buffer().push_u8(len(specs))
    for kind, data in specs:
        buf.push_u8(kind).push_vec8(data)
    return buf.getvalue() + tail


ADDR4 = (LinkSpecType.IPV4, bytes([192, 0, 2, 1]) + (9001).to_bytes(2, "big"))
ID_SPEC = (LinkSpecType.ED25519_ID, IDENTITY)


def test_extend_skips_unknown_link_specifiers() -> None:
    ext = Extend.decode(_extend_raw([ADDR4, (200, b"future"), ID_SPEC]))
    assert ext.addresses == (("192.0.2.1", 9001),)
    assert ext.identity_pk == IDENTITY


@pytest.mark.parametrize(
    "specs",
    [
        [ADDR4],  # no identity
        [ID_SPEC],  # no address
        [(LinkSpecType.IPV4, bytes([192, 0, 2, 1, 0, 0])), ID_SPEC],  # port 0
        [(LinkSpecType.IPV4, bytes(5)), ID_SPEC],  # wrong length
        [(LinkSpecType.IPV6, bytes(17)), ID_SPEC],
        [ADDR4, (LinkSpecType.ED25519_ID, bytes(31))],
        [ADDR4] * 8 + [ID_SPEC],  # nine specifiers: too many
    ],
)
def test_extend_rejects_bad_link_specifiers(specs: list[tuple[int, bytes]]) -> None:
    with pytest.raises(RemoteProtocolError):
        Extend.decode(_extend_raw(specs))


def test_extend_at_most_seven_addresses() -> None:
    seven = tuple((f"192.0.2.{i}", 1000 + i) for i in range(1, 8))
    ext = Extend(seven, IDENTITY, 1, b"skin")
    assert Extend.decode(ext.encode()) == ext
    with pytest.raises(RemoteProtocolError):
        Extend.decode(Extend((*seven, ("192.0.2.99", 1)), IDENTITY, 1, b"skin").encode())


def test_extend_fits_in_a_relay_message_with_an_ntor_onionskin() -> None:
    ext = Extend(tuple(("2001:db8::1", 443) for _ in range(7)), IDENTITY, 1, bytes(96))
    msg = RelayMessage(RelayCommand.EXTEND, 0, ext.encode())
    assert Extend.decode(RelayMessage.decode_plain(msg.encode_plain()).body) == ext


# --------------------------------------------------------------------------- generated round trips


@settings(max_examples=200)
@given(ANY_BODY)
def test_body_round_trip_generated(value: object) -> None:
    raw = value.encode()  # type: ignore[attr-defined]
    assert type(value).decode(raw) == value  # type: ignore[attr-defined]


@given(ANY_BODY.filter(lambda v: len(v.encode()) <= RELAY_BODY_MAX), st.integers(1, 0xFFFF))
def test_bodies_round_trip_inside_relay_messages(value: object, sid: int) -> None:
    command = {
        Begin: RelayCommand.BEGIN,
        Connected: RelayCommand.CONNECTED,
        End: RelayCommand.END,
        Resolve: RelayCommand.RESOLVE,
        Resolved: RelayCommand.RESOLVED,
        Extend: RelayCommand.EXTEND,
        Extended: RelayCommand.EXTENDED,
        Sendme: RelayCommand.SENDME,
        Truncated_: RelayCommand.TRUNCATED,
    }[type(value)]
    if command in CIRCUIT_COMMANDS:
        sid = 0
    msg = RelayMessage.decode_plain(RelayMessage(command, sid, value.encode()).encode_plain())  # type: ignore[attr-defined]
    assert msg.command is command
    assert type(value).decode(msg.body) == value  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- arbitrary input


def _only_remote_errors(decode: Callable[[bytes], object], data: bytes) -> object | None:
    try:
        return decode(data)
    except RemoteProtocolError:
        return None
    # any other exception propagates and fails the test


@settings(max_examples=400)
@given(st.sampled_from(sorted(ALL_DECODERS)), st.binary(max_size=600))
def test_arbitrary_bytes_into_every_decoder(name: str, data: bytes) -> None:
    _only_remote_errors(ALL_DECODERS[name], data)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid body encoding, then damaged: bytes changed, cut off, inserted, appended."""
    value = draw(ANY_BODY)
    raw = bytearray(value.encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "cut", "insert", "append"]))
        pos = draw(st.integers(0, len(raw)))
        if op == "set" and raw:
            raw[min(pos, len(raw) - 1)] = draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            raw += draw(st.binary(min_size=1, max_size=4))
    return type(value).__name__, bytes(raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_encodings())
def test_damaged_encodings_into_every_decoder(case: tuple[str, bytes]) -> None:
    name, data = case
    for decode in ALL_DECODERS.values():  # the matching decoder and every other one
        _only_remote_errors(decode, data)
    decoded = _only_remote_errors(ALL_DECODERS[name], data)
    if decoded is not None:
        # whatever a decoder accepts, re-encodes to something it accepts again
        again = type(decoded).decode(decoded.encode())  # type: ignore[attr-defined]
        assert again.encode() == decoded.encode()  # type: ignore[attr-defined]


@st.composite
def relay_payloads(draw: st.DrawFn) -> bytes:
    """4091-byte payloads with plausible headers (small commands and length fields) and random rest."""
    tag = draw(st.binary(min_size=TAG_LEN, max_size=TAG_LEN))
    command = draw(st.integers(0, 16) | st.integers(0, 255))
    sid = draw(st.sampled_from([0, 1, 0xFFFF]) | st.integers(0, 0xFFFF))
    length = draw(st.integers(0, RELAY_BODY_MAX + 2) | st.integers(0, 0xFFFF))
    body = draw(st.binary(max_size=64))
    raw = tag + bytes([command]) + sid.to_bytes(2, "big") + length.to_bytes(2, "big") + body
    return raw + bytes(CELL_PAYLOAD_LEN - len(raw))


@settings(max_examples=400)
@given(st.one_of(relay_payloads(), st.binary(max_size=CELL_PAYLOAD_LEN + 8)))
def test_arbitrary_payloads_into_decode_plain(data: bytes) -> None:
    msg = _only_remote_errors(RelayMessage.decode_plain, data)
    if msg is None:
        return
    assert isinstance(msg, RelayMessage)
    assert len(msg.body) <= RELAY_BODY_MAX
    assert (msg.stream_id != 0) or msg.command not in STREAM_COMMANDS
    assert (msg.stream_id == 0) or msg.command not in CIRCUIT_COMMANDS
    # the body codec for the command also raises only RemoteProtocolError
    codec = {
        RelayCommand.BEGIN: Begin,
        RelayCommand.CONNECTED: Connected,
        RelayCommand.END: End,
        RelayCommand.RESOLVE: Resolve,
        RelayCommand.RESOLVED: Resolved,
        RelayCommand.EXTEND: Extend,
        RelayCommand.EXTENDED: Extended,
        RelayCommand.SENDME: Sendme,
        RelayCommand.TRUNCATED: Truncated_,
    }.get(msg.command)
    if codec is not None:
        _only_remote_errors(codec.decode, msg.body)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_sendme_of_an_unknown_version_is_refused(version: int) -> None:
    with pytest.raises(RemoteProtocolError):
        Sendme.decode(bytes([version, 0]))


def test_nonce_goes_after_the_body_and_is_ignored_by_the_decoder() -> None:
    msg = RelayMessage(RelayCommand.DATA, 3, b"abc")
    plain = msg.encode_plain(b"N" * 16)
    assert plain[TAG_LEN + 5 : TAG_LEN + 5 + 3 + 16] == b"abc" + b"N" * 16
    assert RelayMessage.decode_plain(plain) == msg
