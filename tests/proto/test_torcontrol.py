"""Tor's control protocol core: framing, arguments, replies, authentication, ADD_ONION arguments."""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.errors import OnionArgError
from onionmesh.proto.torcontrol import (
    Command,
    CommandReader,
    ControlSyntaxError,
    DataLine,
    format_event,
    format_reply,
    parse_args,
    quote,
)
from onionmesh.proto.torcontrol_auth import (
    AuthConfig,
    AuthSession,
    hash_password,
    password_matches,
    safecookie_client_hash,
    safecookie_server_hash,
)
from onionmesh.proto.torcontrol_onion import parse_add_onion, parse_client_auth_add

# stem's test password "pw" (torproject/stem test/runner.py, HashedControlPassword of its test torrc)
STEM_PW_HASH = "16:8C423A41EF4A542C6078985270AE28A4E04D056FB63F9F201505DB8E06"
COOKIE = bytes(range(32))


# --- framing -------------------------------------------------------------------------------------
def test_crlf_and_bare_lf_end_a_line_and_verbs_are_case_insensitive() -> None:
    reader = CommandReader()
    assert reader.feed(b"authenticate 00ff\r\nGETINFO version\nQUIT\r") == [
        Command("AUTHENTICATE", "00ff"),
        Command("GETINFO", "version"),
    ]
    assert reader.feed(b"\n") == [Command("QUIT", "")]


def test_a_plus_command_carries_a_dot_stuffed_data_block() -> None:
    reader = CommandReader()
    out = reader.feed(b"+LOADCONF\r\nSocksPort 9050\r\n..hidden\r\n.\r\nQUIT\r\n")
    assert out == [Command("LOADCONF", "", b"SocksPort 9050\r\n.hidden\r\n"), Command("QUIT", "")]


@pytest.mark.parametrize(
    "data",
    [b"A" * 9000, b"GETINFO \x00version\r\n", b"\x16\x03\x01\x02\x00\x01\r\n", b"GETINFO caf\xc3\xa9\r\n"],
)
def test_long_lines_and_binary_are_syntax_errors(data: bytes) -> None:
    with pytest.raises(ControlSyntaxError):
        CommandReader(max_line=8192).feed(data)


def test_a_data_block_is_bounded() -> None:
    reader = CommandReader(max_data=1000)
    reader.feed(b"+LOADCONF\r\n")
    with pytest.raises(ControlSyntaxError):
        for _ in range(100):
            reader.feed(b"x" * 50 + b"\r\n")


lines = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@settings(max_examples=200)
@given(st.lists(lines.filter(lambda s: not s.startswith("+")), max_size=20), st.integers(1, 64))
def test_framing_does_not_depend_on_how_the_bytes_are_split(commands: list[str], chunk: int) -> None:
    wire = "".join(c + "\r\n" for c in commands).encode()
    whole = CommandReader().feed(wire)
    reader = CommandReader()
    pieces = [c for i in range(0, len(wire), chunk) for c in reader.feed(wire[i : i + chunk])]
    assert pieces == whole
    assert [c.keyword for c in whole] == [c.partition(" ")[0].upper() for c in commands]
    assert reader.buffered == 0


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_give_commands_or_a_syntax_error_and_the_buffer_stays_bounded(data: bytes) -> None:
    reader = CommandReader(max_line=64, max_data=256)
    try:
        reader.feed(data)
    except ControlSyntaxError:
        return
    assert reader.buffered <= 64 + 256 + 2


# --- arguments and replies -------------------------------------------------------------------------
def test_arguments_keywords_and_quoted_strings() -> None:
    args = parse_args('SocksPort=9050 Nickname="a \\"b\\"\\n" Log ControlPort="\\101"')
    assert [(a.key, a.value) for a in args] == [
        ("SocksPort", "9050"),
        ("Nickname", 'a "b"\n'),
        ("Log", None),
        ("ControlPort", "A"),
    ]
    with pytest.raises(ValueError):
        parse_args('Nickname="unterminated')


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_quote_then_parse_is_the_identity_for_latin1(text: str) -> None:
    text = text.encode("latin-1", "ignore").decode("latin-1")
    quoted = quote(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in quoted)
    if all(ord(c) < 0x80 for c in text):
        assert parse_args("K=" + quoted)[0].value == text


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_parse_args_never_fails_other_than_valueerror(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_args(text)


def test_reply_framing() -> None:
    assert format_reply(250, ["version=0.4.8.10", "OK"]) == b"250-version=0.4.8.10\r\n250 OK\r\n"
    assert format_reply(250, [DataLine("config-text=", "A 1\n.dot\n")]) == (
        b"250+config-text=\r\nA 1\r\n..dot\r\n.\r\n250 OK\r\n"
    )
    assert format_event("BW 10 20") == b"650 BW 10 20\r\n"
    # a value can never inject a line of its own
    assert format_reply(250, ["x=a\r\n250 OK"]).count(b"\r\n") == 1


@settings(max_examples=200)
@given(st.lists(st.one_of(lines, st.builds(DataLine, lines, st.text(max_size=100))), min_size=1, max_size=8))
def test_every_reply_is_lines_with_one_end_line(items: list[str | DataLine]) -> None:
    raw = format_reply(250, items).decode()
    assert raw.endswith("\r\n")
    heads = [ln for ln in raw.split("\r\n")[:-1] if ln[:3] == "250" and ln[3:4] in ("-", "+", " ")]
    assert heads[-1].startswith("250 ") and sum(h.startswith("250 ") for h in heads) == 1


# --- authentication ------------------------------------------------------------------------------
def test_tors_s2k_vector_from_stem() -> None:
    assert password_matches(STEM_PW_HASH, b"pw")
    assert not password_matches(STEM_PW_HASH, b"pW")
    salt = bytes.fromhex(STEM_PW_HASH[3:19])
    assert hash_password(b"pw", salt) == STEM_PW_HASH


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed (apt-get install tor)")
def test_a_hash_from_tor_hash_password_matches() -> None:
    out = subprocess.run(
        ["tor", "--hash-password", "secret word"], capture_output=True, text=True, timeout=30
    )
    hashed = [ln for ln in out.stdout.splitlines() if ln.startswith("16:")][-1]
    assert password_matches(hashed, b"secret word") and not password_matches(hashed, b"secret")


def test_only_four_commands_before_authentication_and_a_second_protocolinfo_closes() -> None:
    session = AuthSession(AuthConfig(cookie=COOKIE, cookie_path="/x/control_auth_cookie"))
    refused = session.gate("GETINFO")
    assert refused is not None and refused.code == 514 and refused.close
    assert session.gate("PROTOCOLINFO") is None
    info = session.protocolinfo("1", "0.4.8.10")
    assert info.lines[1] == 'AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="/x/control_auth_cookie"'
    again = session.gate("PROTOCOLINFO")
    assert again is not None and again.close


def test_cookie_auth_and_a_wrong_cookie_closes() -> None:
    good = AuthSession(AuthConfig(cookie=COOKIE))
    assert good.authenticate(COOKIE.hex()).code == 250 and good.authenticated
    bad = AuthSession(AuthConfig(cookie=COOKIE))
    verdict = bad.authenticate(bytes(32).hex())
    assert (verdict.code, verdict.close, bad.authenticated) == (515, True, False)


def test_safecookie_round_trip() -> None:
    session = AuthSession(AuthConfig(cookie=COOKIE))
    client_nonce, server_nonce = b"c" * 32, b"s" * 32
    reply = session.authchallenge("SAFECOOKIE " + client_nonce.hex(), server_nonce)
    server_hash = safecookie_server_hash(COOKIE, client_nonce, server_nonce)
    assert reply.lines == [
        f"AUTHCHALLENGE SERVERHASH={server_hash.hex().upper()} SERVERNONCE={server_nonce.hex().upper()}"
    ]
    # the raw cookie is no longer accepted once a challenge is running
    replay = AuthSession(AuthConfig(cookie=COOKIE))
    replay.authchallenge("SAFECOOKIE " + client_nonce.hex(), server_nonce)
    assert replay.authenticate(COOKIE.hex()).code == 515
    assert session.authenticate(safecookie_client_hash(COOKIE, client_nonce, server_nonce).hex()).code == 250


def test_password_quoted_or_hex_and_null_auth() -> None:
    config = AuthConfig(hashed_passwords=(STEM_PW_HASH,))
    assert AuthSession(config).authenticate('"pw"').code == 250
    assert AuthSession(config).authenticate(b"pw".hex()).code == 250  # Tor Browser sends hex
    assert AuthSession(config).authenticate('"px"').code == 515
    assert AuthSession(AuthConfig()).authenticate("").code == 250


# --- ADD_ONION ---------------------------------------------------------------------------------------
KEY = base64.b64encode(bytes(range(64))).decode()


def test_add_onion_forms_tools_send() -> None:
    new = parse_add_onion("NEW:ED25519-V3 Port=80,127.0.0.1:8080 Flags=DiscardPK,Detach")
    assert new.new_key and new.flags == {"DiscardPK", "Detach"} and new.ports[0].port == 8080
    assert parse_add_onion("NEW:BEST Port=1,1").new_key
    assert parse_add_onion(f"ED25519-V3:{KEY} Port=8333,127.0.0.1:8334").expanded_key == bytes(range(64))
    auth = parse_add_onion(f"NEW:ED25519-V3 Port=80,8000 Flags=V3Auth ClientAuthV3={'A' * 52}")
    assert auth.client_auth_v3 == [bytes(32)]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ("NEW:ED25519-V3 Port=80 PoWDefensesEnabled=1", 512),  # Bitcoin retries without it
        (f"ED25519-V3:{KEY[:-4]} Port=1", 512),
        (f"ED25519-V3:{KEY}\rFlags=Detach Port=1", 512),
        ("NEW:RSA1024 Port=80", 513),
        ("NEW:ED25519-V3", 512),
        ("NEW:ED25519-V3 Port=0", 512),
        ("NEW:ED25519-V3 Port=80 Flags=NonAnonymous", 512),
        ("NEW:ED25519-V3 Port=80,unix:/tmp/s", 512),
        ("", 512),
    ],
)
def test_add_onion_refusals(args: str, code: int) -> None:
    with pytest.raises(OnionArgError) as caught:
        parse_add_onion(args)
    assert caught.value.code == code


@settings(max_examples=300)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200))
def test_add_onion_parser_only_raises_onion_arg_error(text: str) -> None:
    try:
        request = parse_add_onion(text)
    except OnionArgError as exc:
        assert exc.code in (512, 513)
        return
    assert request.ports and (request.new_key or len(request.expanded_key or b"") == 64)


def test_client_auth_add() -> None:
    addr = "a" * 56
    key = base64.b64encode(bytes(32)).decode()
    added = parse_client_auth_add(f"{addr}.onion x25519:{key} ClientName=bob Flags=Permanent")
    assert (added.service_id, added.private_key, added.nickname, added.permanent) == (
        addr,
        bytes(32),
        "bob",
        True,
    )
    with pytest.raises(OnionArgError):
        parse_client_auth_add(f"{addr} x25519:AAAA")
