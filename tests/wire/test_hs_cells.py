"""Onion-service relay message bodies (wire.hs_cells): round trips, exact layouts, refusal of junk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire import hs_cells as hc
from onionmesh.wire.relay_msg import CIRCUIT_COMMANDS, RelayCommand, RelayMessage

b32 = st.binary(min_size=32, max_size=32)
exts = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=hc.MAX_EXTENSIONS).map(tuple)
establish_intros = st.builds(
    hc.EstablishIntro, b32, exts, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)
)
introduce1s = st.builds(
    hc.Introduce1,
    b32,
    exts,
    b32,
    st.binary(min_size=hc.INTRODUCE_PLAINTEXT_LEN, max_size=hc.INTRODUCE_PLAINTEXT_LEN),
    b32,
)
link_specs = st.lists(
    st.builds(hc.LinkSpec, st.integers(0, 255), st.binary(max_size=32)), min_size=1, max_size=8
)
plaintexts = st.builds(
    hc.IntroducePlaintext,
    st.binary(min_size=20, max_size=20),
    b32,
    link_specs.map(tuple),
    exts.map(lambda e: e[:3]),
)
acks = st.builds(hc.IntroduceAck, st.sampled_from(list(hc.IntroduceAckStatus)), exts)
simple = st.one_of(
    st.builds(hc.EstablishRendezvous, st.binary(min_size=20, max_size=20)),
    st.builds(hc.RendezvousEstablished),
    st.builds(hc.Rendezvous1, st.binary(min_size=20, max_size=20), st.binary(min_size=64, max_size=64)),
    st.builds(hc.Rendezvous2, st.binary(min_size=64, max_size=64)),
    st.builds(hc.IntroEstablished, exts),
    st.builds(
        hc.PowExtension,
        st.integers(0, 255),
        st.binary(min_size=16, max_size=16),
        st.integers(0, 2**32 - 1),
        st.binary(min_size=4, max_size=4),
    ),
    st.builds(hc.DosParams, st.integers(0, hc.DOS_PARAM_MAX), st.integers(0, hc.DOS_PARAM_MAX)),
)
ALL = st.one_of(establish_intros, introduce1s, plaintexts, acks, simple)


@given(ALL)
@settings(max_examples=400)
def test_every_body_round_trips(msg: object) -> None:
    raw = msg.encode()  # type: ignore[attr-defined]
    assert type(msg).decode(raw) == msg  # type: ignore[attr-defined]


@given(ALL, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_and_truncation_are_refused(msg: object, extra: bytes) -> None:
    raw = msg.encode()  # type: ignore[attr-defined]
    if isinstance(msg, hc.IntroducePlaintext):
        return  # fixed length: covered below
    with pytest.raises(RemoteProtocolError):
        type(msg).decode(raw + extra)  # type: ignore[attr-defined]
    if raw:
        with pytest.raises(RemoteProtocolError):
            type(msg).decode(raw[:-1])  # type: ignore[attr-defined]


DECODERS = [
    hc.EstablishIntro,
    hc.IntroEstablished,
    hc.Introduce1,
    hc.IntroducePlaintext,
    hc.IntroduceAck,
    hc.EstablishRendezvous,
    hc.RendezvousEstablished,
    hc.Rendezvous1,
    hc.Rendezvous2,
    hc.PowExtension,
    hc.DosParams,
]


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@given(junk=st.binary(max_size=600))
@settings(max_examples=150)
def test_junk_raises_only_remote_protocol_error(cls: type, junk: bytes) -> None:
    try:
        msg = cls.decode(junk)
    except RemoteProtocolError:
        return
    if cls is not hc.DosParams:  # DoS params keep the first of each type and drop unknown ones
        assert msg.encode() == junk  # whatever decodes has exactly one encoding


def test_layouts() -> None:
    assert hc.Rendezvous1(b"c" * 20, b"h" * 64).encode() == b"c" * 20 + b"h" * 64
    assert hc.IntroduceAck(hc.IntroduceAckStatus.CANT_RELAY).encode() == b"\x00\x03\x00"
    ei = hc.EstablishIntro(b"k" * 32, ((1, hc.DosParams(25, 200).encode()),), b"a" * 32, b"s" * 64)
    raw = ei.encode()
    assert raw[:3] == b"\x02\x00\x20" and raw[3:35] == b"k" * 32 and raw[35] == 1
    assert raw[36:38] == b"\x01\x13" and raw[38:57] == bytes.fromhex("020100000000000000190200000000000000c8")
    assert raw[57:89] == b"a" * 32 and raw[89:91] == b"\x00\x40" and len(raw) == 155
    assert ei.dos_params == hc.DosParams(25, 200) and ei.dos_params.enabled
    pt = hc.IntroducePlaintext(b"c" * 20, b"o" * 32, (hc.LinkSpec(2, b"i" * 32),)).encode()
    assert len(pt) == hc.INTRODUCE_PLAINTEXT_LEN
    assert pt[:20] == b"c" * 20 and pt[20:24] == b"\x00\x01\x00\x20" and pt[56:60] == b"\x01\x02\x20i"
    assert not any(pt[92:])


def test_plaintext_refuses_nonzero_padding_and_bad_keys() -> None:
    pt = bytearray(hc.IntroducePlaintext(b"c" * 20, b"o" * 32, (hc.LinkSpec(2, b"i" * 32),)).encode())
    pt[-1] = 1
    with pytest.raises(RemoteProtocolError):
        hc.IntroducePlaintext.decode(bytes(pt))
    with pytest.raises(ValueError):
        hc.IntroducePlaintext(b"c" * 20, b"o" * 32, (hc.LinkSpec(2, b"i" * 255),) * 8).encode()


def test_dos_params_follow_tors_rules() -> None:
    assert not hc.DosParams(0, 10).enabled and not hc.DosParams(10, 0).enabled
    assert not hc.DosParams(10, 5).enabled  # burst below rate: ignored
    raw = bytes([1, 1]) + (2**31).to_bytes(8, "big")
    with pytest.raises(RemoteProtocolError):
        hc.DosParams.decode(raw)
    twice = bytes([2, 1]) + (5).to_bytes(8, "big") + bytes([1]) + (9).to_bytes(8, "big")
    assert hc.DosParams.decode(twice).rate == 5  # the first occurrence counts


def test_relay_commands_are_tors_numbers_and_circuit_level() -> None:
    assert [c.value for c in RelayCommand if c.name.startswith(("ESTABLISH", "INTRO", "RENDEZVOUS"))] == list(
        range(32, 41)
    )
    for value in range(32, 41):
        cmd = RelayCommand(value)
        assert cmd in CIRCUIT_COMMANDS
        msg = RelayMessage(cmd, 0, b"x")
        assert RelayMessage.decode_plain(msg.encode_plain()) == msg
        with pytest.raises(RemoteProtocolError):
            RelayMessage.decode_plain(RelayMessage(cmd, 5, b"x").encode_plain())
