"""Events of DHT RPCs carried inside circuits (wire.dht_rpc); kept apart from proto.events so the
DHT-over-circuits feature stays one seam."""

from __future__ import annotations

from dataclasses import dataclass

from onionmesh.wire.dht_rpc import DhtAnswer, DhtRpc


@dataclass(frozen=True, slots=True)
class DhtRpcRequested:
    """At the last hop: the client asks this relay to send one DHT RPC for it."""

    request_id: int
    rpc: DhtRpc


@dataclass(frozen=True, slots=True)
class DhtAnswerReceived:
    """At the client: one chunk of the answer to request `request_id`."""

    request_id: int
    answer: DhtAnswer
