"""Building a client circuit hop by hop, on the clock of the learned build timeout (directory.cbt).

At `timeout()` the caller stops waiting (its request fails over to another circuit), but the
build is not abandoned: it keeps running as a measurement (Tor's MEASURE_TIMEOUT purpose, it
carries no stream) until `close_timeout()`, and its real duration is recorded.  Abandoning it at
`timeout()` would censor the history there, and since the timeout is capped at the longest
completed build, the learned timeout could then only go down (issue 20's ratchet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from onionmesh.crypto import ntor
from onionmesh.directory.descriptor import protocol_versions
from onionmesh.errors import OnionmeshError

if TYPE_CHECKING:
    from onionmesh.directory.descriptor import RelayDescriptor
    from onionmesh.runtime.client.bridges import BridgeSet, BridgeUser
    from onionmesh.runtime.client.circuit_handle import CircuitHandle
    from onionmesh.runtime.client.path_policy import PathPolicy

    class PathOwner(BridgeUser, Protocol):
        """What choosing a path needs of the circuit manager."""

        relays: Callable[[], list[RelayDescriptor]]
        hops: int
        policy: PathPolicy
        first_hops: BridgeSet | None
        newnym_exits: set[str]


MEASURE_PURPOSE = "measure_timeout"
STREAM_CREDIT_VERSION = 2  # relay protocol version whose stream SENDMEs may carry credit
OPTIMISTIC_DATA_VERSION = 3  # relay protocol version whose exits hold DATA sent before CONNECTED


async def choose_path(
    mgr: PathOwner,
    port: int | None,
    isolation: object,
    hops: int | None,
    exit_fp: str | None,
    via: list[str] | None,
    avoid: set[str] | None,
) -> list[RelayDescriptor]:
    """The path for a new build: the policy's choice among the known relays, avoiding the exits
    retired by NEWNYM, with bridges as first hops when the client uses them."""
    avoid = set(avoid or ()) | (mgr.newnym_exits if exit_fp is None else set())
    relays = mgr.relays()
    if mgr.first_hops is not None:
        relays, via, exit_fp = await mgr.first_hops.constrain(mgr, relays, hops or mgr.hops, via, exit_fp)
    return mgr.policy.choose(
        relays, hops=hops or mgr.hops, port=port, exit_fp=exit_fp, via=via, avoid=avoid,
        isolation=isolation,  # its SOCKS username may restrict the exit (runtime.client.path_policy)
    )  # fmt: skip


async def extend_all(
    handle: CircuitHandle,
    progress: Callable[[int, float], None] | None,
    emit: Callable[[str, CircuitHandle], None],
    clock: Callable[[], float],
    start: int = 0,
) -> None:
    """CREATE to the first hop, then one EXTEND per further hop, each awaited; from `start`, only
    the hops from that index on (a built circuit extended by one hop: runtime.client.hs_pool)."""
    for i, desc in enumerate(handle.path[start:], start):
        t0 = clock()
        handle.extended.clear()
        htype = ntor.best_type(protocol_versions(desc.protocols, "circ"))
        if i == 0:
            handle.circ.create(desc.identity_pk, desc.onion_pk, htype)
        else:
            handle.circ.extend(desc.identity_pk, desc.onion_pk, desc.link_addresses, htype)
        while len(handle.circ.hops) <= i:
            if handle.closed_reason is not None:
                raise OSError(handle.closed_reason)
            await handle.extended.wait()
            handle.extended.clear()
        handle.hop_times.append(clock() - t0)
        emit("extended", handle)
        if progress is not None:
            progress(i + 1, handle.hop_times[-1])
    if handle.purpose == "general":  # its streams end at the exit (not so on onion-service circuits)
        # Stream windows may grow toward an exit that takes credit in stream SENDMEs (proto.flow),
        # timed by the circuit's round trip: the last hop's EXTEND took about one.
        relay_versions = protocol_versions(handle.exit.protocols, "relay")
        handle.circ.peer_credit = STREAM_CREDIT_VERSION in relay_versions
        handle.circ.peer_optimistic = OPTIMISTIC_DATA_VERSION in relay_versions
        handle.circ.rtt_hint = handle.hop_times[-1] if handle.hop_times else 0.0


async def wait_build(work: asyncio.Task[None], timeout: float) -> None:
    """Wait for `work` for at most `timeout` seconds: TimeoutError then (and `work` keeps
    running), its own exception if it failed; if the caller is cancelled, so is `work`."""
    try:
        done, _ = await asyncio.wait({work}, timeout=timeout)
    except asyncio.CancelledError:
        work.cancel()
        raise
    if not done:
        raise TimeoutError("circuit build timed out")
    work.result()


class Outcome:
    """How a build kept past its timeout ended (what the manager records and reports)."""

    BUILT = "built"  # completed before close_timeout: its duration is recorded
    FAILED = "failed"  # a hop refused or a link closed: not a timing sample
    ABANDONED = "abandoned"  # still building at close_timeout: recorded as abandoned


async def measure(work: asyncio.Task[None], remaining: float) -> str:
    """Let a timed-out build run for up to `remaining` more seconds; how it ended."""
    try:
        done, _ = await asyncio.wait({work}, timeout=max(0.0, remaining))
    except asyncio.CancelledError:
        work.cancel()
        raise
    if not done:
        work.cancel()
        return Outcome.ABANDONED
    if work.cancelled():
        return Outcome.FAILED
    exc = work.exception()
    if exc is None:
        return Outcome.BUILT
    if isinstance(exc, OnionmeshError | OSError | TimeoutError):
        return Outcome.FAILED
    raise exc


async def keep_measuring(
    handle: CircuitHandle,
    work: asyncio.Task[None],
    start: float,
    close_timeout: float,
    clock: Callable[[], float],
    policy: PathPolicy,
    close: Callable[[CircuitHandle, str], None],
    emit: Callable[[str, CircuitHandle], None],
) -> None:
    """A build past its timeout: record how long it really takes (from `start`), or that it was
    abandoned at `close_timeout` (blaming the hop where it stalled); then close it: it never
    carries a stream."""
    outcome = await measure(work, start + close_timeout - clock())
    if outcome == Outcome.BUILT:
        policy.built(handle.path, clock() - start, timed_out=True)
        close(handle, "measured: built after the build timeout")
        return
    policy.build_failed(handle.path, len(handle.hop_times), timed_out=outcome == Outcome.ABANDONED)
    close(handle, f"build {outcome}")
    emit("failed", handle)
