"""Greedy k-center at scale: the O(n) running-minimum version against the n x n reference-style one.

    .venv/bin/python benchmarks/bench_kcenter.py                 # 20,000 x 384 (k=1000, with the reference)
                                                                 # and 52,002 x 384 (k=2600, O(n) only)
    .venv/bin/python benchmarks/bench_kcenter.py --big           # adds 1,000,000 x 384 (k=10,000, O(n) only)
    .venv/bin/python benchmarks/bench_kcenter.py --data diffuse  # one kind of data (default: both)

Each size runs ``instsel bench kcenter`` (``instsel_assets/bench.py``) on seeded synthetic unit
embeddings: ``clustered`` (Gaussian blobs) and ``diffuse`` (isotropic). Variants: the reference
(the full distance matrix, as DiverseEvol's code builds it; only where ``n x n`` fits: n <= 30,000
and its peak within 60% of the available memory), the O(n) version in float32 and float16, and the
O(n) version with triangle-inequality pruning in both precisions. The table gives seconds, the
``tracemalloc`` peak and the resident-set peak growth, the share of row-to-center distances
computed, the ratios against the reference, and whether each variant picks the same centers as the
baseline (the reference, else O(n) float32) or covers as well (covering radius within 1e-4;
computed while n x k <= 2e9, so not for ``--big``). The 52,002-row Alpaca-sized case has a goal:
under 5 s. ``--big`` runs for tens of minutes (each unpruned variant makes 10,000 passes over
1.5 GB). The JSON of every run is written to ``benchmarks/results/kcenter-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = [(20_000, 384, 1000), (52_002, 384, 2600)]
BIG = (1_000_000, 384, 10_000)
GOAL = {(52_002, 384, 2600): 5.0}  # seconds, fastest O(n) variant


def main(argv: list[str] | None = None) -> int:
    from instsel_assets.bench import run_kcenter_bench

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--big", action="store_true", help="add n=1,000,000 d=384 k=10,000 (O(n) only)")
    p.add_argument("--data", choices=("clustered", "diffuse", "both"), default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-prune", action="store_true", help="leave out the triangle-pruning variants")
    p.add_argument("--big-variants", default="float16,pruned-float32,pruned-float16",
                   help="variants run at 1M rows (comma-separated; default: the three fastest at 52K; 'all' for "
                        "every one: float32 adds k passes over 1.5 GB)")
    args = p.parse_args(argv)

    sizes = SIZES + ([BIG] if args.big else [])
    kinds = ("clustered", "diffuse") if args.data == "both" else (args.data,)
    results = []
    for n, dim, k in sizes:
        for kind in kinds:
            variants = None
            if (n, dim, k) == BIG and args.big_variants != "all":
                variants = [v.strip() for v in args.big_variants.split(",") if v.strip()]
            results.append(run_kcenter_bench(n=n, dim=dim, k=k, seed=args.seed, data=kind, prune=not args.no_prune,
                                             variants=variants,
                                             log=lambda msg: print(msg, file=sys.stderr, flush=True)))

    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"kcenter-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")

    m = results[0]["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"numpy {m['numpy']} ({m.get('numpy_blas')}), memory {m['memory_total_gb']} GB "
          f"({m['memory_available_gb']} GB available), load average {m['loadavg_1m']}")
    print()
    print("| n | dim | k | data | variant | precision | seconds | tracemalloc peak MB | RSS peak +MB "
          "| distances computed | speed-up vs reference | tracemalloc ratio vs reference | agrees with baseline |")
    print("| ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        for v in r["variants"]:
            diff = v["radius_diff_vs_baseline"]
            agree = ("same centers" if v["same_centers_as_baseline"] else
                     "other centers, radius not computed" if diff is None else
                     f"radius within {diff:.1e}" if v["agrees_with_baseline"] else f"NO (radius off by {diff:.1e})")
            print(f"| {r['n']:,} | {r['dim']} | {r['k']:,} | {r['data']} | {v['variant']} | {v['precision']} "
                  f"| {v['seconds']:.2f} | {v['tracemalloc_peak_mb']:.1f} | {_fmt(v['rss_peak_delta_mb'], '.1f')} "
                  f"| {_fmt(v['distances_computed_share'], '.1%')} | {_fmt(v['speedup_vs_reference'], '.1f', 'x')} "
                  f"| {_fmt(v['tracemalloc_ratio_vs_reference'], '.0f', 'x')} | {agree} |")
    print()
    for r in results:
        print(f"n={r['n']:,} {r['data']}: baseline {r['baseline']}; reference {r['reference']}")
        goal = GOAL.get((r["n"], r["dim"], r["k"]))
        if goal is not None:
            best = min((v for v in r["variants"] if v["variant"].startswith("O(n)")), key=lambda v: v["seconds"])
            verdict = "met" if best["seconds"] < goal else "NOT met"
            print(f"  goal < {goal:g} s: {verdict} (fastest: {best['variant']}, {best['precision']}, "
                  f"{best['seconds']:.2f} s)")
    print(f"\nJSON: {target}")
    return 0


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else format(v, spec) + suffix


if __name__ == "__main__":
    raise SystemExit(main())
