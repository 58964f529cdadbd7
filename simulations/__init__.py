"""Studies of onionmesh at scales one machine cannot host, driven through the project's real code.

Shared pieces: `vclock` (an asyncio loop on virtual time), `memnet` (an in-memory datagram
network), `relays` (synthetic relays with real keys and signed descriptors), `report` (tables
and plots). Studies: `dht_discovery`, `path_compromise`, `load_balance`.
"""
