"""What several test modules share: the in-process mesh, the testnet, headless Chromium, the sans-I/O
harnesses, descriptors and DHT peers.  Test modules import from here, never from each other."""
