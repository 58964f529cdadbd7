"""Per-cell crypto costs at the shipped cell size: each relay-crypto layer suite and each link
record suite, with the ratio of the AES-based suite to the ChaCha-based one measured in this run.

    python bench/crypto.py [--seconds 1.0]

Prints `name value unit` lines (µs per call, best of 5 timed loops).  Suites that need hardware
AES are skipped, with a message, on machines without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import per_call_us

from onionmesh.crypto import sodium
from onionmesh.crypto.onion_layer import LOCAL_SUITES, LayerSuite, OnionLayer
from onionmesh.wire.cell import CELL_LEN, CELL_PAYLOAD_LEN

RECORD_CELLS = 16  # what one stream read brings (runtime.transport.stream_pump.READ_CELLS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per figure")
    args = ap.parse_args()
    payload = bytes(range(256)) * (CELL_PAYLOAD_LEN // 256) + bytes(CELL_PAYLOAD_LEN % 256)
    layer_us: dict[LayerSuite, float] = {}
    for suite in LayerSuite:
        if suite not in LOCAL_SUITES:
            print(f"# layer suite {suite.name} needs hardware AES; skipped", file=sys.stderr)
            continue
        layer = OnionLayer(bytes(32), bytes(range(32)), suite)
        layer_us[suite] = per_call_us(lambda layer=layer: layer.apply(payload), args.seconds)
        print(f"crypto.layer_{suite.name.lower()}_apply_{CELL_PAYLOAD_LEN}B {layer_us[suite]:.2f} us")
    if len(layer_us) == 2:
        ratio = layer_us[LayerSuite.AES_GCM] / layer_us[LayerSuite.XCHACHA]
        print(f"crypto.layer_aes_gcm_over_xchacha {ratio:.2f} ratio")
    record = bytes(CELL_LEN * RECORD_CELLS)
    header, key = b"\x00\x10", bytes(32)
    seal_us = {
        "chacha20poly1305": per_call_us(
            lambda: sodium.chacha20poly1305_encrypt(record, header, bytes(12), key), args.seconds
        )
    }
    if sodium.HARDWARE_AES:
        seal_us["aegis256"] = per_call_us(
            lambda: sodium.aegis256_encrypt(record, header, bytes(32), key), args.seconds
        )
    else:
        print("# link suite AEGIS-256 needs hardware AES; skipped", file=sys.stderr)
    for name, us in seal_us.items():
        print(f"crypto.link_{name}_seal_{RECORD_CELLS}cells {us:.2f} us")
        print(f"crypto.link_{name}_seal_per_cell {us / RECORD_CELLS:.2f} us")
    if len(seal_us) == 2:
        ratio = seal_us["aegis256"] / seal_us["chacha20poly1305"]
        print(f"crypto.link_aegis256_over_chacha20poly1305 {ratio:.2f} ratio")


if __name__ == "__main__":
    main()
