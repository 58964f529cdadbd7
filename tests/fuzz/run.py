"""Run one onionmesh fuzz target: `python tests/fuzz/run.py TARGET --inputs 1000000`.

Engines:
  atheris  (default when `import atheris` works) coverage-guided libFuzzer; onionmesh is
           instrumented.  Seeds are written to WORKDIR/seeds/TARGET, new coverage goes to
           WORKDIR/corpus/TARGET, crashing inputs to WORKDIR/crashes/TARGET-crash-<sha1>.
  mutate   pure-Python structured mutation (no coverage), deterministic for a given --seed.

Exit status 0 means every input ran and nothing but documented errors escaped.  Extra arguments
after `--` go to libFuzzer (e.g. `-- -jobs=2`); a file path instead of a target name reproduces
one crash: `python tests/fuzz/run.py TARGET --repro CRASHFILE`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_WORKDIR = Path(os.environ.get("ONIONMESH_FUZZ_DIR", Path(tempfile.gettempdir()) / "onionmesh-fuzz"))


def _import_targets(instrument: bool):
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["onionmesh"]):
            import importlib
            import pkgutil

            import onionmesh

            # Instrument every onionmesh module the targets may reach, before anything imports it.
            for mod in pkgutil.walk_packages(onionmesh.__path__, "onionmesh."):
                if mod.name.startswith(("onionmesh.app.", "onionmesh.__main__")):
                    continue
                importlib.import_module(mod.name)
            from tests.fuzz import fuzz_targets
        try:
            with atheris.instrument_imports(include=["onionmesh"]):
                import onionmesh.app.config
        except ImportError:
            pass
        return fuzz_targets
    from tests.fuzz import fuzz_targets

    return fuzz_targets


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="target name, or 'list'")
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs to run (libFuzzer -runs)")
    ap.add_argument("--engine", choices=("atheris", "mutate", "auto"), default="auto")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--seed", type=int, default=0, help="RNG seed (mutate) / libFuzzer -seed")
    ap.add_argument("--repro", type=Path, help="run one saved input and show what it raises")
    ap.add_argument(
        "--tolerate-known",
        action="store_true",
        help="count the already-reported bugs (README, Findings) instead of stopping at them",
    )
    args = ap.parse_args(argv)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    ft = _import_targets(instrument=engine == "atheris" and args.repro is None)
    if args.target == "list":
        for t in ft.TARGETS.values():
            print(f"{t.name:16} {t.doc}")
        return 0
    target = ft.TARGETS[args.target]
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.tolerate_known:
        ft.TOLERATE_KNOWN = True
        ft.KNOWN_LOG = args.workdir / f"known-{target.name}.json"
    if target.name == "config" and not ft.config_available():
        print("onionmesh.app.config.check_file does not exist: nothing to fuzz", file=sys.stderr)
        return 0

    if args.repro is not None:
        data = args.repro.read_bytes()
        print(f"input ({len(data)} bytes): {data.hex()}")
        try:
            print("outcome:", target.one(data))
        except BaseException:
            traceback.print_exc()
            return 1
        return 0

    print(f"target={target.name} engine={engine} inputs={args.inputs}", flush=True)
    start = time.monotonic()
    if engine == "mutate":

        def progress(stats) -> None:
            rate = stats.inputs / (time.monotonic() - start)
            print(
                f"#{stats.inputs} corpus={stats.corpus} outcomes={len(stats.outcomes)} exec/s={rate:.0f}",
                flush=True,
            )

        stats = ft.mutate_engine(
            target, args.inputs, seed=args.seed, crash_dir=args.workdir / "crashes", progress=progress
        )
        wall = time.monotonic() - start
        print(
            f"DONE target={target.name} inputs={stats.inputs} wall_s={wall:.1f} "
            f"exec/s={stats.inputs / wall:.0f} outcomes={len(stats.outcomes)} crashes=0 "
            f"known_bug_hits={ft.KNOWN_HITS or 0}",
            flush=True,
        )
        return 0

    import atheris

    seeds_dir = args.workdir / "seeds" / target.name
    corpus_dir = args.workdir / "corpus" / target.name
    crash_dir = args.workdir / "crashes"
    for d in (seeds_dir, corpus_dir, crash_dir):
        d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(target.seeds()):
        (seeds_dir / f"seed-{i:03d}").write_bytes(s[: target.max_len])
    fuzz_args = [
        sys.argv[0],
        f"-runs={args.inputs}",
        f"-max_len={target.max_len}",
        f"-seed={args.seed or 1}",
        f"-artifact_prefix={crash_dir}/{target.name}-",
        "-timeout=10",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        "-print_pcs=0",
    ]
    if target.tokens:
        dict_path = args.workdir / f"{target.name}.dict"
        lines = ['"' + "".join(f"\\x{b:02x}" for b in t) + '"\n' for t in target.tokens]
        dict_path.write_text("".join(lines))
        fuzz_args.append(f"-dict={dict_path}")
    fuzz_args += [*extra, str(corpus_dir), str(seeds_dir)]
    one = target.one

    def test_one_input(data: bytes) -> None:
        one(data)

    atheris.Setup(fuzz_args, test_one_input)
    atheris.Fuzz()  # exits the process when -runs is reached (status 0) or on a crash
    return 0


if __name__ == "__main__":
    sys.exit(main())
