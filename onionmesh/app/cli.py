"""The `onionmesh` command: relay, proxy, testnet and circuit."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from onionmesh.app.cli_args import DEFAULT_HOME, bootstrap_contacts, build_parser, host_port
from onionmesh.errors import PolicyError
from onionmesh.runtime import safelog

if TYPE_CHECKING:
    from onionmesh.directory.geoip import GeoIP
    from onionmesh.directory.node_restrictions import NodeRestrictions


def resolve_overrides(items: list[str]) -> dict[str, list[str]]:
    """NAME=IP pairs (repeatable; several IPs per name allowed) into a name -> addresses map."""
    import ipaddress

    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, ip = item.partition("=")
        try:
            address = str(ipaddress.ip_address(ip.strip().strip("[]")))
        except ValueError:
            raise SystemExit(f"onionmesh relay: --resolve wants NAME=IP, got {item!r}") from None
        if not sep or not name.strip():
            raise SystemExit(f"onionmesh relay: --resolve wants NAME=IP, got {item!r}")
        out.setdefault(name.strip().lower().rstrip("."), []).append(address)
    return out


def settings(command: str, args: argparse.Namespace) -> argparse.Namespace:
    """Merge flags, environment, config file and defaults; exit with every problem listed."""
    from onionmesh.app.config import SCHEMAS, ConfigError, resolve

    given = {k: v for k, v in vars(args).items() if k in SCHEMAS[command] and v is not None}
    try:
        resolved = resolve(command, given, os.environ, args.config)
    except ConfigError as exc:
        problems = "\n  ".join(exc.problems)
        raise SystemExit(f"onionmesh {command}: the configuration has problems:\n  {problems}") from None
    return argparse.Namespace(**{**vars(args), **resolved})


def os_error_text(exc: OSError) -> str:
    """An OSError as one line: its own words, and the file it is about if it names one."""
    text = str(exc.strerror or exc)
    return f"{text}: {exc.filename}" if exc.filename else text


# --- commands ----------------------------------------------------------------------------------
def cmd_relay(args: argparse.Namespace) -> int:
    from onionmesh.app import config_save
    from onionmesh.app.run import run, run_until_signalled
    from onionmesh.runtime.relay.node import RelayConfig, RelayNode

    config = RelayConfig(
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        data_dir=args.data_dir,
        nickname=args.nickname,
        exit_policy=args.exit_policy,
        exit_policy_udp=args.exit_policy_udp or "",
        udp_flows_per_circuit=args.udp_flows_per_circuit,
        udp_datagrams_per_second=args.udp_datagrams_per_second,
        allow_private_destinations=args.allow_private_destinations,
        bandwidth=args.bandwidth,
        advertise=args.advertise,
        dht=args.dht,
        bootstrap=bootstrap_contacts(args),
        resolve_overrides=resolve_overrides(args.resolve),
        metrics=args.metrics,
        family=tuple(bytes.fromhex(k) for k in args.family),
        bandwidth_rate=args.bandwidth_rate,
        bandwidth_burst=args.bandwidth_burst,
        max_mem_in_queues=args.max_mem_in_queues,
        max_streams_per_circuit=args.max_streams_per_circuit,
        max_streams_per_link=args.max_streams_per_link,
        max_exit_streams=args.max_exit_streams,
        bridge=args.bridge,
        ws_listen=args.ws_listen,
        ws_public_url=args.ws_public_url,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        dir_epoch=args.dir_epoch,
    )
    if config.bridge and config.ws_listen is None:
        print("onionmesh relay: --bridge needs --ws-listen HOST:PORT", file=sys.stderr)
        return 2
    if (config.tls_cert is None) != (config.tls_key is None):
        print("onionmesh relay: give both --tls-cert and --tls-key, or neither", file=sys.stderr)
        return 2
    try:
        node = RelayNode(config)
    except PolicyError as exc:
        print(f"onionmesh relay: bad --exit-policy: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"onionmesh relay: {exc}", file=sys.stderr)
        return 2

    tor_control: list[object] = []

    async def start() -> None:
        await node.start()
        if args.tor_control is not None:  # off by default: an operator watching a relay with nyx
            from onionmesh.runtime.relay.torcontrol_target import start_tor_control

            passwords = (args.hashed_control_password,) if args.hashed_control_password else ()
            server = await start_tor_control(node, args.tor_control, passwords)
            server.on_shutdown = stop_self
            # a relay has no option settable at run time: SAVECONF writes nothing, answers 250
            config_save.attach(server, config_save.config_path(args.config), "relay", dict)
            tor_control.append(server)
        if node.bridge_line is not None and config.bridge:
            print(
                "onionmesh bridge line (share it out of band; also in "
                f"{Path(config.data_dir) / 'bridge-line'}):\n  {node.bridge_line}",
                flush=True,
            )

    async def stop() -> None:
        for server in tor_control:
            await server.stop()  # type: ignore[attr-defined]
        await node.stop()

    run(run_until_signalled(start, stop))
    return 0


def stop_self() -> None:
    """What the Tor control port's SHUTDOWN does: the same as SIGTERM to this very process."""
    os.kill(os.getpid(), signal.SIGTERM)


def node_choice(args: argparse.Namespace) -> tuple[GeoIP, NodeRestrictions]:
    """The client's GeoIP database and node restrictions from the settings; ValueError/OSError
    with a message when a GeoIP file or a node list is bad."""
    from onionmesh.directory.node_restrictions import NodeRestrictions
    from onionmesh.runtime.client.node_choice import load_geoip

    geoip = load_geoip(args.geoip_file, args.geoip6_file)
    rules = NodeRestrictions.parse(
        args.exit_nodes, args.exclude_nodes, args.exclude_exit_nodes, bool(args.strict_nodes)
    )
    return geoip, rules


def cmd_proxy(args: argparse.Namespace) -> int:
    from onionmesh.app import config_save
    from onionmesh.app.onion_start import start_onion_services
    from onionmesh.app.run import run, run_until_signalled
    from onionmesh.directory.bridge_line import parse_bridge_line
    from onionmesh.runtime.client.node import ClientConfig, ClientNode
    from onionmesh.runtime.client.node_choice import settings_values

    node = ClientNode(
        ClientConfig(
            data_dir=args.data_dir,
            socks_host=args.socks[0],
            socks_port=args.socks[1],
            control_host=args.control[0],
            control_port=args.control[1],
            bootstrap=bootstrap_contacts(args),
            dht_refresh=args.dht_refresh,
            hops=args.hops,
            metrics=args.metrics,
            bridges=tuple(parse_bridge_line(line) for line in args.bridges),
            dht_over_circuits=bool(args.dht_over_circuits),
            early_socks_reply=args.early_socks_reply is not False,
            directory=args.directory,
            dir_epoch=args.dir_epoch,
            allow_public_listeners=args.allow_public_listeners,
            torcontrol=args.tor_control,
            torcontrol_passwords=(args.hashed_control_password,) if args.hashed_control_password else (),
        )
    )
    try:
        node.policy.geoip, node.policy.restrictions = node_choice(args)
    except (OSError, ValueError) as exc:
        print(f"onionmesh proxy: {exc}", file=sys.stderr)
        return 2

    async def start() -> None:
        await node.start()
        if node.torcontrol is not None:  # SIGNAL SHUTDOWN, TAKEOWNERSHIP: stop like SIGTERM
            node.torcontrol.on_shutdown = stop_self
            config_save.attach(
                node.torcontrol, config_save.config_path(args.config), "proxy",
                lambda: settings_values(node.policy),
            )  # fmt: skip
        assert node.control is not None
        for address in await start_onion_services(node, args.onion_service, args.onion_client_auth_dir):
            print(f"onionmesh proxy: onion service {address}", flush=True)
        print(
            f"onionmesh proxy: SOCKS5 at {node.config.socks_host}:{node.socks.port}; "
            f"status page (one-time link): {node.control.login_link()}",
            flush=True,
        )

    run(run_until_signalled(start, node.stop))
    return 0


def cmd_testnet(args: argparse.Namespace) -> int:
    from onionmesh.app import config_save
    from onionmesh.app.onion_start import start_onion_services
    from onionmesh.app.run import run, run_until_signalled
    from onionmesh.app.testnet import Testnet, exits_for
    from onionmesh.runtime.client.node_choice import settings_values

    net = Testnet(
        args.state_dir,
        args.relays,
        args.socks,
        args.control,
        hops=args.hops,
        log_level=args.log_level,
        allow_public_listeners=args.allow_public_listeners,
        tor_control=args.tor_control,
        hashed_control_password=args.hashed_control_password,
        dir_epoch=args.dir_epoch,
    )
    try:
        net.geoip, net.restrictions = node_choice(args)
    except (OSError, ValueError) as exc:
        print(f"onionmesh testnet: {exc}", file=sys.stderr)
        return 2

    async def start() -> None:
        info = await net.start()
        if net.client is not None and net.client.torcontrol is not None:
            net.client.torcontrol.on_shutdown = stop_self
            policy = net.client.policy
            config_save.attach(
                net.client.torcontrol, config_save.config_path(args.config), "testnet",
                lambda: settings_values(policy),
            )  # fmt: skip
        print(
            f"onionmesh testnet ready: SOCKS5 at {info['socks']} ({args.relays} relays, "
            f"{exits_for(args.relays)} exits, {net.hops} hops); state in {args.state_dir / 'testnet.json'}",
            flush=True,
        )
        if net.client is not None:
            for address in await start_onion_services(
                net.client, args.onion_service, args.onion_client_auth_dir
            ):
                print(f"onion service {address}", flush=True)
        if net.client is not None and net.client.control is not None:
            print(f"status page (one-time link): {net.client.control.login_link()}", flush=True)

    try:
        run(run_until_signalled(start, net.stop, hangup=True))
    except (RuntimeError, TimeoutError) as exc:
        print(f"onionmesh testnet: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        from onionmesh.app.config import main_check

        return main_check(args.file, args.for_command)
    if args.command in ("relay", "proxy", "testnet"):
        args = settings(args.command, args)
        safelog.configure(args.log_level, safe=not args.unsafe_logging, json_format=args.log_format == "json")
    from onionmesh.app.control_cli import cmd_circuit, cmd_status_page
    from onionmesh.app.dht_cli import cmd_dht

    handlers = {
        "relay": cmd_relay,
        "proxy": cmd_proxy,
        "testnet": cmd_testnet,
        "circuit": cmd_circuit,
        "status-page": cmd_status_page,
        "dht": cmd_dht,
    }
    from onionmesh.errors import ListenerClash, OnionConfigError, PublicListenerRefused, Unsupported
    from onionmesh.runtime.keystore import InsecurePermissions

    try:
        return handlers[args.command](args)
    except InsecurePermissions as exc:
        print(f"onionmesh {args.command}: refusing to start: {exc}", file=sys.stderr)
        return 2
    except (PublicListenerRefused, ListenerClash, Unsupported, OnionConfigError) as exc:  # onion files too
        print(f"onionmesh {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port in use, a data directory that cannot be created: one line
        print(f"onionmesh {args.command}: cannot start: {os_error_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["DEFAULT_HOME", "bootstrap_contacts", "build_parser", "host_port", "main", "settings"]
