"""Which DHT addresses have proven they receive there, and what was sent to those that have not.

Both sides of the DHT's address validation (docs/protocol.md §9.6) for one node:

* as answerer: mint and check the tokens that requesters echo (directory.dht_tokens);
* as requester: remember the token each address last gave us, to echo it (bounded LRU);
* an address is *proven* for `PROVEN_FOR` seconds after it echoed a valid token or answered
  one of our requests (the message ID it echoed was random, so it received our datagram);
* a per-address ledger of bytes received from and answered to addresses while unproven
  (bounded LRU, plus totals), so that tests and benchmarks can check that a node never sends an
  unproven address more than it received from it; requests we start ourselves (to addresses a
  lookup or crawl learned) are counted apart, in `requested_unproven`.
"""

from __future__ import annotations

import ipaddress
import os
from collections import OrderedDict

from onionmesh.directory.dht_tokens import PERIOD, AddressTokens

MAX_ADDRESSES = 4096
PROVEN_FOR = PERIOD

Address = tuple[str, int]


def norm(address: tuple[str, int] | tuple[str, int, int, int]) -> Address:
    """(ip, port) with the IP in canonical form (IPv6 flow and scope dropped)."""
    return str(ipaddress.ip_address(address[0])), int(address[1])


class AddressCheck:
    def __init__(self, secret: bytes | None = None) -> None:
        self.tokens = AddressTokens(secret or os.urandom(32))
        self._theirs: OrderedDict[Address, bytes] = OrderedDict()  # tokens others gave us
        self._proven: OrderedDict[Address, float] = OrderedDict()  # address -> proven until
        self._ledger: OrderedDict[Address, list[int]] = OrderedDict()  # [received, sent] while unproven
        self.received_unproven = 0
        self.sent_unproven = 0
        self.requested_unproven = 0

    @staticmethod
    def _touch(table: OrderedDict[Address, object], key: Address, value: object) -> None:
        table.pop(key, None)
        table[key] = value
        while len(table) > MAX_ADDRESSES:
            table.popitem(last=False)

    # --- answerer ------------------------------------------------------------------------------
    def mint(self, address: Address, now: float) -> bytes:
        return self.tokens.mint(address, now)

    def check(self, address: Address, token: bytes, now: float) -> bool:
        """Does this request's token prove its source? If so the address counts as proven."""
        if self.tokens.check(address, token, now):
            self.prove(address, now)
            return True
        return False

    # --- requester -----------------------------------------------------------------------------
    def token_for(self, address: Address) -> bytes | None:
        return self._theirs.get(address)

    def learn_token(self, address: Address, token: bytes) -> None:
        self._touch(self._theirs, address, token)  # type: ignore[arg-type]

    # --- proof and the ledger ------------------------------------------------------------------
    def prove(self, address: Address, now: float) -> None:
        self._touch(self._proven, address, now + PROVEN_FOR)  # type: ignore[arg-type]

    def is_proven(self, address: Address, now: float) -> bool:
        until = self._proven.get(address)
        return until is not None and until > now

    def count_received(self, address: Address, size: int, now: float) -> None:
        if not self.is_proven(address, now):
            entry = self._ledger.pop(address, None) or [0, 0]
            entry[0] += size
            self._touch(self._ledger, address, entry)  # type: ignore[arg-type]
            self.received_unproven += size

    def may_answer(self, address: Address, size: int, now: float) -> bool:
        """May we send `size` bytes in answer to `address`: proven, or within what it sent?"""
        if self.is_proven(address, now):
            return True
        received, sent = self.ledger(address)
        return sent + size <= received

    def count_requested(self, address: Address, size: int, now: float) -> None:
        if not self.is_proven(address, now):
            self.requested_unproven += size

    def count_sent(self, address: Address, size: int, now: float) -> None:
        """An answer (RESPONSE or RETRY) of `size` bytes to `address`."""
        if not self.is_proven(address, now):
            entry = self._ledger.pop(address, None) or [0, 0]
            entry[1] += size
            self._touch(self._ledger, address, entry)  # type: ignore[arg-type]
            self.sent_unproven += size

    def ledger(self, address: tuple[str, int]) -> tuple[int, int]:
        """(bytes received from, bytes answered to) `address` while it was unproven."""
        received, sent = self._ledger.get(norm(address), (0, 0))
        return received, sent
