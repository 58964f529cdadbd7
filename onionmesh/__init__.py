"""onionmesh: an onion-routed anonymity overlay with a Kademlia DHT directory."""

__version__ = "0.1.0"
