"""Fuzz harness of the bridge parsers: bridge lines, DESCRIPTOR cells, DHT_RPC / DHT_ANSWER bodies.

Registered in `fuzz_targets.TARGETS` as `bridge`.  Layout: sel u8 | rest.  sel%4: 0 the rest as
a bridge line (UTF-8, bad bytes escaped; ValueError only); 1 DESCRIPTOR payloads (rest split in
4091-byte cell payloads, fed in order); 2 DhtRpc.decode; 3 DhtAnswer.decode, chunks fed to an
AnswerAssembler (rest split in 2022-byte bodies).  Expected errors: RemoteProtocolError.
"""

from __future__ import annotations

from onionmesh.directory.bridge_line import BridgeLine, parse_bridge_line
from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.bridge_cells import DescriptorAssembler, descriptor_payloads
from onionmesh.wire.cell import CELL_PAYLOAD_LEN
from onionmesh.wire.dht_rpc import AnswerAssembler, DhtAnswer, DhtRpc, DhtStatus, answer_bodies
from onionmesh.wire.relay_msg import RELAY_BODY_MAX
from tests.fuzz.fuzz_targets import Target, check, outcome


def _bridge_one(data: bytes) -> str | None:
    if not data:
        return None
    sel, rest = data[0] % 4, data[1:]
    try:
        if sel == 0:
            try:
                line = parse_bridge_line(rest.decode("utf-8", "backslashreplace"))
            except ValueError:
                return "line:refused"
            check(parse_bridge_line(str(line)) == line, "bridge line round trip")
            return "line:ok"
        if sel == 1:
            assembler = DescriptorAssembler()
            for i in range(0, max(len(rest), 1), CELL_PAYLOAD_LEN):
                if assembler.feed(rest[i : i + CELL_PAYLOAD_LEN].ljust(CELL_PAYLOAD_LEN, b"\0")) is not None:
                    return "descriptor:whole"
            return "descriptor:partial"
        if sel == 2:
            rpc = DhtRpc.decode(rest)
            check(DhtRpc.decode(rpc.encode()) == rpc, "DHT_RPC round trip")
            return "rpc:ok"
        answers = AnswerAssembler()
        for i in range(0, max(len(rest), 1), RELAY_BODY_MAX):
            if answers.feed(1, DhtAnswer.decode(rest[i : i + RELAY_BODY_MAX])) is not None:
                return "answer:whole"
        return "answer:partial"
    except RemoteProtocolError as exc:
        return outcome(exc)


def _bridge_seeds() -> list[bytes]:
    identity = bytes(range(32))
    line = BridgeLine(True, "192.0.2.7", 8443, "Q2xvc2UgdGhlIGdhdGUgYmVoaW5kIHlvdSBwbGVhc2U", identity)
    out = [
        b"\x00" + str(line).encode(),
        b"\x00" + str(BridgeLine(False, "bridge.example", 80, "a" * 30, identity)).encode(),
    ]
    out.append(
        b"\x01"
        + b"".join(p.ljust(CELL_PAYLOAD_LEN, b"\0") for p in descriptor_payloads(bytes(range(256)) * 8))
    )
    out.append(b"\x02" + DhtRpc("192.0.2.1", 4000, b"\x92\xa9find_node\x92\xc4\x00\xc4\x00").encode())
    out.append(b"\x02" + DhtRpc("2001:db8::1", 4000, b"").encode())
    out.append(
        b"\x03" + b"".join(b.ljust(RELAY_BODY_MAX, b"\0")[: len(b)] for b in answer_bodies(DhtStatus.TIMEOUT))
    )
    out.append(b"\x03" + answer_bodies(DhtStatus.OK, b"x" * 100)[0])
    return out


BRIDGE_TARGET = Target(
    "bridge",
    _bridge_one,
    _bridge_seeds,
    max_len=6200,
    tokens=(b"webtunnel ", b"wss://", b"ws://", b"[", b"]", b":", b"/", b" "),
    doc="parse_bridge_line, DescriptorAssembler, DhtRpc/DhtAnswer.decode, AnswerAssembler",
)
