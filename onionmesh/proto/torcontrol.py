"""Tor's control protocol, sans-I/O: line framing, commands, arguments, replies and events.

control-spec.txt §2-§4, as stem, nyx, OnionShare, Bitcoin Core and Tor Browser speak it.  A
`CommandReader` is fed bytes and returns whole commands; a line may end in CRLF or a bare LF
(as Tor accepts), a `+KEYWORD` command carries a data block ended by a lone `.` (dot-stuffed).
Everything is bounded: a line longer than `max_line`, a data block larger than `max_data`, or a
NUL / non-ASCII byte outside a data block is a `ControlSyntaxError` that the server answers and
then closes on (a peer that sends binary is not a controller).  Replies are built by
`format_reply` (`250-`/`250+`/`250 `), events by `format_event` (`650`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onionmesh.errors import ControlSyntaxError

MAX_LINE = 8192  # Tor's own commands are far shorter; a GETINFO of many keys fits
MAX_DATA = 64 * 1024  # a +LOADCONF body / a data block
CRLF = "\r\n"
HTTP_VERBS = ("GET ", "POST ", "PUT ", "HEAD ", "OPTIONS ", "DELETE ", "CONNECT ", "PATCH ")


@dataclass(frozen=True, slots=True)
class Command:
    keyword: str  # upper-cased: verbs are case-insensitive (Tor Browser sends "authenticate")
    args: str  # the rest of the first line, as sent
    data: bytes | None = None  # the un-stuffed body of a "+KEYWORD" command

    @property
    def looks_like_http(self) -> bool:
        return f"{self.keyword} " in HTTP_VERBS


class CommandReader:
    """Bytes in, `Command`s out; buffers at most one line (or one data block) at a time."""

    def __init__(self, max_line: int = MAX_LINE, max_data: int = MAX_DATA) -> None:
        self.max_line = max_line
        self.max_data = max_data
        self._buf = bytearray()
        self._pending: tuple[str, str] | None = None  # (keyword, args) of a "+" command in progress
        self._body = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._body)

    def feed(self, data: bytes) -> list[Command]:
        """Every command completed by `data`; raises ControlSyntaxError on a framing violation."""
        self._buf += data
        out: list[Command] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.max_line:
                    raise ControlSyntaxError(f"line longer than {self.max_line} bytes")
                return out
            if end > self.max_line:
                raise ControlSyntaxError(f"line longer than {self.max_line} bytes")
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            command = self._line(raw)
            if command is not None:
                out.append(command)

    def _line(self, raw: bytes) -> Command | None:
        if self._pending is not None:
            if raw == b".":
                keyword, args = self._pending
                body, self._pending, self._body = bytes(self._body), None, bytearray()
                return Command(keyword, args, body)
            if raw.startswith(b"."):
                raw = raw[1:]  # dot-stuffing: a data line starting with "." was sent as ".."
            if len(self._body) + len(raw) + 2 > self.max_data:
                raise ControlSyntaxError(f"data block larger than {self.max_data} bytes")
            self._body += raw + b"\r\n"
            return None
        if any(b == 0 or b > 0x7E or (b < 0x20 and b != 0x09) for b in raw):
            raise ControlSyntaxError("binary data: control commands are printable ASCII lines")
        text = raw.decode("ascii")
        multi = text.startswith("+")
        head, _, args = text[1:].partition(" ") if multi else text.partition(" ")
        keyword = head.upper()
        if multi:
            self._pending = (keyword, args)
            return None
        return Command(keyword, args)


# --- arguments -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Arg:
    key: str | None  # None for a positional argument
    value: str | None  # None for a bare "KEY" in SETCONF / RESETCONF
    quoted: bool = False


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Decode the QuotedString starting at text[i] == '"' (C escapes, \\ooo octal); return it and
    the index after the closing quote."""
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = text[i + 1 : i + 4]
            if len(octal) == 3 and all(ch in "01234567" for ch in octal) and int(octal, 8) < 256:
                out.append(chr(int(octal, 8)))
                i += 4
                continue
            raise ValueError(f"bad escape \\{nxt} in a quoted string")
        out.append(c)
        i += 1
    raise ValueError("unterminated quoted string")


def parse_args(text: str, *, keywords: bool = True) -> list[Arg]:
    """Split a command's arguments: words, "quoted strings", KEY=value and KEY="quoted value".

    With keywords=False a word's "=" is kept in the word (e.g. GETINFO keys)."""
    args: list[Arg] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text[i] == '"':
            value, i = _read_quoted(text, i)
            args.append(Arg(None, value, True))
            continue
        start = i
        while i < n and text[i] != " " and not (keywords and text[i] == "="):
            i += 1
        word = text[start:i]
        if i < n and text[i] == "=":
            i += 1
            if i < n and text[i] == '"':
                value, i = _read_quoted(text, i)
                args.append(Arg(word, value, True))
            else:
                start = i
                while i < n and text[i] != " ":
                    i += 1
                args.append(Arg(word, text[start:i]))
        else:
            args.append(Arg(None, word) if not keywords else Arg(word, None))
    return args


def positional(args: Sequence[Arg]) -> list[str]:
    """Words without "=", in order (parse_args files a bare word under key, value None)."""
    return [str(a.key if a.value is None else a.value) for a in args if a.key is None or a.value is None]


def quote(value: str) -> str:
    """A QuotedString as Tor writes one (backslash, quote and control characters escaped)."""
    out = []
    for c in value:
        if c in '\\"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) > 0x7E:
            out.extend(f"\\{b:03o}" for b in c.encode("utf-8"))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


# --- replies and events --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DataLine:
    """A reply line followed by a data block: `250+text` CRLF body CRLF `.` CRLF."""

    text: str
    body: str


ReplyLine = str | DataLine


def _stuff(body: str) -> str:
    lines = body.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(("." + line if line.startswith(".") else line) + CRLF for line in lines)


def format_reply(code: int, lines: Sequence[ReplyLine]) -> bytes:
    """A whole reply: every line but the last `NNN-` (or `NNN+` with its data block), the last `NNN `.

    A reply whose last line carries data gets a closing `NNN OK`, as GETINFO's does."""
    if not 100 <= code <= 999:
        raise ValueError("status codes have three digits")
    items = list(lines) or ["OK"]
    if isinstance(items[-1], DataLine):
        items.append("OK")
    out: list[str] = []
    for i, item in enumerate(items):
        last = i == len(items) - 1
        if isinstance(item, DataLine):
            out.append(f"{code}+{_clean(item.text)}{CRLF}{_stuff(item.body)}.{CRLF}")
        else:
            out.append(f"{code}{' ' if last else '-'}{_clean(item)}{CRLF}")
    return "".join(out).encode("utf-8")


def _clean(text: str) -> str:
    """A reply line may not contain CR or LF (it would end the line early: reply injection)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def format_event(text: str | Sequence[ReplyLine]) -> bytes:
    """An asynchronous event: `650 text` (or a multi-line `650-`/`650+` reply)."""
    return format_reply(650, [text] if isinstance(text, str) else text)


def simple(code: int, text: str) -> bytes:
    return format_reply(code, [text])
