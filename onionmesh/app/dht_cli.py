"""`onionmesh dht relays|lookup`: what a fresh client finds in the DHT, verified."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from onionmesh.app.cli_args import bootstrap_contacts
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.view import NetView
from onionmesh.runtime.client.directory import local_bind_for
from onionmesh.runtime.dht.node import DhtNode


def descriptor_json(d: RelayDescriptor, now: float) -> dict[str, Any]:
    flags = ["Exit"] if d.is_exit else []
    return {
        "fingerprint": d.fingerprint,
        "identity": d.identity_pk.hex(),
        "family": [k.hex() for k in d.family],
        "nickname": d.nickname,
        "address": f"{d.link_addresses[0][0]}:{d.link_addresses[0][1]}",
        "dht": f"{d.dht_contact[0]}:{d.dht_contact[1]}" if d.dht_contact else None,
        "flags": flags,
        "bandwidth": d.bandwidth,
        "exit_policy": d.exit_policy,
        "published_age_s": round(now - d.published),
        "expires_in_s": round(d.expires - now),
        "onion_key": d.onion_pk.hex(),
        "protocols": d.protocols,
    }


NO_ANSWER = (
    "onionmesh dht: no bootstrap contact answered ({contacts}); is it a relay's DHT (UDP) port? "
    "a relay's link (TCP) port does not answer DHT requests"
)

NO_RELAYS = (
    "onionmesh dht relays: the bootstrap contact answered but the crawl found no relay "
    "({queried} contact(s) given): is it a client's DHT node, or a network with no relay yet?"
)


async def _any_contact_answers(node: DhtNode, contacts: list[tuple[str, int]]) -> bool:
    """Does any bootstrap contact answer a DHT ping at all (a relay or a client node)?"""
    assert node.protocol is not None
    answers = await asyncio.gather(*(node.protocol.call(c, "ping", [node.node.id]) for c in contacts[:16]))
    return any(ok for ok, _ in answers)


async def _run(args: argparse.Namespace, contacts: list[tuple[str, int]]) -> int:
    node = DhtNode(None)
    await node.listen(0, local_bind_for(contacts))
    try:
        if not await _any_contact_answers(node, contacts):
            shown = ", ".join(f"{h}:{p}" for h, p in contacts[:3]) + (" ..." if len(contacts) > 3 else "")
            print(NO_ANSWER.format(contacts=shown), file=sys.stderr)
            return 3
        if args.action == "relays":
            view = NetView()
            async with asyncio.timeout(args.timeout):
                found = await node.crawl(extra=contacts)
            now = time.time()
            view.merge(found, now)
            relays = sorted(view.relays(now), key=lambda d: d.nickname)
            if not relays:  # a contact answered, yet no node handed over a valid relay descriptor
                print(NO_RELAYS.format(queried=len(contacts)), file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps([descriptor_json(d, now) for d in relays], indent=2))
            else:
                print(
                    f"{'FINGERPRINT':<40}  {'NICKNAME':<19} {'ADDRESS':<22} {'FLAGS':<5} "
                    f"{'BW B/s':>10} {'AGE':>6}"
                )
                for d in relays:
                    j = descriptor_json(d, now)
                    print(f"{d.fingerprint}  {d.nickname:<19} {j['address']:<22} {','.join(j['flags']):<5} "
                          f"{d.bandwidth:>10} {j['published_age_s']:>5}s")  # fmt: skip
                print(f"{len(relays)} relays")
            return 0
        fp = args.fingerprint.strip().upper().replace(" ", "").lstrip("$")
        if len(fp) != 40 or any(c not in "0123456789ABCDEF" for c in fp):
            print("onionmesh dht lookup: a fingerprint is 40 hex digits")
            return 2
        async with asyncio.timeout(args.timeout):
            await node.bootstrap(contacts)
        async with asyncio.timeout(args.timeout):
            result = await node.get_descriptor(fp)
        if result.descriptor is None:
            print(f"onionmesh dht lookup: no valid descriptor for {fp} ({result.queries} nodes asked)")
            return 1
        info = descriptor_json(result.descriptor, time.time())
        info["lookup"] = {"paths": len(result.rounds), "hops": result.rounds, "queries": result.queries,
                          "invalid_answers": result.forged}  # fmt: skip
        print(
            json.dumps(info, indent=2) if args.json else "\n".join(f"{k:>16}: {v}" for k, v in info.items())
        )
        return 0
    finally:
        node.stop()


def cmd_dht(args: argparse.Namespace) -> int:
    contacts = list(bootstrap_contacts(args))
    if not contacts:
        raise SystemExit("onionmesh dht: give at least one --bootstrap HOST:PORT")
    try:
        return asyncio.run(_run(args, contacts))
    except TimeoutError:
        raise SystemExit("onionmesh dht: no answer in time from the DHT") from None
