"""Authentication on Tor's control port (control-spec.txt §3.5, §3.21, §3.24, §5.1), sans-I/O.

Methods: COOKIE (the 32-byte cookie file, hex in AUTHENTICATE), SAFECOOKIE (AUTHCHALLENGE:
both sides prove they know the cookie with HMAC-SHA256 over the cookie and two nonces, so a
server impersonating Tor learns nothing), HASHEDPASSWORD (Tor's `16:` iterated-and-salted S2K
of RFC 2440) and NULL (only if the operator configured no method at all).  `AuthSession` is one
connection's state: before authentication only PROTOCOLINFO, AUTHCHALLENGE, AUTHENTICATE and QUIT
are allowed, PROTOCOLINFO and AUTHCHALLENGE once each; a failed AUTHENTICATE or anything else
ends the connection (the server closes after sending the reply).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from onionmesh.proto.torcontrol import Arg, parse_args, quote

COOKIE_LEN = 32
NONCE_LEN = 32
SERVER_HASH_KEY = b"Tor safe cookie authentication server-to-controller hash"
CLIENT_HASH_KEY = b"Tor safe cookie authentication controller-to-server hash"
S2K_SPECIFIER = 0x60  # what `tor --hash-password` writes: 65536 bytes hashed
PRE_AUTH = frozenset({"PROTOCOLINFO", "AUTHCHALLENGE", "AUTHENTICATE", "QUIT"})


# --- Tor's S2K (RFC 2440 §3.6.1.3, iterated and salted, SHA-1) ------------------------------------
def s2k_count(specifier: int) -> int:
    return (16 + (specifier & 15)) << ((specifier >> 4) + 6)


def s2k(secret: bytes, salt: bytes, specifier: int = S2K_SPECIFIER) -> bytes:
    """SHA-1 of salt|secret repeated until `s2k_count` bytes (at least one whole copy)."""
    block = salt + secret
    count = max(s2k_count(specifier), len(block))
    digest = hashlib.sha1()  # Tor's format, not our choice
    whole, rest = divmod(count, len(block))
    digest.update(block * whole)
    digest.update(block[:rest])
    return digest.digest()


def hash_password(password: bytes, salt: bytes, specifier: int = S2K_SPECIFIER) -> str:
    """`16:<HEX(salt8 | specifier | sha1)>`, what `tor --hash-password` prints."""
    if len(salt) != 8:
        raise ValueError("the S2K salt is 8 bytes")
    return "16:" + (salt + bytes([specifier]) + s2k(password, salt, specifier)).hex().upper()


def parse_hashed_password(text: str) -> tuple[bytes, int, bytes]:
    """(salt, specifier, digest) of a `16:` string; ValueError if it is not one."""
    if not text.startswith("16:"):
        raise ValueError('a hashed control password starts with "16:"')
    raw = bytes.fromhex(text[3:])
    if len(raw) != 8 + 1 + 20:
        raise ValueError("a hashed control password is 29 bytes of hex after 16:")
    return raw[:8], raw[8], raw[9:]


def password_matches(hashed: str, password: bytes) -> bool:
    salt, specifier, digest = parse_hashed_password(hashed)
    return hmac.compare_digest(s2k(password, salt, specifier), digest)


# --- SAFECOOKIE -------------------------------------------------------------------------------------
def safecookie_server_hash(cookie: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(SERVER_HASH_KEY, cookie + client_nonce + server_nonce, hashlib.sha256).digest()


def safecookie_client_hash(cookie: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(CLIENT_HASH_KEY, cookie + client_nonce + server_nonce, hashlib.sha256).digest()


# --- one connection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthConfig:
    cookie: bytes | None = None  # 32 bytes, also in cookie_path
    cookie_path: str | None = None
    hashed_passwords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cookie is not None and len(self.cookie) != COOKIE_LEN:
            raise ValueError("the control cookie is 32 bytes")
        for hashed in self.hashed_passwords:
            parse_hashed_password(hashed)

    @property
    def methods(self) -> list[str]:
        out = []
        if self.cookie is not None:
            out += ["COOKIE", "SAFECOOKIE"]
        if self.hashed_passwords:
            out.append("HASHEDPASSWORD")
        return out or ["NULL"]


@dataclass
class Verdict:
    """What to answer, and whether to close the connection after it."""

    code: int
    lines: list[str]
    close: bool = False


@dataclass
class AuthSession:
    config: AuthConfig
    authenticated: bool = False
    _protocolinfo_seen: bool = False
    _challenge: tuple[bytes, bytes] | None = None  # (client nonce, server nonce)
    _challenged: bool = field(default=False)

    def gate(self, keyword: str) -> Verdict | None:
        """None if `keyword` may run now; else the refusal (and close) Tor gives."""
        if self.authenticated:
            return None
        if keyword not in PRE_AUTH:
            return Verdict(514, ["Authentication required."], close=True)
        if keyword == "PROTOCOLINFO" and self._protocolinfo_seen:
            return Verdict(514, ["No more PROTOCOLINFO allowed before authentication."], close=True)
        return None

    def protocolinfo(self, args: str, tor_version: str) -> Verdict:
        if not self.authenticated:
            self._protocolinfo_seen = True
        words = [a.key or a.value for a in parse_args(args)]
        if any(w is not None and not w.isdigit() for w in words):
            return Verdict(513, ["No such version " + quote(words[0] or "")])
        auth = "AUTH METHODS=" + ",".join(self.config.methods)
        if self.config.cookie is not None and self.config.cookie_path is not None:
            auth += " COOKIEFILE=" + quote(self.config.cookie_path)
        return Verdict(250, ["PROTOCOLINFO 1", auth, f"VERSION Tor={quote(tor_version)}", "OK"])

    def authchallenge(self, args: str, server_nonce: bytes) -> Verdict:
        if self._challenged and not self.authenticated:
            return Verdict(514, ["No more AUTHCHALLENGE allowed before authentication."], close=True)
        self._challenged = True
        try:
            parsed = parse_args(args)
        except ValueError:
            return Verdict(513, ["Invalid quoted string"], close=not self.authenticated)
        words = [a for a in parsed if a.value is None or a.key is None]
        if len(words) != 2 or (words[0].key or "").upper() != "SAFECOOKIE":
            return Verdict(513, ["AUTHCHALLENGE only supports SAFECOOKIE authentication"], close=True)
        if self.config.cookie is None:
            return Verdict(513, ["SAFECOOKIE authentication is not enabled"], close=True)
        nonce = _bytes_arg(words[1])
        if nonce is None or len(nonce) != NONCE_LEN:
            return Verdict(513, ["Invalid base16 client nonce"], close=True)
        if len(server_nonce) != NONCE_LEN:
            raise ValueError("the server nonce is 32 bytes")
        self._challenge = (nonce, server_nonce)
        server_hash = safecookie_server_hash(self.config.cookie, nonce, server_nonce)
        hashes = f"SERVERHASH={server_hash.hex().upper()} SERVERNONCE={server_nonce.hex().upper()}"
        return Verdict(250, ["AUTHCHALLENGE " + hashes])

    def authenticate(self, args: str) -> Verdict:
        """Check the credential against every method configured; 515 and close on failure."""
        if self.authenticated:
            return Verdict(250, ["OK"])
        try:
            parsed = parse_args(args)
        except ValueError:
            return Verdict(
                551, ["Invalid quoted string.  You need to put the password in double quotes."], True
            )
        if len(parsed) > 1:
            return Verdict(513, ["Too many arguments to AUTHENTICATE"], close=True)
        secret = _bytes_arg(parsed[0]) if parsed else b""
        if secret is None:
            return Verdict(
                551, ["Invalid hexadecimal encoding.  Maybe you tried a plain text password?"], True
            )
        if self._good(secret):
            self.authenticated = True
            return Verdict(250, ["OK"])
        return Verdict(515, ["Authentication failed: Password did not match HashedControlPassword *or* "
                             "authentication cookie."], close=True)  # fmt: skip

    def _good(self, secret: bytes) -> bool:
        config = self.config
        if config.methods == ["NULL"]:
            return True
        ok = False
        if config.cookie is not None:
            if self._challenge is not None:
                client, server = self._challenge
                ok |= hmac.compare_digest(secret, safecookie_client_hash(config.cookie, client, server))
            else:
                ok |= hmac.compare_digest(secret, config.cookie)
        for hashed in config.hashed_passwords:
            ok |= password_matches(hashed, secret)
        return ok


def _bytes_arg(arg: Arg) -> bytes | None:
    """A quoted string's bytes, or a hex word's; None if a bare word is not hex."""
    if arg.quoted:
        return (arg.value or "").encode("latin-1", "replace")
    word = arg.key if arg.value is None else arg.value
    try:
        return bytes.fromhex(word or "")
    except ValueError:
        return None
