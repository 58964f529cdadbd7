"""Tor's control port (control-spec.txt) for onionmesh: stem, nyx, OnionShare, Bitcoin Core work unchanged.

A layer between runtime.metrics and the roles: it never imports runtime.client or runtime.relay,
and reaches the node through a `ControlTarget` (target.py) that each role adapts itself to.
"""
