"""What a relay runs: the circuit switch, the exit, the bridge role, DHT answers over circuits."""
