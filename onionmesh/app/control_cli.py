"""`onionmesh circuit ...` and `onionmesh status-page`: a client of the running proxy's control API."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def fail(message: str) -> SystemExit:
    return SystemExit(f"onionmesh: {message}")


class ControlClient:
    """Talks to the control API with the cookie from the proxy's data directory."""

    def __init__(self, address: str, cookie_path: Path, socks: str | None = None) -> None:
        self.address = address
        self.base = f"http://{address}"
        self.socks = socks
        self.cookie_path = cookie_path
        try:
            self.cookie = cookie_path.read_bytes()
        except OSError as exc:
            raise fail(
                f"cannot read the control cookie {cookie_path} ({exc.strerror}); is the proxy running "
                "with that --data-dir, and may you read its files?"
            ) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ControlClient:
        if args.testnet is not None:
            try:
                info = json.loads((args.testnet / "testnet.json").read_text())
            except (OSError, ValueError) as exc:
                raise fail(f"no running testnet in {args.testnet}: {exc}") from None
            return cls(info["control"], Path(info["cookie"]), info.get("socks"))
        return cls(f"{args.control[0]}:{args.control[1]}", args.data_dir / "control_auth_cookie")

    def not_ours(self, what: str) -> SystemExit:
        return fail(
            f"{self.address} is not an onionmesh control port ({what}); "
            "give the proxy's --control HOST:PORT (default 127.0.0.1:9052; "
            "9051 speaks Tor's control protocol)"
        )

    def refused(self, status: int, body: bytes) -> SystemExit:
        """One line for an error answer: the control API's own message, or that it is not one."""
        try:
            message = json.loads(body).get("error")
        except (ValueError, AttributeError):
            message = None
        if not isinstance(message, str):
            return self.not_ours(f"it answered HTTP {status} without a control API error")
        if status == 401 and message.startswith("wrong control cookie"):
            message += f"; this cookie was read from {self.cookie_path}: is it that proxy's --data-dir?"
        return fail(message)

    def decode(self, status: int, body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            raise self.not_ours(f"HTTP {status} with a body that is not JSON") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Cookie " + self.cookie.hex())
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return self.decode(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            raise self.refused(exc.code, exc.read()) from None
        except http.client.HTTPException as exc:  # not HTTP at all (a relay's link port, say)
            raise self.not_ours(f"no HTTP answer: {type(exc).__name__}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise fail(f"the proxy is not running at {self.base} ({reason})") from None


def _country(hop: dict[str, Any]) -> str:
    """`CC Name` (the client's own GeoIP judgement; "?? unknown" when it has none)."""
    return f"{hop.get('country', '??')} {hop.get('country_name', 'unknown')}"


def _hops(c: dict[str, Any]) -> str:
    """nickname[CC Name](address) per hop."""
    return " -> ".join(f"{h['nickname']}[{_country(h)}]({h['address']})" for h in c["hops"])


def format_circuit(c: dict[str, Any]) -> str:
    label = f" [{c['isolation']}]" if c.get("isolation") else ""
    purpose = c.get("purpose") or "general"
    if purpose != "general":  # an onion service's circuit: what for, and which service
        label += f" {purpose}" + (f" {c['hs_service_id']}.onion" if c.get("hs_service_id") else "")
    return (
        f"{c['id']:>4}  {c['state']:<8} {c['age_s']:>7.1f}s {c['streams']:>3} streams  "
        f"{c['bytes_in']:>10} B in  {_hops(c)}{label}"
    )


def format_hop_table(c: dict[str, Any]) -> str:
    lines = [
        f"circuit {c['id']}: {c['state']}, {c['streams']} streams, "
        f"{c['bytes_in']} B in, {c['bytes_out']} B out"
    ]
    for i, hop in enumerate(c["hops"], 1):
        last = "exit" if hop.get("exit", True) else "last (not an exit)"
        role = "guard" if i == 1 and len(c["hops"]) > 1 else (last if i == len(c["hops"]) else "middle")
        rtt = f"{hop['rtt_ms']:.2f} ms" if hop["rtt_ms"] is not None else "-"
        layer = hop.get("layer") or "-"
        lines.append(
            f"  hop {i} {role:<6} {hop['nickname']:<19} {_country(hop)[:22]:<23}"
            f"{hop['address']:<22} {hop['fingerprint'][:16]}"
            f"  {rtt:>9}  {layer}"
        )
    return "\n".join(lines)


async def _build_with_progress(client: ControlClient, body: dict[str, Any], show: bool) -> dict[str, Any]:
    """POST /circuits while watching /events, printing each hop as it is added."""
    import aiohttp

    headers = {"Authorization": "Cookie " + client.cookie.hex()}
    url = client.base + "/events"
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            ws = await session.ws_connect(url)
        except aiohttp.WSServerHandshakeError as exc:
            async with session.get(url) as resp:  # the same request, to read the error it answers
                raise client.refused(exc.status, await resp.read()) from None
        async with ws:
            return await _watch_build(client, session, ws, body, show)


async def _watch_build(
    client: ControlClient, session: Any, ws: Any, body: dict[str, Any], show: bool
) -> dict[str, Any]:
    import aiohttp

    post = asyncio.create_task(session.post(client.base + "/circuits", json=body))
    mine: int | None = None
    printed = 0
    while not post.done():
        try:
            async with asyncio.timeout(0.25):
                msg = await ws.receive()
        except TimeoutError:
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        try:
            event = json.loads(msg.data)
        except ValueError:
            continue
        circuit = event.get("circuit", {})
        if event.get("type") == "circuit" and circuit.get("isolation") == "control":
            if event["what"] == "launched" and mine is None:
                mine = circuit["id"]
            if circuit["id"] == mine and event["what"] == "extended" and show:
                for i, hop in enumerate(circuit["hops"][printed:], printed + 1):
                    if hop["rtt_ms"] is None:
                        break
                    print(
                        f"hop {i}: {hop['nickname']} {hop['address']} {hop['rtt_ms']:.2f} ms",
                        flush=True,
                    )
                    printed = i
    resp = await post
    raw = await resp.read()
    if resp.status != 200:
        raise client.refused(resp.status, raw)
    result = client.decode(resp.status, raw)
    if show:
        for i, hop in enumerate(result["hops"][printed:], printed + 1):
            print(f"hop {i}: {hop['nickname']} {hop['address']} {hop['rtt_ms']:.2f} ms")
    return result


def _run_build(client: ControlClient, body: dict[str, Any], show: bool) -> dict[str, Any]:
    import aiohttp

    try:
        return asyncio.run(_build_with_progress(client, body, show))
    except (aiohttp.ClientResponseError, aiohttp.ServerDisconnectedError) as exc:
        raise client.not_ours(f"no HTTP answer: {type(exc).__name__}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise fail(f"the proxy is not running at {client.base} ({exc})") from None


def _fetch_through(socks: str, url: str, username: str) -> tuple[int, float, float]:
    """GET url through the SOCKS port under a fresh isolation name; (bytes, ttfb s, total s)."""
    import socks as pysocks

    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise fail("--url must be an http:// URL")
    host, port = socks.rsplit(":", 1)
    s = pysocks.socksocket()
    s.set_proxy(pysocks.SOCKS5, host, int(port), rdns=True, username=username, password="x")
    s.settimeout(60)
    start = time.monotonic()
    s.connect((parts.hostname, parts.port or 80))
    s.sendall(f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
    got, first = 0, None
    while chunk := s.recv(1 << 16):
        first = first or time.monotonic()
        got += len(chunk)
    s.close()
    return got, (first or time.monotonic()) - start, time.monotonic() - start


def cmd_circuit(args: argparse.Namespace) -> int:
    client = ControlClient.from_args(args)
    if args.action == "list":
        result = client.call("GET", "/circuits")
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print("  ID  STATE        AGE STREAMS        BYTES IN  PATH")
            for c in result:
                print(format_circuit(c))
    elif args.action == "build":
        body: dict[str, Any] = {}
        if args.hops is not None:
            body["hops"] = args.hops
        if args.exit:
            body["exit"] = args.exit
        if args.via:
            body["via"] = [v.strip() for v in args.via.split(",") if v.strip()]
        if args.exit_country:
            body["exit_country"] = args.exit_country.strip("{}").lower()
        result = _run_build(client, body, show=not args.json)
        print(json.dumps(result, indent=2) if args.json else f"circuit {result['id']} built")
    elif args.action == "show":
        result = client.call("GET", f"/circuits/{args.id}")
        print(json.dumps(result, indent=2) if args.json else format_hop_table(result))
    elif args.action == "close":
        result = client.call("DELETE", f"/circuits/{args.id}")
        print(json.dumps(result) if args.json else f"circuit {args.id} closed")
    elif args.action == "new":
        result = client.call("POST", "/newnym")
        print(json.dumps(result) if args.json else "new identity: new streams will use new circuits")
    elif args.action == "test":
        return _test(client, args)
    return 0


def _test(client: ControlClient, args: argparse.Namespace) -> int:
    """Build a circuit and measure it: per-hop RTT, and throughput when a URL is given."""
    report: dict[str, Any] = {}
    if args.url:
        socks = client.socks or client.call("GET", "/status")["socks"]
        name = "circuit-test-" + secrets.token_hex(6)
        try:
            got, ttfb, total = _fetch_through(socks, args.url, name)
        except (TimeoutError, OSError) as exc:
            raise fail(f"the test fetch failed: {exc}") from None
        circuit = next((c for c in client.call("GET", "/circuits") if c.get("isolation") == name), None)
        report = {"circuit": circuit, "bytes": got, "ttfb_ms": round(ttfb * 1000, 2),
                  "throughput_MBps": round(got / max(total, 1e-9) / 1e6, 2)}  # fmt: skip
    else:
        body = {"hops": args.hops} if args.hops else {}
        report = {"circuit": _run_build(client, body, show=False)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report["circuit"] is not None:
        print(format_hop_table(report["circuit"]))
    if args.url:
        print(
            f"fetched {report['bytes']} B: first byte after {report['ttfb_ms']} ms, "
            f"{report['throughput_MBps']} MB/s"
        )
    else:
        print("throughput: give --url http://HOST:PORT/PATH to measure it through a fresh circuit")
    return 0


def cmd_status_page(args: argparse.Namespace) -> int:
    link = ControlClient.from_args(args).call("POST", "/login-link")["link"]
    if args.json:
        print(json.dumps({"link": link, "valid_s": 600, "uses": 1}))
    else:
        print(f"status page (one-time link, valid 10 minutes): {link}")
    return 0
