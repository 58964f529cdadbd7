"""The onion-service half of the proxy's Tor control port: ADD_ONION / DEL_ONION, ONION_CLIENT_AUTH_*,
HS_DESC events and what NEWNYM forgets (runtime/client/torcontrol_target.py holds the circuit half).

HS_DESC for a service this node runs follows each upload, for every service however it was added
(the settings, the JSON API, ADD_ONION): onionmesh stores a descriptor at four DHT replica keys
(docs/protocol.md §16.5), not at named HSDirs, so each replica stands in for an HSDir: its 20-byte
store key of the period, upper-case hex, is the `$FINGERPRINT` of UPLOAD / UPLOADED / FAILED, and
the descriptor id is the blinded key (base64), as Tor writes it.  stem's
`create_ephemeral_hidden_service(await_publication=True)` waits for an UPLOADED whose directory it
saw in an UPLOAD, which is what this gives.  A descriptor this node fetches as a client gives
REQUESTED then RECEIVED (or FAILED with Tor's REASON=), with the directory `UNKNOWN`: the DHT
lookup asks several nodes and onionmesh does not say which one answered.

Client authorization: `Flags=Permanent` keys live in DATA_DIR/onion_auth/<id>.auth_private (Tor's
.auth_private format, 0600 in a 0700 directory; runtime/client/client_auth_store.py), loaded at
start; the others live until the process ends, as in Tor.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onionmesh.crypto.hs_blinding import ExpandedKey, blind_public
from onionmesh.directory.hs_placement import store_keys
from onionmesh.errors import NotFound, Unsupported
from onionmesh.proto.torcontrol_onion import AddOnion, ClientAuthAdd
from onionmesh.runtime.client import client_auth_store
from onionmesh.runtime.torcontrol.target import Event, OnionService

NO_ONION_SERVICES = (
    "onion services are not available in this onionmesh yet (the onion-services work lands "
    "separately); the request was valid"
)
# hs_fetch.FetchOutcome name -> Tor's HS_DESC FAILED REASON= (control-spec §4.1.25)
FETCH_REASONS = {
    "NOT_FOUND": "NOT_FOUND",
    "INVALID": "BAD_DESC",
    "AUTH_MISSING": "UNEXPECTED",
    "AUTH_WRONG": "UNEXPECTED",
    "BAD_ADDRESS": "BAD_DESC",
}


class OnionControl:
    """Onion services and client keys of one ClientNode, in the control port's terms."""

    def __init__(self, node: Any, emit: Callable[[Event], None]) -> None:
        self.node = node
        self.emit = emit
        self.data_dir = Path(node.config.data_dir)
        self._watched: set[str] = set()  # services whose listeners feed HS_DESC
        self._auth_names: dict[str, str] = {}  # service id -> ClientName of ONION_CLIENT_AUTH_ADD
        self._tasks: set[asyncio.Task[None]] = set()
        self._hooked = False

    def hook(self) -> None:
        """Start reporting HS_DESC: services running now, every service added later, client fetches."""
        if self._hooked:
            return
        self._hooked = True
        for service in list(getattr(self.node, "onion_services", {}).values()):
            self.watch(service)
        listeners = getattr(self.node, "onion_service_listeners", None)
        if listeners is not None:
            listeners.append(self.watch)
        connector = getattr(self.node, "onion", None)
        if connector is not None and hasattr(connector, "fetch_listeners"):
            connector.fetch_listeners.append(self._on_fetch)

    def _runtime(self) -> Any:
        try:
            from onionmesh.runtime.client import onion_service
        except ImportError:
            raise Unsupported(NO_ONION_SERVICES) from None
        if not hasattr(self.node, "add_onion_service"):
            raise Unsupported(NO_ONION_SERVICES)
        return onion_service

    # --- services -------------------------------------------------------------------------------
    async def add_onion(self, request: AddOnion) -> OnionService:
        """ConfigError (from the node) for a key already running here or ports it cannot serve."""
        runtime = self._runtime()
        if request.expanded_key is not None:
            key = ExpandedKey.from_bytes(request.expanded_key)
        else:
            key = ExpandedKey.from_seed(os.urandom(32))
        spec = runtime.OnionServiceSpec(
            key=key,
            ports=tuple(runtime.PortMap(p.virtual, p.host, p.port) for p in request.ports),
            client_auth=tuple(request.client_auth_v3),
            max_streams=request.max_streams,
        )
        service = await self.node.add_onion_service(spec)
        self.watch(service)
        return OnionService(service.service_id, key.to_bytes() if request.new_key else None)

    def del_onion(self, service_id: str) -> None:
        services = getattr(self.node, "onion_services", {})
        if service_id not in services:
            raise NotFound(service_id)
        self._watched.discard(service_id)
        task = asyncio.ensure_future(self.node.remove_onion_service(service_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def watch(self, service: Any) -> None:
        if not self._hooked or service.service_id in self._watched:
            return
        self._watched.add(service.service_id)
        public = service.spec.key.public
        sid = service.service_id

        def on_event(what: str, info: dict[str, object]) -> None:
            period = info.get("period")
            if sid not in self._watched or not isinstance(period, int):
                return
            blinded = blind_public(public, period)
            keys = [f"${key.hex().upper()}" for key in store_keys(blinded, period)]
            desc_id = base64.b64encode(blinded).decode("ascii").rstrip("=")
            if what == "desc_upload":
                for key in keys:
                    self.emit(Event("HS_DESC", text=f"UPLOAD {sid} UNKNOWN {key} {desc_id}"))
            elif what == "desc_uploaded":
                replica = str(info.get("hsdir", "")).removeprefix("replica")
                if replica.isdigit() and int(replica) < len(keys):
                    self.emit(Event("HS_DESC", text=f"UPLOADED {sid} UNKNOWN {keys[int(replica)]}"))
            elif what == "desc_failed":
                for key in keys:
                    self.emit(Event("HS_DESC", text=f"FAILED {sid} UNKNOWN {key} REASON=UPLOAD_REJECTED"))

        service.listeners.append(on_event)

    def _on_fetch(self, what: str, service_id: str, info: dict[str, object]) -> None:
        """A descriptor this node fetches as a client (OnionConnector.fetch_listeners)."""
        blinded = info.get("blinded")
        desc_id = base64.b64encode(blinded).decode("ascii").rstrip("=") if isinstance(blinded, bytes) else ""
        tail = f" {desc_id}" if desc_id else ""
        if what == "requested":
            self.emit(Event("HS_DESC", text=f"REQUESTED {service_id} NO_AUTH UNKNOWN{tail}"))
        elif what == "received":
            self.emit(Event("HS_DESC", text=f"RECEIVED {service_id} NO_AUTH UNKNOWN{tail}"))
        elif what == "failed":
            reason = FETCH_REASONS.get(str(info.get("outcome", "")), "UNEXPECTED")
            self.emit(Event("HS_DESC", text=f"FAILED {service_id} NO_AUTH UNKNOWN{tail} REASON={reason}"))

    def newnym(self) -> None:
        """As Tor's NEWNYM (hs_client_purge_state): forget fetched descriptors and the rendezvous
        circuits kept for reuse, so the next connection to a service starts afresh."""
        connector = getattr(self.node, "onion", None)
        if connector is not None and hasattr(connector, "purge"):
            connector.purge()

    # --- client authorization -----------------------------------------------------------------
    def client_auth_add(self, request: ClientAuthAdd) -> None:
        self._runtime()
        sid = request.service_id
        if request.permanent:
            client_auth_store.save(self.data_dir, sid, request.private_key)  # OSError: 551
        elif client_auth_store.is_saved(self.data_dir, sid):
            client_auth_store.remove(self.data_dir, sid)  # replaced by a key for this session only
        self.node.client_auth[sid] = request.private_key
        if request.nickname:
            self._auth_names[sid] = request.nickname
        else:
            self._auth_names.pop(sid, None)

    def client_auth_remove(self, service_id: str) -> None:
        self._runtime()
        saved = client_auth_store.remove(self.data_dir, service_id)
        if self.node.client_auth.pop(service_id, None) is None and not saved:
            raise NotFound(service_id)
        self._auth_names.pop(service_id, None)

    def client_auth_view(self, service_id: str | None) -> list[str]:
        """`<id> x25519:<base64 key> [ClientName=...] [Flags=Permanent]` (control-spec §3.32)."""
        keys = getattr(self.node, "client_auth", {})
        saved = client_auth_store.saved_ids(self.data_dir)
        out = []
        for sid in sorted(keys):
            if service_id is not None and sid != service_id:
                continue
            line = f"{sid} x25519:{base64.b64encode(keys[sid]).decode('ascii')}"
            if sid in self._auth_names:
                line += f" ClientName={self._auth_names[sid]}"
            if sid in saved:
                line += " Flags=Permanent"
            out.append(line)
        return out
