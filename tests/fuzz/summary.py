"""The figures table of a run_all.sh run, from its logs.

python tests/fuzz/summary.py DIR [TARGET...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def figures(workdir: Path, target: str) -> dict[str, str]:
    log = workdir / "logs" / f"{target}.log"
    if not log.exists():
        return {"target": target, "inputs": "-", "wall": "-", "rate": "-", "crashes": "not run"}
    text = log.read_text(errors="replace")
    out = {"target": target, "inputs": "?", "wall": "?", "rate": "?", "cov": "-", "ft": "-", "crashes": "?"}
    atheris_runs = re.search(r"stat::number_of_executed_units: (\d+)", text)
    mutate_runs = re.search(r"DONE target=\S+ inputs=(\d+)", text)
    if m := atheris_runs or mutate_runs:
        out["inputs"] = m.group(1)
    finals = re.findall(r"#\d+\s+DONE\s+cov: (\d+) ft: (\d+)", text)
    if finals:
        out["cov"], out["ft"] = finals[-1]
    if m := re.search(r"WALL target=\S+ rc=(\d+) wall_s=([0-9.]+)", text):
        rc, wall = int(m.group(1)), float(m.group(2))
        out["wall"] = f"{wall:.0f} s"
        if out["inputs"].isdigit() and wall:
            out["rate"] = f"{int(out['inputs']) / wall:.0f}/s"
        crashed = rc != 0 or "Uncaught Python exception" in text or "CRASH in" in text
        out["crashes"] = "1 (see log)" if crashed else "0"
    known = workdir / f"known-{target}.json"
    if known.exists():
        hits = json.loads(known.read_text())
        out["crashes"] += " (known: " + ", ".join(f"{k} x{v}+" for k, v in hits.items()) + ")"
    elif "not fuzz" in text:
        out["crashes"] = "skipped"
    return out


def main() -> None:
    workdir = Path(sys.argv[1])
    targets = sys.argv[2:] or sorted(p.stem for p in (workdir / "logs").glob("*.log"))
    print("| target | inputs run | wall time | inputs/s | cov (edges) | ft (features) | crashes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for t in targets:
        f = figures(workdir, t)
        print(
            f"| {t} | {f['inputs']} | {f['wall']} | {f['rate']} | {f.get('cov', '-')} | {f.get('ft', '-')} "
            f"| {f['crashes']} |"
        )


if __name__ == "__main__":
    main()
