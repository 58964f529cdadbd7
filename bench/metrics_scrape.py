"""What one /metrics scrape costs: the collectors plus the exposition text, on a relay with many
links and circuits and on a client with many circuits (stand-in objects with the fields the
collectors read; no sockets, so the figure is the CPU of building the page).

    python bench/metrics_scrape.py [--links 200] [--circuits 5000] [--seconds 1.0]

Prints `name value unit` lines (µs per scrape, best of 5 timed loops) and the page size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import per_call_us

from onionmesh.proto.link import SUITE_NAMES
from onionmesh.runtime.metrics import client_metrics, relay_metrics, render


def fake_relay(links: int, circuits: int) -> SimpleNamespace:
    suites = list(SUITE_NAMES)
    per_link = max(1, circuits // max(1, links))
    link_list = []
    for i in range(links):
        entries = {c: (object(), 0) for c in range(per_link)}
        proto = SimpleNamespace(bytes_received=i * 1000, bytes_sent=i * 2000)
        link_list.append(
            SimpleNamespace(suite=suites[i % len(suites)], circuits=entries, proto=proto, queued_bytes=i)
        )
    stats = {
        "circuits": circuits,
        "handshakes_ok": circuits,
        "destroyed_protocol": 3,
        "destroyed_finished": 9,
    }
    protocol = SimpleNamespace(stats={"rpc_find_node": 10, "garbage": 2}, router=SimpleNamespace(buckets=[]))
    return SimpleNamespace(stats=stats, links=link_list, dht=SimpleNamespace(protocol=protocol, storage={}))


def fake_client(circuits: int) -> SimpleNamespace:
    handles = {
        i: SimpleNamespace(
            circ=SimpleNamespace(state=SimpleNamespace(value="open"), streams={1: 0}, bytes_in=i, bytes_out=i)
        )
        for i in range(circuits)
    }
    return SimpleNamespace(
        circuits=SimpleNamespace(circuits=handles, stats={}), directory=SimpleNamespace(view=[1] * 50)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=200)
    parser.add_argument("--circuits", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    relay, client = fake_relay(args.links, args.circuits), fake_client(args.circuits // 10)
    for name, node, collect in (("relay", relay, relay_metrics), ("client", client, client_metrics)):
        page = render(collect(node))
        print(f"scrape_{name}_page {len(page)} bytes")
        full = per_call_us(lambda c=collect, n=node: render(c(n)), args.seconds)
        print(f"scrape_{name}_collect_and_text {full:.1f} us")
        families = collect(node)
        print(f"scrape_{name}_text_only {per_call_us(lambda f=families: render(f), args.seconds):.1f} us")


if __name__ == "__main__":
    main()
