"""What a client runs: circuits, path policy, SOCKS, the directory, the control API and status page."""
