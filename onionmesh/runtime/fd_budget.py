"""How many descriptors this process may spend on what peers open: RLIMIT_NOFILE less headroom.

Exit streams (runtime.relay.exit_limits) and inbound links (runtime.relay.node) each hold one socket
descriptor, and a peer decides how many it opens.  Both caps start from the same figure: the soft
RLIMIT_NOFILE less a reserve for listeners, the DHT socket, outbound links and logs (Tor keeps
`ULIMIT_BUFFER` and sizes `ConnLimit` from the same limit).
"""

from __future__ import annotations

import resource

FD_HEADROOM_MIN = 128  # descriptors never given to peers: listeners, DHT, outbound links, logs ...
FD_HEADROOM_SHARE = 4  # ... or a quarter of the limit, if more
UNLIMITED = 1 << 20  # what RLIM_INFINITY counts as


def nofile_limit() -> int:
    """The soft RLIMIT_NOFILE (RLIM_INFINITY as `UNLIMITED`)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft not in (resource.RLIM_INFINITY, -1) else UNLIMITED


def descriptor_budget(nofile: int | None = None) -> int:
    """Descriptors peers may make this process hold: `nofile` (default: the soft limit) less headroom."""
    if nofile is None:
        nofile = nofile_limit()
    return max(1, nofile - max(FD_HEADROOM_MIN, nofile // FD_HEADROOM_SHARE))
