"""Browser logins to the control API: one-time login tokens and the sessions they open.

A token is good once, for LOGIN_TOKEN_LIFETIME; the session it opens lasts SESSION_LIFETIME
from login (no sliding renewal: the status page polls every few seconds and would keep it alive
for ever). Both tables are bounded: past their cap the oldest entry goes. Time comes from an
injected clock so that expiry is tested without sleeping.
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections.abc import Callable
from enum import Enum


class TokenState(Enum):
    GOOD = "good"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class Logins:
    def __init__(
        self,
        token_lifetime: float,
        session_lifetime: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_lifetime, self.session_lifetime = token_lifetime, session_lifetime
        self.max_entries, self.clock = max_entries, clock
        self.tokens: dict[str, float] = {}  # token -> expiry
        self.used: dict[str, float] = {}  # spent token -> its expiry (to say "used", not "unknown")
        self.sessions: dict[str, float] = {}  # session -> expiry

    def _prune(self, table: dict[str, float]) -> None:
        now = self.clock()
        for key in [k for k, exp in table.items() if exp <= now]:
            del table[key]
        while len(table) >= self.max_entries:  # dicts keep insertion order: the oldest goes
            del table[next(iter(table))]

    def new_token(self) -> str:
        self._prune(self.tokens)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = self.clock() + self.token_lifetime
        return token

    def redeem(self, token: str) -> tuple[TokenState, str | None]:
        """Spend a login token: (GOOD, new session) or (why not, None)."""
        expires = self.tokens.pop(token, None)
        now = self.clock()
        if expires is None:
            spent = self.used.get(token)
            return (TokenState.USED if spent is not None and spent > now else TokenState.UNKNOWN), None
        if expires <= now:
            return TokenState.EXPIRED, None
        self._prune(self.used)
        self.used[token] = expires
        self._prune(self.sessions)
        session = secrets.token_urlsafe(32)
        self.sessions[session] = now + self.session_lifetime
        return TokenState.GOOD, session

    def session_valid(self, session: str) -> bool:
        presented = session.encode("utf-8", "surrogateescape")
        now = self.clock()
        found = False
        for known, expires in list(self.sessions.items()):
            if hmac.compare_digest(presented, known.encode()):
                found = expires > now
                if not found:
                    del self.sessions[known]
        return found


_MESSAGES = {
    TokenState.USED: "This login link has already been used. A login link opens the status page once.",
    TokenState.EXPIRED: "This login link has expired: a login link is valid for 10 minutes.",
    TokenState.UNKNOWN: "This login link is not known to this proxy (was the proxy restarted?).",
}


def login_failed_page(state: TokenState) -> str:
    """A small self-contained page (no script, no style sheet) saying why the link did not work."""
    message = html.escape(_MESSAGES[state])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>onionmesh: login link not valid</title></head><body>"
        f'<h1>Login link not valid</h1><p id="reason">{message}</p>'
        "<p>For a new one, run <code>onionmesh status-page</code> (or <code>onionmesh status-page "
        "--testnet DIR</code>) and open the link it prints.</p></body></html>\n"
    )
