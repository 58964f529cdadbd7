"""A synthetic 10,000-relay directory with an adversary holding a given share of selection weight.

Why weight, not relay count: onionmesh draws every position by `bandwidth_weight` (advertised
bandwidth capped at 10 MB/s), so what an adversary buys is weight.  Its relays are exits
(`accept *:80,443`) advertising exactly the cap, each at its own random address (so the /16
rule rarely separates them) and declaring no family (so nothing stops two of them sharing a
circuit); onionmesh has no Guard flag, so every relay, the adversary's too, can be drawn as a
guard.  20 % of honest relays are exits.  Honest relays are reused between adversary shares.

`split_directory` is the Johnson et al. (CCS 2013) layout instead: the adversary's weight is
split between non-exit relays (which onionmesh, without a Guard flag, can draw as hop 1 or
middle) and exits, in a given ratio (theirs: 5:1, 83.3 and 16.7 MiB/s).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import MAX_ADVERTISED_BANDWIDTH, bandwidth_weight
from simulations.relays import PyRng, Relay, make_relay, random_ip, tor_like_bandwidth

HONEST_EXIT_SHARE = 0.2


@dataclass
class Population:
    honest: list[Relay]
    adversary: list[Relay]  # exits at the weight cap
    adversary_guards: list[Relay] = field(default_factory=list)  # non-exits at the weight cap

    def directory(self, n: int, share: float) -> tuple[list[Relay], set[str]]:
        """n relays of which the adversary's hold `share` of the total weight; its fingerprints."""
        if share <= 0:
            return self.honest[:n], set()
        mean = sum(bandwidth_weight(r.descriptor) for r in self.honest[:n]) / n
        n_adv = round(share * mean * n / ((1 - share) * MAX_ADVERTISED_BANDWIDTH + share * mean))
        for _ in range(3):  # settle n_adv against the honest relays it displaces
            honest_w = sum(bandwidth_weight(r.descriptor) for r in self.honest[: n - n_adv])
            n_adv = round(share / (1 - share) * honest_w / MAX_ADVERTISED_BANDWIDTH)
        if n_adv > len(self.adversary):
            raise ValueError("adversary pool too small")
        adv = self.adversary[:n_adv]
        return self.honest[: n - n_adv] + adv, {r.fingerprint for r in adv}

    def split_directory(self, n: int, share: float, guard_ratio: float) -> tuple[list[Relay], set[str]]:
        """n relays of which the adversary's hold `share` of the total weight, `guard_ratio` : 1
        between its non-exit relays and its exits (each at the weight cap); its fingerprints."""
        n_guard = n_exit = 0
        for _ in range(4):  # settle the counts against the honest relays they displace
            honest_w = sum(bandwidth_weight(r.descriptor) for r in self.honest[: n - n_guard - n_exit])
            adv_w = share / (1 - share) * honest_w
            n_guard = round(adv_w * guard_ratio / (guard_ratio + 1) / MAX_ADVERTISED_BANDWIDTH)
            n_exit = max(1, round(adv_w / (guard_ratio + 1) / MAX_ADVERTISED_BANDWIDTH))
        if n_guard > len(self.adversary_guards) or n_exit > len(self.adversary):
            raise ValueError("adversary pool too small")
        adv = self.adversary_guards[:n_guard] + self.adversary[:n_exit]
        return self.honest[: n - n_guard - n_exit] + adv, {r.fingerprint for r in adv}


def make_population(n: int, n_adversary: int, seed: int) -> Population:
    pyr, keys, used = random.Random(seed), PyRng(seed), set[str]()
    honest = [
        make_relay(
            keys,
            i,
            random_ip(pyr, used),
            capacity=tor_like_bandwidth(pyr),
            exit_relay=pyr.random() < HONEST_EXIT_SHARE,
            dht_port=None,
        )
        for i in range(n)
    ]

    def adversaries(first: int, exits: bool) -> list[Relay]:
        return [
            make_relay(
                keys,
                first + i,
                random_ip(pyr, used),
                capacity=MAX_ADVERTISED_BANDWIDTH,
                exit_relay=exits,
                adversary=True,
                dht_port=None,
            )
            for i in range(n_adversary)
        ]

    adversary = adversaries(0, exits=True)
    # Made last, so the relays above are the same as before these existed.
    adversary_guards = adversaries(n_adversary, exits=False)
    return Population(honest, adversary, adversary_guards)


def weight_share(descs: list[RelayDescriptor], fps: set[str], exits_only: bool = False) -> float:
    pool = [d for d in descs if d.is_exit] if exits_only else descs
    total = sum(bandwidth_weight(d) for d in pool)
    return sum(bandwidth_weight(d) for d in pool if d.fingerprint in fps) / total
