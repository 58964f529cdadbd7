"""The DHT's datagram layer under the Kademlia RPCs: framing, address tokens, rate limits, parts,
timeouts.  `OnionmeshDhtProtocol` (runtime.dht.protocol) adds the RPCs themselves on top.

Why its own module: everything here is about datagrams and their sources (docs/protocol.md §9.6),
nothing about what the RPCs mean.

* garbage datagrams and malformed requests are dropped and counted, never raised;
* no reflection or amplification: a request does nothing but earn a RETRY (shorter than any
  request) until its source has echoed an address token (wire.dht_datagram,
  runtime.dht.validation); only then is it answered, and every byte sent to an unproven address
  is counted against what it sent;
* per-source-address token buckets limit requests (and request parts);
* no datagram is longer than 1,200 bytes: a longer message goes in parts, reassembled within
  bounds (wire.dht_datagram.Reassembly) and, for requests, only from proven sources;
* an RPC waits for the RTO of an RFC 6298 estimator per contact (proto.rtt: at least
  `WAIT_FLOOR`, `WAIT_INITIAL` before any sample, at most `WAIT_CEILING`), not a fixed 0.5 s
  that cut off every answer on a 600 ms path; a late answer still teaches the estimator;
  answers are accepted only from the address the request went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import umsgpack
from kademlia.protocol import KademliaProtocol

from onionmesh.errors import OnionmeshError
from onionmesh.proto.rtt import RttTable
from onionmesh.runtime.dht.validation import Address, AddressCheck, norm
from onionmesh.runtime.ratelimit import TokenBuckets
from onionmesh.wire.dht_datagram import (
    MSG_ID_LEN,
    NO_TOKEN,
    DhtDatagram,
    Kind,
    Reassembly,
    decode_datagram,
    encode_message,
)

WAIT_FLOOR = 0.5  # the shortest RPC timeout, whatever the measured RTT (loopback and LANs)
WAIT_INITIAL = 1.0  # before any round trip was measured (RFC 6298's initial RTO)
WAIT_CEILING = 5.0  # the longest (the package's fixed timeout)
WAIT_TIMEOUT = WAIT_FLOOR  # what a dead contact costs once the path's RTT is known to be short
MAX_LATE = 1024  # timed-out requests whose late answer is still taken as an RTT sample
RATE_PER_SECOND = 200.0
RATE_BURST = 400.0
MAX_RATE_SOURCES = 4096
_RETRY = object()  # the result of a request answered with RETRY


def _loop_time() -> float:
    """The event loop's clock, which times the RPC timers too (a simulation's is virtual)."""
    return asyncio.get_running_loop().time()


class DatagramRpc(KademliaProtocol):
    """Requests out and answers in over one UDP socket; subclasses define `rpc_<name>` and RPCS."""

    RPCS: frozenset[str] = frozenset()

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rtt = RttTable(initial=WAIT_INITIAL, floor=WAIT_FLOOR, ceiling=WAIT_CEILING)
        self._sent_at: dict[bytes, float] = {}
        self._late: OrderedDict[bytes, tuple[Address, float]] = OrderedDict()  # timed out, not forgotten
        self.stats: Counter[str] = Counter()
        self.limits = TokenBuckets(RATE_PER_SECOND, RATE_BURST, MAX_RATE_SOURCES)
        self._sent_to: dict[bytes, Address] = {}
        self.address_check = AddressCheck()
        self.parts = Reassembly()
        # RPCs added by other roles (runtime.dht.dir_rpc: a directory source's): name -> handler
        # called as handler(sender, *args); raising TypeError/ValueError/OnionmeshError = malformed.
        self.extra_rpcs: dict[str, Callable[..., Any]] = {}

    # --- datagrams ---------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._received(data, norm(addr))
        except Exception:  # a bug must cost one datagram, never the node
            self.stats["internal_error"] += 1

    def _received(self, data: bytes, address: Address) -> None:
        now = time.monotonic()
        check = self.address_check
        try:
            datagram = decode_datagram(data)
        except ValueError:
            self.stats["garbage"] += 1
            check.count_received(address, len(data), now)
            return
        if datagram.kind in (Kind.RESPONSE, Kind.RETRY, Kind.RESPONSE_PART):
            if datagram.kind is Kind.RESPONSE_PART:
                if not self._expecting(datagram.msg_id, address):
                    return
                whole = self.parts.add(address, datagram, now)
                if whole is None:
                    return
                datagram = whole
            self._accept_response(datagram, address, now)
            return
        if not self.limits.allow(address[0], now):
            self.stats["rate_limited"] += 1
            check.count_received(address, len(data), now)
            return
        if not check.check(address, datagram.token, now):
            # Unproven source: no work at all, only a RETRY (37 bytes, shorter than any request
            # or request part), and nothing of a request in parts is kept.
            check.count_received(address, len(data), now)
            if datagram.kind is Kind.REQUEST_PART and datagram.body[0] != 0:
                self.stats["part_unproven"] += 1  # one RETRY per request: the first part's
                return
            self.stats["retry_sent"] += 1
            self._reply(Kind.RETRY, datagram.msg_id, b"", address, now)
            return
        if datagram.kind is Kind.REQUEST_PART:
            whole = self.parts.add(address, datagram, now)
            if whole is None:
                return
            datagram = whole
        self._answer(datagram.msg_id, datagram.body, address, now)

    def _expecting(self, msg_id: bytes, address: Address) -> bool:
        """Is this an answer to an outstanding request of ours, from where it went?"""
        expected = self._sent_to.get(msg_id)
        if expected is None or msg_id not in self._outstanding:
            self.stats["unexpected_response"] += 1
            return False
        if address != expected:
            self.stats["spoofed_response"] += 1
            return False
        return True

    def _reply(self, kind: Kind, msg_id: bytes, body: bytes, address: Address, now: float) -> None:
        """Send a RESPONSE (in parts if long) or RETRY; never more to an unproven address than
        it sent us."""
        try:
            datagrams = encode_message(kind, msg_id, self.address_check.mint(address, now), body)
        except ValueError:  # an answer too long even in parts
            self.stats["refused_too_long"] += 1
            return
        size = sum(map(len, datagrams))
        if not self.address_check.may_answer(address, size, now):
            self.stats["refused_amplification"] += 1
            return
        self.address_check.count_sent(address, size, now)
        if self.transport is not None:
            for data in datagrams:
                self.transport.sendto(data, address)

    def _answer(self, msg_id: bytes, body: bytes, address: Address, now: float) -> None:
        """A request from a proven source: run the RPC and answer it."""
        try:
            data = umsgpack.unpackb(body)
        except Exception:  # umsgpack raises many kinds on garbage
            self.stats["garbage"] += 1
            return
        if not (
            isinstance(data, list)
            and len(data) == 2
            and isinstance(data[0], str)
            and (data[0] in self.RPCS or data[0] in self.extra_rpcs)
            and isinstance(data[1], list)
        ):
            self.stats["malformed"] += 1
            return
        name, args = data
        handler = self.extra_rpcs.get(name) or getattr(self, f"rpc_{name}")
        try:
            response = handler(address, *args)
        except (TypeError, ValueError, OnionmeshError):
            self.stats["malformed"] += 1
            return
        self.stats[f"rpc_{name}"] += 1
        self._reply(Kind.RESPONSE, msg_id, umsgpack.packb(response), address, now)

    def _accept_response(self, datagram: DhtDatagram, address: Address, now: float) -> None:
        msg_id = datagram.msg_id
        expected = self._sent_to.get(msg_id)
        if expected is None or msg_id not in self._outstanding:
            late = self._late.pop(msg_id, None)
            if late is not None and late[0] == address:
                self.stats["late_response"] += 1  # its call has failed, but the path is slower than
                self.rtt.sample(address, _loop_time() - late[1])  # we thought: wait longer next time
                return
            self.stats["unexpected_response"] += 1
            return
        if address != expected:
            self.stats["spoofed_response"] += 1
            return
        result: Any = _RETRY
        if datagram.kind is Kind.RESPONSE:
            try:
                result = umsgpack.unpackb(datagram.body)
            except Exception:  # umsgpack raises many kinds on garbage
                self.stats["garbage"] += 1
                return
        # It echoed our random message ID from the address we sent to: it receives there.
        self.address_check.prove(address, now)
        self.address_check.learn_token(address, datagram.token)
        del self._sent_to[msg_id]
        sent_at = self._sent_at.pop(msg_id, None)
        if sent_at is not None:
            self.rtt.sample(address, _loop_time() - sent_at)
        future, timeout = self._outstanding.pop(msg_id)
        timeout.cancel()
        if not future.done():
            future.set_result((True, result))

    def _timeout(self, msg_id: bytes) -> None:
        address = self._sent_to.pop(msg_id, None)
        sent_at = self._sent_at.pop(msg_id, None)
        if address is not None and sent_at is not None:
            # No backoff here (unlike TCP): a dead contact must stay as cheap as the RTO, crawl
            # after crawl; a live but slower one teaches the estimator with its late answer.
            self._late[msg_id] = (address, sent_at)
            while len(self._late) > MAX_LATE:
                self._late.popitem(last=False)
        entry = self._outstanding.pop(msg_id, None)
        self.stats["timeouts"] += 1
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    async def call(self, address: tuple[str, int], name: str, args: list[Any]) -> tuple[bool, Any]:
        """One RPC; (False, None) on timeout.  A RETRY (we held no valid token for the address)
        brings a token, and the request is sent once more with it."""
        if self.transport is None:
            return False, None
        address = norm(address)
        body = umsgpack.packb([name, list(args)])
        for _attempt in range(2):
            ok, result = await self._request(address, body)
            if result is not _RETRY:
                return ok, result
        self.stats["retry_twice"] += 1  # the token it gave did not prove us: give up
        return False, None

    async def _request(self, address: Address, body: bytes) -> tuple[bool, Any]:
        msg_id = os.urandom(MSG_ID_LEN)
        token = self.address_check.token_for(address) or NO_TOKEN
        try:
            datagrams = encode_message(Kind.REQUEST, msg_id, token, body)
        except ValueError:  # too long even in parts
            self.stats["refused_too_long"] += 1
            return False, None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        wait = self.rtt.rto(address)
        self._outstanding[msg_id] = (future, loop.call_later(wait, self._timeout, msg_id))
        self._sent_to[msg_id] = address
        self._sent_at[msg_id] = loop.time()
        self.address_check.count_requested(address, sum(map(len, datagrams)), time.monotonic())
        assert self.transport is not None
        for data in datagrams:
            self.transport.sendto(data, address)
        return await future

    def close_requests(self) -> None:
        """Every outstanding call ends as a timeout."""
        for future, timeout in self._outstanding.values():
            timeout.cancel()
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result((False, None))
        self._outstanding.clear()
        self._sent_at.clear()
