"""Wire test vectors (tests/vectors/*.json), recomputed from the code and from the spec.

Every file under tests/vectors/ except descriptor.json is produced by a `build_*` function
below from fixed `SeededRng` seeds.  The tests check two things:

* the code still produces every vector byte for byte (`test_vector_file_matches_code`), and
* an independent implementation of docs/protocol.md written here with hashlib, PyNaCl's
  AEADs and a pure-Python ChaCha20 reaches the same bytes (the `test_spec_*` tests), so the
  document and the code agree.

Regenerate the files only after a deliberate wire change, with
`.venv/bin/python tests/crypto/test_vectors.py`, and say so in the change log.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.bindings import (
    crypto_aead_aegis256_encrypt,
    crypto_aead_aes256gcm_encrypt,
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.signing import SigningKey, VerifyKey

from onionmesh.crypto import kdf, ntor
from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.crypto.onion_layer import LayerSuite, OnionLayer, is_recognized
from onionmesh.crypto.sodium import HARDWARE_AES
from onionmesh.errors import CryptoError
from onionmesh.proto.link import (
    MAX_RECORD_LEN,
    SUITE_AEGIS256,
    SUITE_CHACHA20_POLY1305,
    SUITE_NAMES,
    SUPPORTED_SUITES,
    LinkEstablished,
    LinkProtocol,
    LinkRole,
)
from onionmesh.proto.relay_circuit import RelayCircuit
from onionmesh.rng import SeededRng
from onionmesh.wire import hs_cells as hc
from onionmesh.wire import relay_msg as rm
from onionmesh.wire.bridge_cells import DescriptorAssembler, descriptor_payloads
from onionmesh.wire.cell import (
    CELL_LEN,
    Cell,
    CellCommand,
    DestroyReason,
    create_payload,
    created_payload,
    destroy_payload,
    parse_create,
    parse_created,
)
from onionmesh.wire.dht_rpc import DhtAnswer, DhtRpc, DhtStatus
from onionmesh.wire.dir_msg import DirData, DirGet, DirStatus

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
GENERATOR = "tests/crypto/test_vectors.py"
T0 = 1_700_000_000  # the clock used wherever a vector needs one
DAY = 24 * 3600

# Seeds (SeededRng(int)); each vector file names the ones it uses.
SEED_KDF = 101
SEED_RELAY_IDENTITY = 201
SEED_RELAY_ONION = 202
SEED_NTOR_CLIENT = 203
SEED_NTOR_RELAY = 204
SEED_LAYER = 301
SEED_LAYER_HOP1 = 302
SEED_LAYER_HOP2 = 303
SEED_LINK_INITIATOR = 401
SEED_LINK_RESPONDER = 402
SEED_LINK_IDENTITY = 403
SEED_CELL = 501
SEED_RELAY_MSG = 601
TAG = 12  # the onion layer's tag
BODY = CELL_LEN - 5 - TAG  # relay-cell body: the payload after the tag
NEEDS_AES = {"onion_layer_aes_gcm.json", "link.json"}  # need libsodium's AES-GCM or AEGIS-256: hardware AES


def h(b: bytes) -> str:
    return b.hex()


def unh(s: str) -> bytes:
    return bytes.fromhex(s)


def rand(seed: int, n: int) -> bytes:
    return SeededRng(seed).random_bytes(n)


# =================================================================================================
# Builders: the code under test produces every vector.
# =================================================================================================
def build_kdf() -> dict[str, Any]:
    rng = SeededRng(SEED_KDF)
    secret = rng.random_bytes(32)
    salt = rng.random_bytes(32)
    prk = kdf.extract(secret, salt)
    info = b"onionmesh test vector info"
    mac_key = rng.random_bytes(32)
    mac_data = b"onionmesh test vector mac data"
    return {
        "description": "onionmesh.crypto.kdf: extract / expand / mac (docs/protocol.md, Key derivation)",
        "generator": GENERATOR,
        "seed": SEED_KDF,
        "extract": [
            {"secret": h(secret), "salt": "", "prk": h(kdf.extract(secret))},
            {"secret": h(secret), "salt": h(salt), "prk": h(prk)},
        ],
        "expand": [
            {"prk": h(prk), "info": h(info), "length": n, "okm": h(kdf.expand(prk, info, n))}
            for n in (1, 64, 100, 160)
        ],
        "mac": [
            {"key": h(mac_key), "data": h(mac_data), "size": n, "mac": h(kdf.mac(mac_key, mac_data, n))}
            for n in (16, 32, 64)
        ],
    }


def _ntor_parties() -> tuple[IdentityKey, OnionKey, OnionKeyCert]:
    identity = IdentityKey.generate(SeededRng(SEED_RELAY_IDENTITY))
    onion = OnionKey.generate(SeededRng(SEED_RELAY_ONION))
    cert = OnionKeyCert.issue(identity, onion.public, T0 - 3600, T0 + 14 * DAY)
    return identity, onion, cert


def _ntor_run() -> tuple[ntor.ClientHandshakeState, bytes, bytes, ntor.HopKeys, ntor.HopKeys]:
    identity, onion, _ = _ntor_parties()
    htype = ntor.HANDSHAKE_TYPE_XCHACHA  # the suite every machine runs
    state, skin = ntor.client_start(identity.public, onion.public, SeededRng(SEED_NTOR_CLIENT), htype)
    reply, relay_keys = ntor.server_respond(
        ntor.parse_onionskin(skin), identity.public, onion.secret, SeededRng(SEED_NTOR_RELAY), htype
    )
    client_keys = ntor.client_finish(state, reply)
    return state, skin, reply, client_keys, relay_keys


def build_ntor() -> dict[str, Any]:
    identity, onion, cert = _ntor_parties()
    state, skin, reply, keys, relay_keys = _ntor_run()
    assert keys == relay_keys
    y = SeededRng(SEED_NTOR_RELAY).random_bytes(32)
    y_pub = reply[:32]
    secret_input = (
        crypto_scalarmult(state.x_secret, y_pub)
        + crypto_scalarmult(state.x_secret, onion.public)
        + identity.public
        + onion.public
        + state.x_public
        + y_pub
        + ntor.PROTOID
    )
    key_seed = kdf.mac(ntor.T_KEY, secret_input, 64)
    verify = kdf.mac(ntor.T_VERIFY, secret_input, 32)
    info = ntor.M_EXPAND + state.handshake_type.to_bytes(2, "big")
    material = kdf.expand(key_seed, info, ntor.HOP_KEY_MATERIAL_LEN)
    return {
        "description": "ntor-shaped circuit handshake (docs/protocol.md, Circuit handshake)",
        "generator": GENERATOR,
        "seeds": {
            "relay_identity": SEED_RELAY_IDENTITY,
            "relay_onion_key": SEED_RELAY_ONION,
            "client_ephemeral": SEED_NTOR_CLIENT,
            "relay_ephemeral": SEED_NTOR_RELAY,
        },
        "relay": {
            "identity_seed": h(identity.seed),
            "identity_pk": h(identity.public),
            "fingerprint": identity.fingerprint,
            "onion_secret": h(onion.secret),
            "onion_pk": h(onion.public),
            "onion_cert": {
                "valid_after": cert.valid_after,
                "expires": cert.expires,
                "encoding": h(cert.encode()),
            },
        },
        "client_x": h(state.x_secret),
        "client_X": h(state.x_public),
        "relay_y": h(y),
        "relay_Y": h(y_pub),
        "handshake_type": state.handshake_type,
        "onionskin": h(skin),
        "create_payload": h(create_payload(ntor.HANDSHAKE_TYPE_XCHACHA, skin)),
        "secret_input": h(secret_input),
        "key_seed": h(key_seed),
        "verify": h(verify),
        "auth": h(reply[32:]),
        "reply": h(reply),
        "created_payload": h(created_payload(reply)),
        "key_material": h(material),
        "hop_keys": {
            "forward_stream": h(keys.forward_stream),
            "forward_mac": h(keys.forward_mac),
            "backward_stream": h(keys.backward_stream),
            "backward_mac": h(keys.backward_mac),
        },
    }


def _layer_messages() -> list[rm.RelayMessage]:
    return [
        rm.RelayMessage(rm.RelayCommand.DATA, 1, b"hello, onion"),
        rm.RelayMessage(rm.RelayCommand.DATA, 1, b"hello, onion"),  # same plaintext, new keys
        rm.RelayMessage(rm.RelayCommand.END, 1, rm.End(rm.EndReason.DONE).encode()),
    ]


def _layer_keys(seed: int) -> tuple[bytes, bytes]:
    rng = SeededRng(seed)
    return rng.random_bytes(32), rng.random_bytes(32)


def _layer_reference(suite: LayerSuite, ks: bytes, kf: bytes, body: bytes, t1: bytes) -> tuple[bytes, bytes]:
    """(MAC(Kf, body), STREAM(Ks, T1) over body + 80 bytes) straight from libsodium's AEADs."""
    zeros = bytes(len(body) + 80)
    if suite is LayerSuite.AES_GCM:
        mac = crypto_aead_aes256gcm_encrypt(b"", body, bytes(12), kf)
        return mac, crypto_aead_aes256gcm_encrypt(zeros, None, t1, ks)[:-16]
    mac = crypto_aead_chacha20poly1305_ietf_encrypt(b"", body, bytes(12), kf)
    return mac, crypto_aead_xchacha20poly1305_ietf_encrypt(zeros, None, t1 + bytes(12), ks)[:-16]


def build_onion_layer(suite: LayerSuite = LayerSuite.XCHACHA) -> dict[str, Any]:
    ks, kf = _layer_keys(SEED_LAYER)
    layer = OnionLayer(ks, kf, suite)
    cells = []
    for msg in _layer_messages():
        plain = msg.encode_plain()
        cur_ks, cur_kf = layer._ks, layer._kf
        out = layer.apply(plain)
        t1 = out[:TAG]
        mac, stream = _layer_reference(suite, cur_ks, cur_kf, plain[TAG:], t1)
        cells.append(
            {
                "key_stream": h(cur_ks),
                "key_mac": h(cur_kf),
                "input": h(plain),
                "mac": h(mac),
                "t1": h(t1),
                "keystream_first_64": h(stream[:64]),
                "output": h(out),
                "next_key_stream": h(layer._ks),
                "next_key_mac": h(layer._kf),
                "digest_mask": h(stream[BODY + 64 : BODY + 80]),
                "digest": h(layer.digest()),
            }
        )
    # Two hops: the client layers one outbound cell for hop 2; each relay applies its forward layer.
    k1, k2 = _layer_keys(SEED_LAYER_HOP1), _layer_keys(SEED_LAYER_HOP2)
    msg = rm.RelayMessage(rm.RelayCommand.BEGIN, 7, rm.Begin("example.com", 443).encode())
    plain = msg.encode_plain()
    client2, client1 = OnionLayer(*k2, suite), OnionLayer(*k1, suite)
    inner = client2.unapply(plain)
    wire = client1.unapply(inner)
    relay1, relay2 = OnionLayer(*k1, suite), OnionLayer(*k2, suite)
    after1 = relay1.apply(wire)
    after2 = relay2.apply(after1)
    assert after1 == inner and after2 == plain and relay2.digest() == client2.digest()
    assert is_recognized(after2) and not is_recognized(after1)
    return {
        "description": (
            f"Relay-cell layer R (OnionLayer.apply), suite {suite.name} (handshake type "
            f"{ntor.TYPE_OF_SUITE[suite]:#06x}), on three successive cells, showing the per-cell key "
            "ratchet and digest; then a two-hop outbound cell layered by the client with R^-1 "
            "(docs/protocol.md, Relay crypto)"
        ),
        "generator": GENERATOR,
        "suite": suite.name,
        "seeds": {"layer": SEED_LAYER, "hop1": SEED_LAYER_HOP1, "hop2": SEED_LAYER_HOP2},
        "apply": cells,
        "two_hops": {
            "hop1_forward": {"key_stream": h(k1[0]), "key_mac": h(k1[1])},
            "hop2_forward": {"key_stream": h(k2[0]), "key_mac": h(k2[1])},
            "plain": h(plain),
            "after_client_hop2_layer": h(inner),
            "digest_hop2": h(client2.digest()),
            "wire": h(wire),
        },
    }


def _link_cells() -> tuple[list[bytes], list[bytes], list[bytes]]:
    skin = rand(SEED_CELL, 96)
    first = [
        Cell(0x8000_0001, CellCommand.CREATE, create_payload(1, skin)).encode(),
        Cell(0, CellCommand.PADDING).encode(),
    ]
    second = [Cell(0, CellCommand.PADDING).encode()]
    back = [Cell(0x8000_0001, CellCommand.DESTROY, destroy_payload(DestroyReason.REQUESTED)).encode()]
    return first, second, back


# The two link sessions in link.json: (initiator's suites, responder's suites); the same ephemerals
# in both (a vector artefact: real links never reuse them).  Suite 2 needs hardware AES to build.
LINK_SESSIONS = (
    (
        frozenset({SUITE_CHACHA20_POLY1305, SUITE_AEGIS256}),
        frozenset({SUITE_CHACHA20_POLY1305, SUITE_AEGIS256}),
    ),
    (frozenset({SUITE_CHACHA20_POLY1305}), frozenset({SUITE_CHACHA20_POLY1305, SUITE_AEGIS256})),
)


def _link_run(offered: frozenset[int], accepted: frozenset[int]) -> dict[str, Any]:
    identity = IdentityKey.generate(SeededRng(SEED_LINK_IDENTITY))
    ini = LinkProtocol(
        LinkRole.INITIATOR, SeededRng(SEED_LINK_INITIATOR), expected_identity=identity.public, suites=offered
    )
    res = LinkProtocol(LinkRole.RESPONDER, SeededRng(SEED_LINK_RESPONDER), identity=identity, suites=accepted)
    ini.initiate()
    msg1 = ini.data_to_send()
    [established] = res.receive_data(msg1)
    assert isinstance(established, LinkEstablished) and established.peer_identity is None
    suite = established.suite
    msg2 = res.data_to_send()
    assert ini.receive_data(msg2) == [LinkEstablished(identity.public, suite)]
    first, second, back = _link_cells()
    ini.send_cells(first)
    record1 = ini.data_to_send()
    ini.send_cells(second)
    record2 = ini.data_to_send()
    res.send_cells(back)
    record_back = res.data_to_send()
    got = res.receive_data(record1 + record2)
    assert [c.encode() for c in got] == first + second  # type: ignore[attr-defined]
    assert [c.encode() for c in ini.receive_data(record_back)] == back  # type: ignore[attr-defined]
    return {
        "identity": identity,
        "e_i": SeededRng(SEED_LINK_INITIATOR).random_bytes(32),
        "e_r": SeededRng(SEED_LINK_RESPONDER).random_bytes(32),
        "offer": int.from_bytes(msg1[6:8], "big"),
        "suite": suite,
        "msg1": msg1,
        "msg2": msg2,
        "records": (record1, record2, record_back),
    }


def _link_session(offered: frozenset[int], accepted: frozenset[int]) -> dict[str, Any]:
    run = _link_run(offered, accepted)
    spec = _link_spec(run["e_i"], run["e_r"], run["identity"], run["offer"], run["suite"])
    first, second, back = _link_cells()
    record1, record2, record_back = run["records"]
    return {
        "initiator_offer": run["offer"],
        "responder_suites": sorted(accepted),
        "suite": run["suite"],
        "suite_name": SUITE_NAMES[run["suite"]],
        "msg1": h(run["msg1"]),
        "transcript_hash": h(spec["h"]),
        "k_hs": h(spec["k_hs"]),
        "k_i2r": h(spec["k_i2r"]),
        "k_r2i": h(spec["k_r2i"]),
        "hk_i2r": h(spec["hk_i2r"]),
        "hk_r2i": h(spec["hk_r2i"]),
        "msg2_plaintext": h(spec["msg2_plain"]),
        "msg2": h(run["msg2"]),
        "records": [
            {
                "direction": "initiator->responder",
                "seq": 0,
                "mask": spec["mask"](spec["hk_i2r"], 0),
                "cells": [h(c) for c in first],
                "record": h(record1),
            },
            {
                "direction": "initiator->responder",
                "seq": 1,
                "mask": spec["mask"](spec["hk_i2r"], 1),
                "cells": [h(c) for c in second],
                "record": h(record2),
            },
            {
                "direction": "responder->initiator",
                "seq": 0,
                "mask": spec["mask"](spec["hk_r2i"], 0),
                "cells": [h(c) for c in back],
                "record": h(record_back),
            },
        ],
    }


def build_link() -> dict[str, Any]:
    if not HARDWARE_AES:
        raise RuntimeError("link.json has an AEGIS-256 session: build it on a machine with hardware AES")
    identity = IdentityKey.generate(SeededRng(SEED_LINK_IDENTITY))
    e_i = SeededRng(SEED_LINK_INITIATOR).random_bytes(32)
    e_r = SeededRng(SEED_LINK_RESPONDER).random_bytes(32)
    return {
        "description": (
            "Link handshake and records (docs/protocol.md, Links), version 2: one session per record "
            "suite, with the same ephemerals and identity"
        ),
        "generator": GENERATOR,
        "seeds": {
            "initiator_ephemeral": SEED_LINK_INITIATOR,
            "responder_ephemeral": SEED_LINK_RESPONDER,
            "responder_identity": SEED_LINK_IDENTITY,
        },
        "responder_identity_seed": h(identity.seed),
        "responder_identity_pk": h(identity.public),
        "initiator_e_secret": h(e_i),
        "initiator_e_public": h(crypto_scalarmult_base(e_i)),
        "responder_e_secret": h(e_r),
        "responder_e_public": h(crypto_scalarmult_base(e_r)),
        "shared_secret": h(crypto_scalarmult(e_i, crypto_scalarmult_base(e_r))),
        "sessions": [_link_session(offered, accepted) for offered, accepted in LINK_SESSIONS],
    }


def _circuit_cells() -> list[tuple[str, Cell]]:
    """A one-hop circuit with the ntor.json keys: CREATE, CREATED, then two layered cells."""
    _state, skin, reply, keys, _ = _ntor_run()
    cid = 0x8000_0001
    forward = OnionLayer(keys.forward_stream, keys.forward_mac, keys.suite)
    begin = rm.RelayMessage(rm.RelayCommand.BEGIN, 1, rm.Begin("example.com", 443).encode())
    relay_payload = forward.unapply(begin.encode_plain())
    extend = rm.RelayMessage(
        rm.RelayCommand.EXTEND,
        0,
        rm.Extend(
            (("192.0.2.7", 9001),),
            rand(SEED_CELL + 1, 32),
            ntor.HANDSHAKE_TYPE_XCHACHA,
            rand(SEED_CELL + 2, 96),
        ).encode(),
    )
    early_payload = forward.unapply(extend.encode_plain())
    requested = destroy_payload(DestroyReason.REQUESTED)
    protocol = destroy_payload(DestroyReason.PROTOCOL)
    return [
        ("PADDING (link keep-alive)", Cell(0, CellCommand.PADDING)),
        ("CREATE (ntor.json onionskin)",
         Cell(cid, CellCommand.CREATE, create_payload(ntor.HANDSHAKE_TYPE_XCHACHA, skin))),
        ("CREATED (ntor.json reply)", Cell(cid, CellCommand.CREATED, created_payload(reply))),
        ("RELAY: BEGIN example.com:443 on stream 1, layered with the ntor.json forward keys",
         Cell(cid, CellCommand.RELAY, relay_payload)),
        ("RELAY_EARLY: EXTEND, the next cell under the ratcheted forward layer",
         Cell(cid, CellCommand.RELAY_EARLY, early_payload)),
        ("DESTROY reason REQUESTED", Cell(cid, CellCommand.DESTROY, requested)),
        ("DESTROY reason PROTOCOL, responder-allocated id", Cell(0x2A2A, CellCommand.DESTROY, protocol)),
        ("DESCRIPTOR_GET (link level, circuit 0)", Cell(0, CellCommand.DESCRIPTOR_GET)),
        ("DESCRIPTOR, the only chunk (no more follow)",
         Cell(0, CellCommand.DESCRIPTOR, descriptor_payloads(b"\x00DESCRIPTOR BYTES")[0])),
    ]  # fmt: skip


def _strip_padding(encoded: bytes, keep: int) -> tuple[str, int]:
    assert encoded[keep:] == bytes(len(encoded) - keep)
    return h(encoded[:keep]), len(encoded) - keep


def build_cell() -> dict[str, Any]:
    vectors = []
    for name, cell in _circuit_cells():
        enc = cell.encode()
        prefix, zeros = _strip_padding(enc, 5 + len(cell.payload))
        vectors.append(
            {
                "name": name,
                "circ_id": cell.circ_id,
                "command": int(cell.command),
                "payload": h(cell.payload),
                "encoding_prefix": prefix,
                "zero_padding": zeros,
            }
        )
    return {
        "description": (
            "Cells (docs/protocol.md, Cells): encoding = encoding_prefix followed by zero_padding zero "
            f"bytes, {CELL_LEN} bytes in all"
        ),
        "generator": GENERATOR,
        "seed": SEED_CELL,
        "vectors": vectors,
    }


def _hs_relay_messages(rng: SeededRng) -> list[tuple[str, rm.RelayMessage]]:
    """The onion-service messages (docs/protocol.md §16.6), bodies from wire.hs_cells."""
    C = rm.RelayCommand
    key, mac, sig = rng.random_bytes(32), rng.random_bytes(32), rng.random_bytes(64)
    cookie, info, x = rng.random_bytes(20), rng.random_bytes(64), rng.random_bytes(32)
    dos = ((hc.ExtType.DOS_PARAMS, hc.DosParams(25, 200).encode()),)
    intro = hc.Introduce1(key, (), x, rng.random_bytes(hc.INTRODUCE_PLAINTEXT_LEN), mac)
    return [
        (
            "ESTABLISH_INTRO with DoS parameters",
            rm.RelayMessage(C.ESTABLISH_INTRO, 0, hc.EstablishIntro(key, dos, mac, sig).encode()),
        ),
        (
            "ESTABLISH_RENDEZVOUS",
            rm.RelayMessage(C.ESTABLISH_RENDEZVOUS, 0, hc.EstablishRendezvous(cookie).encode()),
        ),
        ("INTRODUCE1", rm.RelayMessage(C.INTRODUCE1, 0, intro.encode())),
        ("INTRODUCE2 (INTRODUCE1's body)", rm.RelayMessage(C.INTRODUCE2, 0, intro.encode())),
        ("RENDEZVOUS1", rm.RelayMessage(C.RENDEZVOUS1, 0, hc.Rendezvous1(cookie, info).encode())),
        ("RENDEZVOUS2", rm.RelayMessage(C.RENDEZVOUS2, 0, hc.Rendezvous2(info).encode())),
        ("INTRO_ESTABLISHED", rm.RelayMessage(C.INTRO_ESTABLISHED, 0, hc.IntroEstablished().encode())),
        ("RENDEZVOUS_ESTABLISHED", rm.RelayMessage(C.RENDEZVOUS_ESTABLISHED, 0, b"")),
        (
            "INTRODUCE_ACK success",
            rm.RelayMessage(C.INTRODUCE_ACK, 0, hc.IntroduceAck(hc.IntroduceAckStatus.SUCCESS).encode()),
        ),
    ]


def _relay_messages() -> list[tuple[str, rm.RelayMessage]]:
    rng = SeededRng(SEED_RELAY_MSG)
    identity, skin, reply, digest = (rng.random_bytes(n) for n in (32, 96, 64, 16))
    C = rm.RelayCommand
    return [
        ("BEGIN hostname", rm.RelayMessage(C.BEGIN, 1, rm.Begin("example.com", 443).encode())),
        ("BEGIN IPv4", rm.RelayMessage(C.BEGIN, 2, rm.Begin("192.0.2.10", 80, rm.BeginFlags(0)).encode())),
        (
            "BEGIN IPv6, IPv6 preferred",
            rm.RelayMessage(
                C.BEGIN,
                3,
                rm.Begin("2001:db8::1", 8443, rm.BeginFlags.IPV6_OK | rm.BeginFlags.IPV6_PREFERRED).encode(),
            ),
        ),
        ("DATA", rm.RelayMessage(C.DATA, 1, b"GET / HTTP/1.0\r\n\r\n")),
        ("END DONE", rm.RelayMessage(C.END, 1, rm.End(rm.EndReason.DONE).encode())),
        ("END EXITPOLICY", rm.RelayMessage(C.END, 2, rm.End(rm.EndReason.EXITPOLICY).encode())),
        ("CONNECTED IPv4", rm.RelayMessage(C.CONNECTED, 1, rm.Connected("93.184.215.14", 0).encode())),
        (
            "CONNECTED IPv6 with ttl",
            rm.RelayMessage(C.CONNECTED, 3, rm.Connected("2001:db8::1", 300).encode()),
        ),
        ("CONNECTED no address", rm.RelayMessage(C.CONNECTED, 4, rm.Connected(None).encode())),
        ("SENDME circuit (v1, digest = T1)", rm.RelayMessage(C.SENDME, 0, rm.Sendme(1, digest).encode())),
        ("SENDME stream", rm.RelayMessage(C.SENDME, 1, b"")),
        (
            "EXTEND IPv4 + IPv6 + Ed25519 identity, ntor",
            rm.RelayMessage(
                C.EXTEND,
                0,
                rm.Extend((("192.0.2.7", 9001), ("2001:db8::7", 9001)), identity, 1, skin).encode(),
            ),
        ),
        ("EXTENDED", rm.RelayMessage(C.EXTENDED, 0, rm.Extended(reply).encode())),
        ("TRUNCATE (no body; not implemented by relays)", rm.RelayMessage(C.TRUNCATE, 0, b"")),
        (
            "TRUNCATED CONNECTFAILED",
            rm.RelayMessage(C.TRUNCATED, 0, rm.Truncated_(DestroyReason.CONNECTFAILED).encode()),
        ),
        ("DROP (body ignored)", rm.RelayMessage(C.DROP, 0, b"")),
        ("RESOLVE hostname", rm.RelayMessage(C.RESOLVE, 5, rm.Resolve("example.org").encode())),
        ("RESOLVE reverse (IPv4 literal)", rm.RelayMessage(C.RESOLVE, 6, rm.Resolve("192.0.2.53").encode())),
        (
            "RESOLVED two addresses",
            rm.RelayMessage(
                C.RESOLVED,
                5,
                rm.Resolved(
                    ((rm.ResolvedType.IPV4, "192.0.2.80", 60), (rm.ResolvedType.IPV6, "2001:db8::80", 60))
                ).encode(),
            ),
        ),
        (
            "RESOLVED hostname (reverse answer)",
            rm.RelayMessage(
                C.RESOLVED, 6, rm.Resolved(((rm.ResolvedType.HOSTNAME, "ns.example.net", 60),)).encode()
            ),
        ),
        (
            "RESOLVED error",
            rm.RelayMessage(
                C.RESOLVED, 7, rm.Resolved(((rm.ResolvedType.ERROR_NONTRANSIENT, "", 0),)).encode()
            ),
        ),
        (
            "DHT_RPC find_node to an IPv4 DHT contact (request id 9)",
            rm.RelayMessage(
                C.DHT_RPC,
                9,
                DhtRpc("192.0.2.44", 4000, b"\x92\xa9find_node\x92\xc4\x02ab\xc4\x02cd").encode(),
            ),
        ),
        (
            "DHT_ANSWER OK, last chunk",
            rm.RelayMessage(C.DHT_ANSWER, 9, DhtAnswer(DhtStatus.OK, False, b"\x90").encode()),
        ),
        ("CONNECT_UDP name :53", rm.RelayMessage(C.CONNECT_UDP, 10, rm.Begin("dns.example", 53).encode())),
        ("CONNECTED_UDP IPv4", rm.RelayMessage(C.CONNECTED_UDP, 10, rm.Connected("192.0.2.53", 0).encode())),
        ("DATAGRAM (one UDP payload)", rm.RelayMessage(C.DATAGRAM, 10, b"\x12\x34\x01\x00\x00\x01")),
        (
            "DIR_GET DIFF from a digest, epoch 493000 (request id 11)",
            rm.RelayMessage(C.DIR_GET, 11, DirGet(2, 493000, bytes(range(32)), 0).encode()),
        ),
        (
            "DIR_DATA OK, more chunks follow (request id 11)",
            rm.RelayMessage(C.DIR_DATA, 11, DirData(DirStatus.OK, True, b"OMDL").encode()),
        ),
        *_hs_relay_messages(rng),
    ]


def build_relay_msg() -> dict[str, Any]:
    vectors = []
    for name, msg in _relay_messages():
        plain = msg.encode_plain()
        prefix, zeros = _strip_padding(plain, TAG + 5 + len(msg.body))
        vectors.append(
            {
                "name": name,
                "command": int(msg.command),
                "stream_id": msg.stream_id,
                "body": h(msg.body),
                "plain_prefix": prefix,
                "zero_padding": zeros,
            }
        )
    return {
        "description": (
            "Relay messages before any layer (docs/protocol.md, Relay messages): the 4091-byte plain "
            "relay payload = plain_prefix (zero tag | header | body) followed by zero_padding zero bytes"
        ),
        "generator": GENERATOR,
        "seed": SEED_RELAY_MSG,
        "vectors": vectors,
    }


BUILDERS = {
    "kdf.json": build_kdf,
    "ntor.json": build_ntor,
    "onion_layer.json": build_onion_layer,
    "onion_layer_aes_gcm.json": lambda: build_onion_layer(LayerSuite.AES_GCM),
    "link.json": build_link,
    "cell.json": build_cell,
    "relay_msg.json": build_relay_msg,
}


def regenerate() -> None:
    """Rewrite every vector file from the current code (only after a deliberate wire change)."""
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        if name in NEEDS_AES and not HARDWARE_AES:
            print(f"kept {VECTOR_DIR / name}: this machine has no hardware AES")
            continue
        (VECTOR_DIR / name).write_text(json.dumps(build(), indent=1) + "\n")
        print(f"wrote {VECTOR_DIR / name}")


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTOR_DIR / name).read_text())


# =================================================================================================
# An independent implementation of the spec (docs/protocol.md), sharing no code with onionmesh.
# =================================================================================================
def _rotl(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 7)


def _chacha_rounds(state: list[int]) -> list[int]:
    s = list(state)
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return s


_SIGMA = list(struct.unpack("<4I", b"expand 32-byte k"))


def _hchacha20(key: bytes, nonce16: bytes) -> bytes:
    s = _chacha_rounds(_SIGMA + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16)))
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _chacha20_ietf(key: bytes, nonce12: bytes, counter: int, n: int) -> bytes:
    out = bytearray()
    base = _SIGMA + list(struct.unpack("<8I", key))
    while len(out) < n:
        state = [*base, counter, *struct.unpack("<3I", nonce12)]
        mixed = _chacha_rounds(state)
        out += struct.pack("<16I", *((x + y) & 0xFFFFFFFF for x, y in zip(mixed, state, strict=True)))
        counter += 1
    return bytes(out[:n])


def _keystream_spec(key: bytes, nonce24: bytes, n: int) -> bytes:
    """XChaCha20 (draft-irtf-cfrg-xchacha) with block counter 1, as the spec defines S()."""
    return _chacha20_ietf(_hchacha20(key, nonce24[:16]), bytes(4) + nonce24[16:], 1, n)


def _bxor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _poly1305(key32: bytes, msg: bytes) -> bytes:
    """RFC 8439 §2.5, with Python integers."""
    r = int.from_bytes(key32[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s, p, acc = int.from_bytes(key32[16:], "little"), (1 << 130) - 5, 0
    for i in range(0, len(msg), 16):
        block = msg[i : i + 16] + b"\x01"
        acc = (acc + int.from_bytes(block, "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _mac_spec(key: bytes, data: bytes) -> bytes:
    """MAC(K, M): the ChaCha20-Poly1305 (RFC 8439) tag of an empty message with AD = M, nonce 0."""
    pad = bytes(-len(data) % 16)
    one_time_key = _chacha20_ietf(key, bytes(12), 0, 32)
    return _poly1305(one_time_key, data + pad + struct.pack("<QQ", len(data), 0))


def _aes_sbox() -> list[int]:
    """FIPS-197's S-box, computed: multiplicative inverse in GF(2^8), then the affine map."""
    sbox, p, q = [0x63] * 256, 1, 1
    while True:
        p ^= ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)  # p *= 3
        for shift in (1, 2, 4):  # q /= 3
            q ^= q << shift
        q &= 0xFF
        q ^= 0x09 if q & 0x80 else 0
        rot = [((q << i) | (q >> (8 - i))) & 0xFF for i in range(5)]
        sbox[p] = rot[0] ^ rot[1] ^ rot[2] ^ rot[3] ^ rot[4] ^ 0x63
        if p == 1:
            return sbox


_SBOX = _aes_sbox()


def _xtime(b: int) -> int:
    return ((b << 1) ^ (0x1B if b & 0x80 else 0)) & 0xFF


def _aes256_encrypt_block(key: bytes, block: bytes) -> bytes:
    """FIPS-197 AES-256, one block, with Python lists (slow and plain on purpose)."""
    w = [list(key[i : i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        t = list(w[i - 1])
        if i % 8 == 0:
            t = [_SBOX[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            t = [_SBOX[b] for b in t]
        w.append([a ^ b for a, b in zip(w[i - 8], t, strict=True)])
    round_keys = [w[4 * r] + w[4 * r + 1] + w[4 * r + 2] + w[4 * r + 3] for r in range(15)]
    s = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for r in range(1, 15):
        s = [_SBOX[b] for b in s]
        s = [s[((c + row) % 4) * 4 + row] for c in range(4) for row in range(4)]  # ShiftRows
        if r < 14:  # MixColumns
            mixed = []
            for c in range(4):
                a = s[4 * c : 4 * c + 4]
                x = [_xtime(v) for v in a]
                mixed += [
                    x[0] ^ x[1] ^ a[1] ^ a[2] ^ a[3],
                    a[0] ^ x[1] ^ x[2] ^ a[2] ^ a[3],
                    a[0] ^ a[1] ^ x[2] ^ x[3] ^ a[3],
                    x[0] ^ a[0] ^ a[1] ^ a[2] ^ x[3],
                ]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[r], strict=True)]
    return bytes(s)


def _ghash(h: bytes, ad: bytes, ciphertext: bytes) -> bytes:
    """NIST SP 800-38D GHASH over A and C, zero-padded, then the two 64-bit bit lengths."""

    def pad(x: bytes) -> bytes:
        return x + bytes(-len(x) % 16)

    blocks = pad(ad) + pad(ciphertext) + struct.pack(">QQ", 8 * len(ad), 8 * len(ciphertext))
    hh, y = int.from_bytes(h, "big"), 0
    for i in range(0, len(blocks), 16):
        x, z, v = y ^ int.from_bytes(blocks[i : i + 16], "big"), 0, hh
        for bit in range(127, -1, -1):
            z ^= v if (x >> bit) & 1 else 0
            v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
        y = z
    return y.to_bytes(16, "big")


def _gcm_keystream(key: bytes, nonce12: bytes, n: int) -> bytes:
    """AES-256-GCM's CTR keystream: counter blocks nonce ‖ 2, 3, ... (block 1 masks the tag)."""
    blocks = range(2, 2 + -(-n // 16))
    return b"".join(_aes256_encrypt_block(key, nonce12 + i.to_bytes(4, "big")) for i in blocks)[:n]


def _gcm_mac_spec(key: bytes, data: bytes) -> bytes:
    """MAC(K, M) of the AES_GCM suite: the GCM tag of an empty message with AD = M, nonce 0."""
    h = _aes256_encrypt_block(key, bytes(16))
    return _bxor(_ghash(h, data, b""), _aes256_encrypt_block(key, bytes(12) + b"\x00\x00\x00\x01"))


def _suite_spec(suite: str) -> tuple[Callable[[bytes, bytes], bytes], Callable[[bytes, bytes, int], bytes]]:
    """(MAC(K, M), STREAM(K, T1, n)) of a suite, as the spec writes them."""
    if suite == "AES_GCM":
        return _gcm_mac_spec, _gcm_keystream
    return _mac_spec, lambda key, t1, n: _keystream_spec(key, t1 + bytes(12), n)


def _spec_R(
    ks: bytes, kf: bytes, payload: bytes, suite: str = "XCHACHA"
) -> tuple[bytes, bytes, tuple[bytes, bytes]]:
    """R as written in the spec; returns (output, digest, next (Ks, Kf))."""
    mac_fn, stream_fn = _suite_spec(suite)
    t, c = payload[:TAG], payload[TAG:]
    mac = mac_fn(kf, c)
    t1 = _bxor(t, mac[:TAG])
    stream = stream_fn(ks, t1, len(c) + 80)
    c2, n = _bxor(c, stream[: len(c)]), stream[len(c) :]
    return t1 + c2, _bxor(mac, n[64:80]), (n[:32], n[32:64])


def _spec_R_inv(
    ks: bytes, kf: bytes, payload: bytes, suite: str = "XCHACHA"
) -> tuple[bytes, bytes, tuple[bytes, bytes]]:
    mac_fn, stream_fn = _suite_spec(suite)
    t1, c2 = payload[:TAG], payload[TAG:]
    stream = stream_fn(ks, t1, len(c2) + 80)
    c, n = _bxor(c2, stream[: len(c2)]), stream[len(c2) :]
    mac = mac_fn(kf, c)
    return _bxor(t1, mac[:TAG]) + c, _bxor(mac, n[64:80]), (n[:32], n[32:64])


def _spec_extract(secret: bytes, salt: bytes = b"") -> bytes:
    return hashlib.blake2b(salt + secret, key=b"onionmesh kdf extract v1", digest_size=64).digest()


def _spec_expand(prk: bytes, info: bytes, n: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hashlib.blake2b(block + info + bytes([i]), key=prk, digest_size=64).digest()
        out += block
        i += 1
    return out[:n]


def _link_spec(e_i: bytes, e_r: bytes, identity: IdentityKey, offer: int, suite: int) -> dict[str, Any]:
    E_i, E_r = crypto_scalarmult_base(e_i), crypto_scalarmult_base(e_r)
    msg1 = b"OMLK" + b"\x00\x02" + offer.to_bytes(2, "big") + E_i + bytes(24)
    th = hashlib.blake2b(msg1 + E_r, digest_size=32, person=b"om-link-hash").digest()
    shared = crypto_scalarmult(e_i, E_r)
    assert shared == crypto_scalarmult(e_r, E_i)
    prk = _spec_extract(shared, th)
    k_hs = _spec_expand(prk, b"onionmesh link v2 handshake", 32)
    m = _spec_expand(prk, b"onionmesh link v2 record keys" + suite.to_bytes(2, "big"), 128)
    k_i2r, k_r2i, hk_i2r, hk_r2i = (m[i : i + 32] for i in range(0, 128, 32))
    sig = identity.sign(b"onionmesh link handshake v2\x00", th)
    plain = identity.public + sig + b"\x00\x02" + suite.to_bytes(2, "big")
    msg2 = E_r + crypto_aead_chacha20poly1305_ietf_encrypt(plain, th, bytes(12), k_hs)

    def mask(hk: bytes, seq: int) -> int:
        return int.from_bytes(hashlib.blake2b(seq.to_bytes(8, "big"), key=hk, digest_size=2).digest(), "big")

    def record(key: bytes, hk: bytes, seq: int, cells: list[bytes]) -> bytes:
        header = (len(cells) ^ mask(hk, seq)).to_bytes(2, "big")
        if suite == 1:  # ChaCha20-Poly1305, 12-byte nonce, 16-byte tag
            nonce = bytes(4) + seq.to_bytes(8, "big")
            return header + crypto_aead_chacha20poly1305_ietf_encrypt(b"".join(cells), header, nonce, key)
        assert suite == 2  # AEGIS-256, 32-byte nonce, 32-byte tag (libsodium's own, not onionmesh's call)
        nonce = bytes(24) + seq.to_bytes(8, "big")
        return header + crypto_aead_aegis256_encrypt(b"".join(cells), header, nonce, key)

    return {
        "msg1": msg1,
        "h": th,
        "shared": shared,
        "k_hs": k_hs,
        "k_i2r": k_i2r,
        "k_r2i": k_r2i,
        "hk_i2r": hk_i2r,
        "hk_r2i": hk_r2i,
        "msg2_plain": plain,
        "msg2": msg2,
        "mask": mask,
        "record": record,
    }


# =================================================================================================
# Tests
# =================================================================================================
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_vector_file_matches_code(name: str) -> None:
    if name in NEEDS_AES and not HARDWARE_AES:
        pytest.skip("libsodium runs AES-GCM only with hardware AES")
    assert load(name) == BUILDERS[name](), f"{name} differs from the code; see the module docstring"


def test_spec_kdf() -> None:
    v = load("kdf.json")
    for case in v["extract"]:
        assert _spec_extract(unh(case["secret"]), unh(case["salt"])).hex() == case["prk"]
    for case in v["expand"]:
        okm = _spec_expand(unh(case["prk"]), unh(case["info"]), case["length"])
        assert okm.hex() == case["okm"]
    for case in v["mac"]:
        got = hashlib.blake2b(unh(case["data"]), key=unh(case["key"]), digest_size=case["size"]).digest()
        assert got.hex() == case["mac"]
    # expand is prefix-stable: shorter outputs are prefixes of longer ones
    okms = [unh(c["okm"]) for c in v["expand"]]
    assert all(okms[-1].startswith(o) for o in okms)


def test_spec_ntor() -> None:
    v = load("ntor.json")
    relay = v["relay"]
    ident, B, b = unh(relay["identity_pk"]), unh(relay["onion_pk"]), unh(relay["onion_secret"])
    x, y = unh(v["client_x"]), unh(v["relay_y"])
    X, Y = crypto_scalarmult_base(x), crypto_scalarmult_base(y)
    assert (X.hex(), Y.hex(), crypto_scalarmult_base(b).hex()) == (
        v["client_X"],
        v["relay_Y"],
        relay["onion_pk"],
    )
    assert bytes(SigningKey(unh(relay["identity_seed"])).verify_key) == ident
    fp = hashlib.blake2b(ident, digest_size=20, person=b"om-fingerprint").hexdigest().upper()
    assert fp == relay["fingerprint"]
    # onion-key certificate: onion_pk | u64 valid_after | u64 expires | sig(context || first 48 bytes)
    cert = unh(relay["onion_cert"]["encoding"])
    assert len(cert) == 112 and cert[:32] == B
    assert struct.unpack(">QQ", cert[32:48]) == (
        relay["onion_cert"]["valid_after"],
        relay["onion_cert"]["expires"],
    )
    VerifyKey(ident).verify(b"onionmesh onion-key certificate v1\x00" + cert[:48], cert[48:])
    # the handshake, both sides, from the formulas
    protoid = b"onionmesh-ntor-x25519-blake2b-1"
    assert unh(v["onionskin"]) == ident + B + X
    htype = b"\x00\x03"  # the XCHACHA layer suite
    assert v["handshake_type"] == 3
    assert unh(v["create_payload"]) == htype + b"\x00\x60" + ident + B + X
    si_client = crypto_scalarmult(x, Y) + crypto_scalarmult(x, B) + ident + B + X + Y + protoid
    si_relay = crypto_scalarmult(y, X) + crypto_scalarmult(b, X) + ident + B + X + Y + protoid
    assert si_client == si_relay == unh(v["secret_input"])
    key_seed = hashlib.blake2b(si_client, key=protoid + b":key_extract", digest_size=64).digest()
    verify = hashlib.blake2b(si_client, key=protoid + b":verify", digest_size=32).digest()
    auth_input = verify + ident + B + Y + X + protoid + b"Server" + htype
    auth = hashlib.blake2b(auth_input, key=protoid + b":mac", digest_size=32).digest()
    assert (key_seed.hex(), verify.hex(), auth.hex()) == (v["key_seed"], v["verify"], v["auth"])
    assert unh(v["reply"]) == Y + auth
    assert unh(v["created_payload"]) == b"\x00\x40" + Y + auth
    material = _spec_expand(key_seed, protoid + b":key_expand" + htype, 128)
    assert material.hex() == v["key_material"]
    keys = v["hop_keys"]
    assert [keys[k] for k in ("forward_stream", "forward_mac", "backward_stream", "backward_mac")] == [
        material[i : i + 32].hex() for i in range(0, 128, 32)
    ]


def test_ntor_reply_checks() -> None:
    v = load("ntor.json")
    state, _, reply, _, _ = _ntor_run()
    assert reply.hex() == v["reply"]
    bad = bytearray(reply)
    bad[40] ^= 1
    with pytest.raises(CryptoError, match="authenticate"):
        ntor.client_finish(state, bytes(bad))
    with pytest.raises(CryptoError, match="infinity"):
        ntor.client_finish(state, bytes(32) + reply[32:])


def test_spec_aes_and_ghash_match_fips197_and_libsodium() -> None:
    """The spec's pure-Python AES-256 and GHASH, against FIPS-197 C.3 and libsodium's GCM."""
    ct = _aes256_encrypt_block(bytes(range(32)), bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert ct.hex() == "8ea2b7ca516745bfeafc49904b496089"
    if HARDWARE_AES:
        key, nonce, ad, msg = bytes(range(1, 33)), bytes(range(12)), b"associated", b"m" * 40
        sealed = crypto_aead_aes256gcm_encrypt(msg, ad, nonce, key)
        assert _bxor(msg, _gcm_keystream(key, nonce, 40)) == sealed[:40]
        h = _aes256_encrypt_block(key, bytes(16))
        j0 = _aes256_encrypt_block(key, nonce + b"\x00\x00\x00\x01")
        assert _bxor(_ghash(h, ad, sealed[:40]), j0) == sealed[40:]


@pytest.mark.parametrize("name", ["onion_layer.json", "onion_layer_aes_gcm.json"])
def test_spec_onion_layer(name: str) -> None:
    v = load(name)
    suite = v["suite"]
    mac_fn, stream_fn = _suite_spec(suite)
    ks, kf = unh(v["apply"][0]["key_stream"]), unh(v["apply"][0]["key_mac"])
    runnable = suite == "XCHACHA" or HARDWARE_AES  # the code's own AES suite needs the hardware
    inverse = OnionLayer(ks, kf, LayerSuite[suite]) if runnable else None
    for cell in v["apply"]:
        assert (ks.hex(), kf.hex()) == (cell["key_stream"], cell["key_mac"])
        out, digest, (ks, kf) = _spec_R(ks, kf, unh(cell["input"]), suite)
        assert (out.hex(), out[:TAG].hex(), digest.hex()) == (cell["output"], cell["t1"], cell["digest"])
        assert (ks.hex(), kf.hex()) == (cell["next_key_stream"], cell["next_key_mac"])
        mac = mac_fn(unh(cell["key_mac"]), unh(cell["input"])[TAG:])
        assert mac.hex() == cell["mac"] and _bxor(mac, unh(cell["digest_mask"])) == digest
        assert unh(cell["t1"]) == _bxor(unh(cell["input"])[:TAG], mac[:TAG])
        stream = stream_fn(unh(cell["key_stream"]), unh(cell["t1"]), BODY + 80)
        assert stream[:64].hex() == cell["keystream_first_64"]
        assert stream[BODY : BODY + 64].hex() == cell["next_key_stream"] + cell["next_key_mac"]
        if inverse is not None:
            assert inverse.unapply(out).hex() == cell["input"]  # R^-1 under the same key state inverts R
            assert inverse.digest() == digest
    # the same plaintext twice gives unrelated cells: the keys changed in between
    assert v["apply"][0]["input"] == v["apply"][1]["input"]
    assert v["apply"][0]["output"] != v["apply"][1]["output"]
    two = v["two_hops"]
    k1 = (unh(two["hop1_forward"]["key_stream"]), unh(two["hop1_forward"]["key_mac"]))
    k2 = (unh(two["hop2_forward"]["key_stream"]), unh(two["hop2_forward"]["key_mac"]))
    inner, digest2, _ = _spec_R_inv(*k2, unh(two["plain"]), suite)
    wire, _, _ = _spec_R_inv(*k1, inner, suite)
    assert (inner.hex(), wire.hex(), digest2.hex()) == (
        two["after_client_hop2_layer"],
        two["wire"],
        two["digest_hop2"],
    )
    assert _spec_R(*k1, wire, suite)[0] == inner and _spec_R(*k2, inner, suite)[0] == unh(two["plain"])


@pytest.mark.parametrize("suite", [s for s in LayerSuite if s is LayerSuite.XCHACHA or HARDWARE_AES])
def test_onion_layer_tamper_replay_and_drop(suite: LayerSuite) -> None:
    """What the spec promises about faults, on the vector keys."""
    v = load("onion_layer.json")
    ks, kf = unh(v["apply"][0]["key_stream"]), unh(v["apply"][0]["key_mac"])
    client = OnionLayer(ks, kf, suite)
    cells = [
        client.unapply(rm.RelayMessage(rm.RelayCommand.DATA, 1, bytes([i])).encode_plain()) for i in range(4)
    ]
    # a one-bit flip anywhere: the honest hop's output is noise, and so is everything after it
    for pos in (0, TAG - 1, TAG, 500, 4070):
        relay = OnionLayer(ks, kf, suite)
        flipped = bytearray(cells[0])
        flipped[pos] ^= 0x01
        out0 = relay.apply(bytes(flipped))
        plain0 = rm.RelayMessage(rm.RelayCommand.DATA, 1, b"\x00").encode_plain()
        assert not is_recognized(out0)
        assert sum(a != b for a, b in zip(out0, plain0, strict=True)) > 3900  # no controlled flip survives
        assert not any(is_recognized(relay.apply(c)) for c in cells[1:])
    # replay (cell 0 again), drop (skip cell 1) and reorder (2 before 1) all fail from then on
    for order in ([0, 0, 1], [0, 2, 3], [0, 2, 1]):
        relay = OnionLayer(ks, kf, suite)
        results = [is_recognized(relay.apply(cells[i])) for i in order]
        assert results == [True, False, False]


def test_spec_link() -> None:
    v = load("link.json")
    identity = IdentityKey(unh(v["responder_identity_seed"]))
    e_i, e_r = unh(v["initiator_e_secret"]), unh(v["responder_e_secret"])
    assert [(s["suite"], s["initiator_offer"]) for s in v["sessions"]] == [(2, 0x0003), (1, 0x0001)]
    for session in v["sessions"]:
        suite = session["suite"]
        spec = _link_spec(e_i, e_r, identity, session["initiator_offer"], suite)
        assert spec["shared"].hex() == v["shared_secret"]
        assert spec["msg1"].hex() == session["msg1"] and len(spec["msg1"]) == 64
        assert spec["msg2"].hex() == session["msg2"] and len(spec["msg2"]) == 148
        for key in ("k_hs", "k_i2r", "k_r2i", "hk_i2r", "hk_r2i"):
            assert spec[key].hex() == session[key]
        assert spec["h"].hex() == session["transcript_hash"]
        plain = crypto_aead_chacha20poly1305_ietf_decrypt(
            unh(session["msg2"])[32:], spec["h"], bytes(12), spec["k_hs"]
        )
        assert plain.hex() == session["msg2_plaintext"] and plain[96:100] == b"\x00\x02" + suite.to_bytes(
            2, "big"
        )
        VerifyKey(plain[:32]).verify(b"onionmesh link handshake v2\x00" + spec["h"], plain[32:96])
        for rec in session["records"]:
            i2r = rec["direction"] == "initiator->responder"
            key, hk = (spec["k_i2r"], spec["hk_i2r"]) if i2r else (spec["k_r2i"], spec["hk_r2i"])
            cells = [unh(c) for c in rec["cells"]]
            raw = unh(rec["record"])
            assert raw == spec["record"](key, hk, rec["seq"], cells)
            assert len(raw) == 2 + CELL_LEN * len(cells) + {1: 16, 2: 32}[suite]
            assert int.from_bytes(raw[:2], "big") ^ rec["mask"] == len(cells)
    # keys for the two suites are independent; the handshake key depends on the offer only via h
    a, b = v["sessions"]
    assert len({a["k_i2r"], a["k_r2i"], b["k_i2r"], b["k_r2i"]}) == 4


@pytest.mark.parametrize("session", [0, 1])
def test_link_record_faults_close(session: int) -> None:
    """Replayed, reordered or modified records do not authenticate."""
    v = load("link.json")
    s = v["sessions"][session]
    if s["suite"] not in SUPPORTED_SUITES:
        pytest.skip("AEGIS-256 needs hardware AES")
    identity = IdentityKey(unh(v["responder_identity_seed"]))
    r1, r2 = unh(s["records"][0]["record"]), unh(s["records"][1]["record"])
    filler = bytes(MAX_RECORD_LEN)  # enough bytes for any record length the header may claim
    for stream in (r1 + r1, r2, r1[:100] + bytes([r1[100] ^ 1]) + r1[101:], r2 + r1):
        res = LinkProtocol(
            LinkRole.RESPONDER,
            SeededRng(SEED_LINK_RESPONDER),
            identity=identity,
            suites=frozenset(s["responder_suites"]) & SUPPORTED_SUITES,
        )
        assert res.receive_data(unh(s["msg1"])) == [LinkEstablished(None, s["suite"])]
        with pytest.raises(CryptoError, match="authenticate"):
            res.receive_data(stream + filler)


def test_spec_cells() -> None:
    v = load("cell.json")
    _state, skin, reply, keys, _ = _ntor_run()
    relay = RelayCircuit(keys, SeededRng(99))
    for vec in v["vectors"]:
        enc = unh(vec["encoding_prefix"]) + bytes(vec["zero_padding"])
        assert len(enc) == CELL_LEN
        assert enc[:4] == vec["circ_id"].to_bytes(4, "big") and enc[4] == vec["command"]
        cell = Cell.decode(enc)
        assert cell.payload[: len(unh(vec["payload"]))] == unh(vec["payload"])
        if cell.command is CellCommand.CREATE:
            assert parse_create(cell.payload) == (ntor.HANDSHAKE_TYPE_XCHACHA, skin)
        elif cell.command is CellCommand.CREATED:
            assert parse_created(cell.payload) == reply
        elif cell.command in (CellCommand.RELAY, CellCommand.RELAY_EARLY):
            relay.handle_forward(cell.command, cell.payload)  # recognized by the one hop, in order
        elif cell.command is CellCommand.DESTROY:
            assert DestroyReason.of(cell.payload[0]) in (DestroyReason.REQUESTED, DestroyReason.PROTOCOL)
        elif cell.command is CellCommand.DESCRIPTOR:
            assert DescriptorAssembler().feed(cell.payload) == b"\x00DESCRIPTOR BYTES"
        elif cell.command is CellCommand.DESCRIPTOR_GET:
            assert cell.circ_id == 0 and cell.payload == bytes(len(cell.payload))
    kinds = [type(e).__name__ for e in relay.take_events()]
    assert kinds == ["BeginRequested", "ExtendRequested"]


_BODY_CODECS = {
    rm.RelayCommand.BEGIN: rm.Begin,
    rm.RelayCommand.CONNECT_UDP: rm.Begin,  # CONNECT_UDP has BEGIN's body, CONNECTED_UDP CONNECTED's
    rm.RelayCommand.CONNECTED_UDP: rm.Connected,
    rm.RelayCommand.END: rm.End,
    rm.RelayCommand.CONNECTED: rm.Connected,
    rm.RelayCommand.RESOLVE: rm.Resolve,
    rm.RelayCommand.RESOLVED: rm.Resolved,
    rm.RelayCommand.EXTEND: rm.Extend,
    rm.RelayCommand.EXTENDED: rm.Extended,
    rm.RelayCommand.TRUNCATED: rm.Truncated_,
    rm.RelayCommand.DHT_RPC: DhtRpc,
    rm.RelayCommand.DHT_ANSWER: DhtAnswer,
    rm.RelayCommand.DIR_GET: DirGet,
    rm.RelayCommand.DIR_DATA: DirData,
    rm.RelayCommand.ESTABLISH_INTRO: hc.EstablishIntro,
    rm.RelayCommand.ESTABLISH_RENDEZVOUS: hc.EstablishRendezvous,
    rm.RelayCommand.INTRODUCE1: hc.Introduce1,
    rm.RelayCommand.INTRODUCE2: hc.Introduce1,
    rm.RelayCommand.RENDEZVOUS1: hc.Rendezvous1,
    rm.RelayCommand.RENDEZVOUS2: hc.Rendezvous2,
    rm.RelayCommand.INTRO_ESTABLISHED: hc.IntroEstablished,
    rm.RelayCommand.RENDEZVOUS_ESTABLISHED: hc.RendezvousEstablished,
    rm.RelayCommand.INTRODUCE_ACK: hc.IntroduceAck,
}


def test_spec_relay_messages() -> None:
    v = load("relay_msg.json")
    seen = set()
    for vec in v["vectors"]:
        plain = unh(vec["plain_prefix"]) + bytes(vec["zero_padding"])
        body = unh(vec["body"])
        assert len(plain) == 4091 and plain[:TAG] == bytes(TAG)
        assert plain[TAG : TAG + 5] == struct.pack(">BHH", vec["command"], vec["stream_id"], len(body))
        msg = rm.RelayMessage.decode_plain(plain)
        assert (int(msg.command), msg.stream_id, msg.body) == (vec["command"], vec["stream_id"], body)
        codec = _BODY_CODECS.get(msg.command)
        if msg.command is rm.RelayCommand.SENDME and msg.stream_id == 0:
            codec = rm.Sendme
        if codec is not None:
            assert codec.decode(body).encode() == body  # one value, one encoding
        seen.add(msg.command)
    assert seen == set(rm.RelayCommand)


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
