"""The `onionmesh` command line: every subcommand and flag (what the commands do is in cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from onionmesh import __version__

DEFAULT_HOME = Path.home() / ".onionmesh"


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT or [IPv6]:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _add_dir_epoch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir-epoch",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="the directory's epoch (3600; shorter only for tests and testnets: all nodes must agree)",
    )


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    p.add_argument(
        "--unsafe-logging", action="store_true", help="log destinations and addresses (debugging only)"
    )


def _add_control_target(p: argparse.ArgumentParser, *, again: bool = False) -> None:
    """The flags naming a running proxy. `again=True` repeats them on a sub-subcommand, so that
    `circuit list --json` works as well as `circuit --json list`: SUPPRESS keeps the sub-parser
    from overwriting with its default what was given before the action."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if again else value

    p.add_argument(
        "--testnet", type=Path, default=default(None), metavar="STATE_DIR", help="the testnet in STATE_DIR"
    )
    p.add_argument(
        "--control",
        type=host_port,
        default=default(("127.0.0.1", 9052)),
        metavar="HOST:PORT",
        help="the proxy's JSON control API (default 127.0.0.1:9052; 9051 speaks Tor's protocol)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=default(DEFAULT_HOME / "client"), help="where the cookie is"
    )
    p.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")


def _add_bootstrap(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--bootstrap",
        type=host_port,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help=f"a DHT contact (repeatable); {what}",
    )
    p.add_argument("--bootstrap-file", type=Path, default=None, help="DHT contacts, one HOST:PORT per line")


def bootstrap_contacts(args: argparse.Namespace) -> tuple[tuple[str, int], ...]:
    """The DHT contacts of --bootstrap and --bootstrap-file (here, beside the flags, so every command
    module can use it without importing cli)."""
    from onionmesh.runtime.client.directory import parse_bootstrap_file

    contacts = list(args.bootstrap)
    if args.bootstrap_file is not None:
        try:
            contacts += parse_bootstrap_file(args.bootstrap_file)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"onionmesh: cannot read --bootstrap-file: {exc}") from None
    return tuple(contacts)


def _add_public_listeners(p: argparse.ArgumentParser) -> None:
    # A flag only, never a config-file key: exposing the proxy must be a deliberate act each run.
    p.add_argument(
        "--allow-public-listeners",
        action="store_true",
        help="let --socks/--control listen on a non-loopback address (anyone who reaches it can "
        "use the proxy; refused without this flag, and warned about with it)",
    )


def _add_tor_control(p: argparse.ArgumentParser, default: tuple[str, int] | None) -> None:
    shown = "off" if default is None else f"{default[0]}:{default[1]}"
    p.add_argument(
        "--tor-control",
        type=host_port,
        default=default,
        metavar="HOST:PORT",
        help=f"Tor's control protocol for stem, nyx, OnionShare, Bitcoin Core (default {shown}; "
        "docs/control-port.md)",
    )
    p.add_argument(
        "--hashed-control-password",
        default=None,
        metavar="16:HEX",
        help="also accept this password on --tor-control (make one with tor --hash-password)",
    )


def _add_node_choice(p: argparse.ArgumentParser) -> None:
    """Tor's ExitNodes, ExcludeNodes, ExcludeExitNodes, StrictNodes, GeoIPFile, GeoIPv6File."""
    lists = "comma-separated {cc} country codes ({??}: unknown), $FINGERPRINTs, ADDRESS[/BITS]"
    p.add_argument("--exit-nodes", default="", metavar="LIST", help=f"exits only from these: {lists}")
    p.add_argument("--exclude-nodes", default="", metavar="LIST", help="never use these relays anywhere")
    p.add_argument("--exclude-exit-nodes", default="", metavar="LIST", help="never use these as exit")
    p.add_argument(
        "--strict-nodes",
        action="store_true",
        default=None,
        help="never fall back, even for streams whose SOCKS username allowed it",
    )
    p.add_argument("--geoip-file", type=Path, default=None, help="Tor-format IPv4 GeoIP file (not iptocc)")
    p.add_argument("--geoip6-file", type=Path, default=None, help="Tor-format IPv6 GeoIP file")


class _OnionPort(argparse.Action):
    """--onion-port VIRT=HOST:PORT adds a mapping to the service of the last --onion-service."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        services = getattr(namespace, "onion_service", None)
        if not services:
            parser.error("--onion-port needs an --onion-service DIR before it")
        services[-1] = f"{services[-1]} {'='.join(str(values).split(maxsplit=1))}"


def _add_onion(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--onion-service",
        action="append",
        default=[],
        metavar="DIR",
        help="publish a persistent onion service whose keys and hostname live in DIR (repeatable)",
    )
    p.add_argument(
        "--onion-port",
        action=_OnionPort,
        metavar="VIRT=HOST:PORT",
        help="a port of the last --onion-service, e.g. 80=127.0.0.1:8080 (repeatable)",
    )
    p.add_argument(
        "--onion-client-auth-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="Tor's <name>.auth_private files for services that restrict discovery",
    )


def _defer_to_config(command: str, parser: argparse.ArgumentParser) -> None:
    """Settings come from flags, then ONIONMESH_* variables, then the config file, then defaults
    (onionmesh.app.config): argparse must only report the flags actually given."""
    from onionmesh.app.config import SCHEMAS

    for action in parser._actions:
        if action.dest in SCHEMAS[command]:
            action.default = None
            action.required = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onionmesh", description="An onion-routed anonymity overlay.")
    parser.add_argument("--version", action="version", version=f"onionmesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    relay = sub.add_parser("relay", help="run a relay (middle or exit)")
    relay.add_argument("--listen", type=host_port, required=True, metavar="HOST:PORT")
    relay.add_argument("--data-dir", type=Path, required=True)
    relay.add_argument("--nickname", default="Unnamed")
    relay.add_argument("--exit-policy", default="", help='Tor syntax, e.g. "accept *:80,443; reject *:*"')
    relay.add_argument(
        "--exit-policy-udp",
        default=None,
        help='UDP exit policy, Tor syntax, e.g. "accept *:53,443; reject *:*" (default: no UDP)',
    )
    relay.add_argument("--udp-flows-per-circuit", type=int, default=None, metavar="N", help="default 32")
    relay.add_argument(
        "--udp-datagrams-per-second", type=float, default=None, metavar="N", help="per circuit (default 2000)"
    )
    relay.add_argument(
        "--allow-private-destinations",
        action="store_true",
        help="let this exit reach private/loopback addresses (test meshes only)",
    )
    relay.add_argument("--bandwidth", type=int, default=10_000_000, help="advertised bytes per second")
    _add_dir_epoch(relay)
    relay.add_argument(
        "--bandwidth-rate",
        type=int,
        default=None,
        metavar="BYTES",
        help="limit what this relay reads and writes to BYTES per second each way (the advertised "
        "bandwidth follows it)",
    )
    relay.add_argument(
        "--bandwidth-burst",
        type=int,
        default=None,
        metavar="BYTES",
        help="token bucket size (default: the rate)",
    )
    relay.add_argument(
        "--max-mem-in-queues",
        type=int,
        default=128 << 20,
        metavar="BYTES",
        help="queued bytes above which the circuits with the oldest data are destroyed (default 128 MiB)",
    )
    for flag, what in (
        ("--max-streams-per-circuit", "exit streams one circuit may hold open (default 512)"),
        ("--max-streams-per-link", "exit streams one link may hold open (default: half the process cap)"),
        ("--max-exit-streams", "exit streams this process may hold open (default: RLIMIT_NOFILE less "
         "a quarter, at least 128, kept for links); a BEGIN past a cap gets END RESOURCELIMIT"),
    ):  # fmt: skip
        relay.add_argument(flag, type=int, default=None, metavar="N", help=what)
    relay.add_argument("--advertise", type=host_port, default=None, metavar="HOST:PORT")
    relay.add_argument(
        "--dht",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="UDP address of this relay's DHT node (default: the listen host, port 0)",
    )
    relay.add_argument(
        "--metrics",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here (loopback only; off by default)",
    )
    _add_tor_control(relay, None)
    relay.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="the identity key (64 hex) of another relay you run; repeatable; both must list each other",
    )
    relay.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="NAME=IP",
        help="a name this exit answers itself, before DNS (repeatable)",
    )
    _add_bootstrap(relay, "none: this relay starts a new network")
    relay.add_argument(
        "--bridge",
        action="store_true",
        help="run as a bridge: stay out of the DHT, print a bridge line (needs --ws-listen)",
    )
    relay.add_argument(
        "--ws-listen",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="also accept links over WebSocket at a secret path of a decoy web site here",
    )
    relay.add_argument(
        "--ws-public-url", default=None, metavar="wss://HOST[:PORT]", help="the URL of a TLS front, if any"
    )
    relay.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: serve wss:// directly")
    relay.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    _add_logging(relay)

    proxy = sub.add_parser("proxy", help="run the client: a local SOCKS5 proxy")
    proxy.add_argument("--socks", type=host_port, default=("127.0.0.1", 9050), metavar="HOST:PORT")
    proxy.add_argument(
        "--control", type=host_port, default=("127.0.0.1", 9052), metavar="HOST:PORT", help="JSON API"
    )
    _add_tor_control(proxy, ("127.0.0.1", 9051))
    proxy.add_argument("--data-dir", type=Path, default=DEFAULT_HOME / "client")
    _add_public_listeners(proxy)
    _add_bootstrap(proxy, "the client discovers relays through the DHT these lead to")
    proxy.add_argument(
        "--metrics", type=host_port, default=None, metavar="HOST:PORT", help="serve Prometheus /metrics here"
    )
    proxy.add_argument(
        "--dht-refresh", type=float, default=600.0, metavar="SECONDS", help="how often to re-crawl the DHT"
    )
    proxy.add_argument("--hops", type=int, default=3, choices=range(1, 9), metavar="1..8")
    proxy.add_argument(
        "--directory",
        choices=("guards", "crawl"),
        default="guards",
        help="guards: fetch the directory from 3 directory guards (default); crawl: crawl the whole DHT",
    )
    _add_dir_epoch(proxy)
    proxy.add_argument(
        "--bridge",
        "--bridges",
        dest="bridges",
        action="append",
        default=[],
        metavar="LINE",
        help='a bridge line "webtunnel wss://HOST:PORT/SECRET IDENTITY" (repeatable): first hops',
    )
    proxy.add_argument(
        "--dht-over-circuits",
        action="store_true",
        default=None,
        help="send DHT lookups through circuits, never UDP (always so with --bridge)",
    )
    _add_node_choice(proxy)
    _add_onion(proxy)
    _add_logging(proxy)

    testnet = sub.add_parser("testnet", help="run a whole mesh on loopback")
    testnet.add_argument("--relays", type=int, default=5)
    testnet.add_argument("--socks", type=host_port, default=("127.0.0.1", 9050), metavar="HOST:PORT")
    testnet.add_argument("--control", type=host_port, default=("127.0.0.1", 0), metavar="HOST:PORT")
    _add_tor_control(testnet, ("127.0.0.1", 0))
    testnet.add_argument("--state-dir", type=Path, default=Path("onionmesh-testnet"))
    testnet.add_argument("--hops", type=int, default=3, choices=range(1, 9), metavar="1..8")
    _add_node_choice(testnet)
    _add_onion(testnet)
    _add_public_listeners(testnet)
    _add_logging(testnet)

    circuit = sub.add_parser("circuit", help="build, list, show, test and close circuits of a running proxy")
    _add_control_target(circuit)
    csub = circuit.add_subparsers(dest="action", required=True)
    csub.add_parser("list", help="list circuits")
    build = csub.add_parser("build", help="build a new circuit")
    build.add_argument("--hops", type=int, default=None)
    build.add_argument("--exit", default=None, metavar="FINGERPRINT")
    build.add_argument("--via", default=None, metavar="FP,FP")
    build.add_argument("--exit-country", default=None, metavar="CC", help="an exit in this country")
    close = csub.add_parser("close", help="close a circuit")
    close.add_argument("id", type=int)
    show = csub.add_parser("show", help="one circuit, each hop with its measured round-trip time")
    show.add_argument("id", type=int)
    test = csub.add_parser("test", help="build a circuit and measure RTT (and throughput, with --url)")
    test.add_argument("--hops", type=int, default=None)
    test.add_argument("--url", default=None, help="an http:// URL to fetch through a fresh circuit")
    csub.add_parser("new", help="new identity: current circuits take no new streams")
    for action in csub.choices.values():
        _add_control_target(action, again=True)

    page = sub.add_parser("status-page", help="print a one-time link to the proxy's status page")
    _add_control_target(page)

    config = sub.add_parser("config", help="check a configuration file")
    csub_config = config.add_subparsers(dest="action", required=True)
    check = csub_config.add_parser("check", help="explain every problem in FILE, with its line")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--for",
        dest="for_command",
        choices=["relay", "proxy", "testnet"],
        default=None,
        help="check as this command",
    )

    for name, p in (("relay", relay), ("proxy", proxy), ("testnet", testnet)):
        p.add_argument("--config", type=Path, default=None, help="a TOML file (see relay/relay.example.toml)")
        _defer_to_config(name, p)

    dht = sub.add_parser("dht", help="look into the relay directory (the DHT)")
    dsub = dht.add_subparsers(dest="action", required=True)
    relays = dsub.add_parser("relays", help="the relays a fresh client discovers")
    lookup = dsub.add_parser("lookup", help="one relay's verified descriptor, by fingerprint")
    lookup.add_argument("fingerprint")
    for p in (relays, lookup):
        _add_bootstrap(p, "at least one is needed")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=30.0)
    return parser
