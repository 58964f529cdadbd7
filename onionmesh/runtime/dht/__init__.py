"""The Kademlia DHT node: its UDP protocol, address validation and routing table."""
