"""Indicators and the DEITA filter at scale: the full Alpaca 52K pool and 1M synthetic rows.

    .venv/bin/python benchmarks/bench_scale.py                  # Alpaca 52K (+ references) and 1M synthetic rows
    .venv/bin/python benchmarks/bench_scale.py --big-rows 0     # Alpaca 52K only (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --alpaca-rows 2000 --big-rows 5000 --reference-rows 1000  # smoke

What runs, each stage timed alone (wall seconds, rows/s, resident-set peak growth = the kernel's high-water
mark reset before the stage, ``instsel_assets.bench.measure`` without ``tracemalloc``, which slows pure-Python
code several times):

On the real pool (``../shared/data/pools/alpaca_52k``, 52,002 rows, read through the pool code):

- ``pool``: reading the JSON shards and building the pool (``ingest``), as the ``instruction_pool`` asset;
- ``text indicators``: ``features.indicators.compute_text_indicators`` with the packaged SmolLM2 tokenizer
  (instruction / input / output / total tokens, TTR, MTLD, language), as ``metric_features``; reference-style:
  the same indicators one row at a time with one tokenizer call per text (how per-example research code
  computes them, e.g. InstructMining's indicator scripts); both must give the same table;
- ``duplicates``: ``features.duplicates.duplicates`` (exact groups, MinHash in bulk, LSH); reference-style: one
  ``datasketch.MinHash`` object per row updated shingle by shingle, every row inserted and queried (the
  datasketch README / text-dedup pattern), with the same scheme, seed, bands and verification, so both must
  find the same clusters;
- ``MiniLM embeddings``: the packaged all-MiniLM-L6-v2 over every instruction (``minilm_embedding``);
- ``KNN-6 distance``: ``features.knn.knn_mean_distance`` (blocks of rows against all, top-k); reference-style:
  the full ``n x n`` similarity matrix and a sort per row, at ``--reference-rows`` (default 20,000: the full
  matrix at 52K is 10.8 GB and crashed OpenBLAS here); equal within 1e-5;
- ``DEITA filter 52K -> 6K``: ``selection.deita_score_first.select_deita`` (tau 0.9) on the MiniLM embeddings
  with seeded synthetic evol scores (a judge run over 52K rows is not part of this benchmark; the filter's
  cost does not depend on where the scores come from); reference-style: DEITA's ``IterativeFilter`` loop, one
  row at a time against the stacked selected embeddings; the same ids in the same order.

On ``--big-rows`` synthetic rows (default 1,000,000): each row's instruction, input and output are drawn
(seeded) from three independent Alpaca rows, and 1% of the rows are planted copies of other synthetic rows
(half exact, half with one word changed in an output of 50+ words). ``pool`` (building the pool from records),
``text indicators`` and ``duplicates`` run at this size (engine only); the table reports how many planted
copies the duplicate search found. KNN at 1M is quadratic (1M x 1M dot products, ~40 min of BLAS here) and is
left out; the k-center benchmark (``bench_kcenter.py --big``) covers embeddings at 1M.

The table printed at the end is Markdown; the JSON of the run goes to ``benchmarks/results/scale-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALPACA_DIR = ROOT.parent / "shared" / "data" / "pools" / "alpaca_52k"


# ---------------------------------------------------------------------------------------------- measuring
def measure(fn, *args, **kwargs) -> dict[str, Any]:
    """``fn``'s result, wall seconds and resident-set peak growth (MB), without tracemalloc
    (``instsel_assets.bench.measure``)."""
    from instsel_assets.bench import measure as measure_once

    got = measure_once(fn, args, kwargs, trace=False)
    rss = got["rss_peak_delta_bytes"]
    return {"result": got["result"], "seconds": got["seconds"],
            "rss_peak_delta_mb": None if rss is None else rss / 1e6, "rss_method": got["rss_peak_method"]}


# ---------------------------------------------------------------------------------------------- data
def alpaca_pool(directory: Path, rows: int | None) -> pd.DataFrame:
    """The Alpaca shards read and normalised by the pool code (first ``rows`` rows when given)."""
    from instsel_assets.ingest.formats import read_file
    from instsel_assets.ingest.normalize import build_pool

    files = sorted(directory.glob("*.json"))
    if not files:
        raise SystemExit(f"no *.json under {directory} (pass --alpaca DIR)")
    raw = pd.concat([read_file(f, "alpaca_52k", f.name) for f in files], ignore_index=True)
    if rows is not None:
        raw = raw.iloc[:rows].reset_index(drop=True)
    result = build_pool(raw)
    if len(result.quarantine):
        print(f"note: {len(result.quarantine)} Alpaca rows quarantined by the pool code", file=sys.stderr)
    return result.pool


def synthetic_raw(alpaca: pd.DataFrame, n: int, seed: int = 0, planted_share: float = 0.01
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``n`` raw Alpaca-format rows (``read_file``'s columns) mixed from the real pool, with planted copies.

    Row ``i`` takes its instruction, input and output from three independently drawn Alpaca rows and appends
    `` (variant i)`` to the instruction so that mixes of the same three rows stay distinct. Then
    ``planted_share`` of the rows are overwritten: half by an exact copy of an earlier row, half by a copy whose
    output has one word replaced (outputs of 50+ words only, so that the copy stays above Jaccard 0.8).
    """
    rng = np.random.default_rng(seed)
    m = len(alpaca)
    ins = alpaca["instruction"].to_numpy()
    inp = alpaca["input"].to_numpy()
    out = alpaca["output"].to_numpy()
    a, b, c = (rng.integers(m, size=n) for _ in range(3))
    records = [{"instruction": f"{ins[a[i]]} (variant {i})", "input": inp[b[i]], "output": out[c[i]]}
               for i in range(n)]
    planted = rng.choice(np.arange(n // 2, n), size=int(n * planted_share), replace=False)
    exact_rows, near_rows = planted[: len(planted) // 2], planted[len(planted) // 2:]
    for i in exact_rows:
        records[i] = dict(records[int(rng.integers(n // 2))])
    # near copies are made of rows with outputs of 50+ words: one changed word then leaves the shingle sets
    # at Jaccard >= ~0.9, clearly above the 0.8 threshold (a short row with one word changed may not be a
    # near duplicate by that rule at all)
    long_rows = np.flatnonzero(np.fromiter((len(r["output"].split()) >= 50 for r in records[: n // 2]), dtype=bool,
                                           count=n // 2))
    for i in near_rows:
        src = dict(records[int(rng.choice(long_rows))])
        words = src["output"].split(" ")
        words[len(words) // 2] = "zyzzyva"
        src["output"] = " ".join(words)
        records[i] = src
    raw = pd.DataFrame({
        "source": "synthetic", "source_file": "synthetic.jsonl",
        "source_row": pd.Series(np.arange(1, n + 1), dtype="int64"), "format": "alpaca",
        "raw": [json.dumps(r, ensure_ascii=False) for r in records], "parse_error": "",
    })
    return raw, {"planted_exact": len(exact_rows), "planted_near": len(near_rows),
                 "exact_rows": exact_rows, "near_rows": near_rows}


# ---------------------------------------------------------------------------------------------- references
def reference_text_indicators(pool: pd.DataFrame, tokenizer) -> pd.DataFrame:
    """The indicators of ``compute_text_indicators``, one row at a time, one tokenizer call per text."""
    from instsel_assets.features.text_stats import (
        detect_language, flat_text, mtld, response_text, turn_contents, type_token_ratio, user_text, words)

    def ntok(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    out = []
    cols = list(pool.columns)
    for values in pool.itertuples(index=False, name=None):
        r = dict(zip(cols, values))
        instr, inp, outp = flat_text(r, "instruction"), flat_text(r, "input"), flat_text(r, "output")
        turns = turn_contents(r.get("conversations"))
        if turns is None:
            turns = [instr, inp, outp]
        toks = words(response_text(r))
        out.append({"id": str(r["id"]), "language": detect_language(user_text(r)),
                    "instruction_tokens": ntok(instr), "input_tokens": ntok(inp), "output_tokens": ntok(outp),
                    "total_tokens": sum(ntok(t) for t in turns), "ttr": type_token_ratio(toks),
                    "mtld": mtld(toks)})
    return pd.DataFrame(out)


def reference_near_duplicate_clusters(pool: pd.DataFrame) -> np.ndarray:
    """Near-duplicate cluster sizes per row (pool order), the per-row datasketch way.

    Same rule as ``features.duplicates.duplicates`` (same normalisation, shingles, scheme, seed, bands and
    Jaccard verification), but one ``MinHash`` per row updated shingle by shingle, every row (copies too)
    inserted into the LSH index and queried.
    """
    from datasketch import MinHash, MinHashLSH

    from instsel_assets.features import duplicates as d

    cols = list(pool.columns)
    n = len(pool)
    texts = [" ".join(c for _, c in d.row_turns(dict(zip(cols, v)))) for v in pool.itertuples(index=False, name=None)]
    lsh = MinHashLSH(threshold=d.DEFAULT_THRESHOLD, num_perm=d.DEFAULT_NUM_PERM, weights=d.DEFAULT_LSH_WEIGHTS)
    sigs = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=d.DEFAULT_NUM_PERM, seed=d.DEFAULT_SEED, scheme=d.MINHASH_SCHEME)
        for s in sorted(d.shingles(text)):
            m.update(s.encode("utf-8"))
        sigs.append(m)
        lsh.insert(i, m)
    need = int(np.ceil(d.DEFAULT_THRESHOLD * d.DEFAULT_NUM_PERM - 1e-9))
    uf = d._UnionFind(n)
    exact = {}
    for i, v in enumerate(pool.itertuples(index=False, name=None)):
        key = d.exact_key(d.row_turns(dict(zip(cols, v))))
        uf.union(exact.setdefault(key, i), i)
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j > i and int((sigs[j].hashvalues == m.hashvalues).sum()) >= need:
                uf.union(i, j)
    roots = uf.roots()
    return np.bincount(roots, minlength=n)[roots]


def reference_knn_mean_distance(x: np.ndarray, k: int = 6) -> np.ndarray:
    """KNN-k mean cosine distance from the full ``n x n`` similarity matrix and a sort of each row."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-sims, axis=1)[:, :k]
    return 1.0 - top.astype(np.float64).mean(axis=1)


def reference_deita(x: np.ndarray, scores: np.ndarray, ids: np.ndarray, budget: int, tau: float) -> list[str]:
    """DEITA's IterativeFilter: rows by score (ties by id), each compared with every row selected so far."""
    order = pd.DataFrame({"s": scores, "id": ids}).sort_values(["s", "id"], ascending=[False, True],
                                                              kind="mergesort").index.to_numpy()
    selected: list[np.ndarray] = []
    picks: list[str] = []
    for i in order:
        if selected:
            sims = np.stack(selected) @ x[i]
            if sims.max() > tau:
                continue
        selected.append(x[i])
        picks.append(str(ids[i]))
        if len(picks) == budget:
            break
    return picks


# ---------------------------------------------------------------------------------------------- run
def stage(table: list[dict[str, Any]], dataset: str, name: str, impl: str, rows: int, got: dict[str, Any],
          **extra) -> None:
    row = {"dataset": dataset, "stage": name, "implementation": impl, "rows": rows,
           "seconds": got["seconds"], "rows_per_s": rows / got["seconds"] if got["seconds"] else None,
           "rss_peak_delta_mb": None if got["rss_peak_delta_mb"] is None else round(got["rss_peak_delta_mb"], 1),
           **extra}
    table.append(row)
    print(f"{dataset} | {name} | {impl}: {rows:,} rows in {row['seconds']:.1f} s "
          f"({row['rows_per_s']:,.0f} rows/s), RSS peak +{row['rss_peak_delta_mb']} MB "
          + " ".join(f"{k}={v}" for k, v in extra.items()), file=sys.stderr, flush=True)


def add_ratios(table: list[dict[str, Any]]) -> None:
    """speed-up and memory ratio of each engine row against the reference row of the same dataset and stage
    (at the reference's size: the engine is re-run at that size when the reference ran on fewer rows)."""
    for row in table:
        ref = next((r for r in table if r["dataset"] == row["dataset"] and r["stage"] == row["stage"]
                    and r["implementation"].startswith("reference") and r["rows"] == row["rows"]), None)
        if ref is None or row is ref:
            row.setdefault("speedup_vs_reference", None)
            row.setdefault("memory_ratio_vs_reference", None)
            continue
        row["speedup_vs_reference"] = ref["seconds"] / row["seconds"] if row["seconds"] else None
        rm, em = ref["rss_peak_delta_mb"], row["rss_peak_delta_mb"]
        row["memory_ratio_vs_reference"] = rm / em if rm is not None and em and em >= 1.0 else None


def markdown(table: list[dict[str, Any]]) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| data | stage | implementation | rows | seconds | rows/s | RSS peak +MB | speed-up vs reference "
             "| memory ratio vs reference | agrees with reference / notes |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in table:
        lines.append(f"| {r['dataset']} | {r['stage']} | {r['implementation']} | {r['rows']:,} | {r['seconds']:.2f} "
                     f"| {f(r['rows_per_s'], ',.0f')} | {f(r['rss_peak_delta_mb'], ',.0f')} "
                     f"| {f(r.get('speedup_vs_reference'), '.2f')}{'x' if r.get('speedup_vs_reference') else ''} "
                     f"| {f(r.get('memory_ratio_vs_reference'), '.1f')}{'x' if r.get('memory_ratio_vs_reference') else ''} "
                     f"| {r.get('notes', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alpaca", type=Path, default=ALPACA_DIR, help="folder of Alpaca JSON shards")
    p.add_argument("--alpaca-rows", type=int, default=None, help="use the first N Alpaca rows (default: all)")
    p.add_argument("--big-rows", type=int, default=1_000_000, help="synthetic rows (0: skip)")
    p.add_argument("--reference-rows", type=int, default=20_000,
                   help="rows for the n x n KNN reference (default 20,000)")
    p.add_argument("--deita-budget", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for the JSON record (default benchmarks/results)")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from instsel_assets.bench import kcenter_machine_info
    from instsel_assets.features.duplicates import duplicates
    from instsel_assets.features.embeddings import load_embedding_model, minilm_embedding
    from instsel_assets.features.indicators import compute_text_indicators
    from instsel_assets.features.knn import knn_mean_distance
    from instsel_assets.ingest.normalize import build_pool
    from instsel_assets.models.loading import PACKAGED_SMOLLM2, resolve_model_path
    from instsel_assets.selection.deita_score_first import select_deita

    info = kcenter_machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(PACKAGED_SMOLLM2))
    table: list[dict[str, Any]] = []

    # --- Alpaca 52K
    got = measure(alpaca_pool, args.alpaca, args.alpaca_rows)
    pool = got["result"]
    n = len(pool)
    data = f"Alpaca {n:,}"
    stage(table, data, "pool (read + normalise)", "engine", n, got)

    got = measure(compute_text_indicators, pool, tokenizer)
    engine_ind = got["result"]
    stage(table, data, "text indicators", "engine (batched tokenizer)", n, got)
    got = measure(reference_text_indicators, pool, tokenizer)
    ref_ind = got["result"]
    same = engine_ind.reset_index(drop=True).equals(ref_ind[engine_ind.columns].reset_index(drop=True))
    stage(table, data, "text indicators", "reference (one row, one tokenizer call per text)", n, got,
          notes="same table" if same else "DIFFERENT table")

    got = measure(duplicates, pool)
    dup = got["result"]
    stage(table, data, "duplicates (exact + MinHash LSH)", "engine (bulk MinHash, one entry per group)", n, got,
          notes=f"{dup.attrs['n_exact_duplicates']} exact and {dup.attrs['n_near_duplicates']} near-duplicate rows, "
                f"{dup.attrs['n_near_clusters']} clusters")
    got = measure(reference_near_duplicate_clusters, pool)
    same = bool((got["result"] == dup["near_dup_cluster_size"].to_numpy()).all())
    stage(table, data, "duplicates (exact + MinHash LSH)", "reference (one MinHash per row, per-shingle update)", n,
          got, notes="same clusters" if same else "DIFFERENT clusters")

    model = load_embedding_model()
    torch.set_num_threads(torch.get_num_threads())
    got = measure(minilm_embedding, pool, model=model, batch_size=64)
    x = np.stack(got["result"]["embedding"].to_list()).astype(np.float32)
    stage(table, data, "MiniLM embeddings (384-d)", "engine (batch 64)", n, got)

    got = measure(knn_mean_distance, x, 6)
    knn = got["result"]
    stage(table, data, "KNN-6 distance", "engine (row blocks, top-k)", n, got)
    m = min(args.reference_rows, n)
    if m < n:
        got = measure(knn_mean_distance, x[:m], 6)
        knn_m = got["result"]
        stage(table, data, "KNN-6 distance", "engine (row blocks, top-k)", m, got)
    else:
        knn_m = knn
    got = measure(reference_knn_mean_distance, x[:m], 6)
    diff = float(np.abs(got["result"] - knn_m).max())
    stage(table, data, "KNN-6 distance", "reference (n x n matrix, sort)", m, got,
          notes=f"max abs diff {diff:.1e}" + ("" if diff <= 1e-5 else " (ABOVE 1e-5)"))

    rng = np.random.default_rng(args.seed)
    evol = (rng.integers(1, 7, size=n) * rng.integers(1, 7, size=n)).astype(float) + rng.random(n)
    ids = pool["id"].astype(str).to_numpy()
    cand = pd.DataFrame({"id": ids, "deita_evol_score": evol, "embedding": list(x)})
    budget = min(args.deita_budget, n)
    got = measure(select_deita, cand, budget, tau=0.9)
    picks = got["result"]
    stage(table, data, f"DEITA filter to {budget:,} (tau 0.9)", "engine (blocks of 256)", n, got,
          notes=f"{len(picks):,} selected")
    got = measure(reference_deita, x, evol, ids, budget, 0.9)
    stage(table, data, f"DEITA filter to {budget:,} (tau 0.9)", "reference (IterativeFilter, row by row)", n, got,
          notes="same ids, same order" if got["result"] == picks else "DIFFERENT selection")

    # --- synthetic
    if args.big_rows > 0:
        big = args.big_rows
        data = f"synthetic {big:,}"
        t0 = time.perf_counter()
        raw, planted = synthetic_raw(pool, big, seed=args.seed)
        print(f"synthetic rows generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        got = measure(build_pool, raw)
        bigpool, quarantine = got["result"].pool, got["result"].quarantine
        # planted exact copies are removed by the pool itself (same content id): quarantined as 'duplicate'
        dup_rows = set(quarantine.loc[quarantine["kind"] == "duplicate", "source_row"].astype(int) - 1)
        removed = sum(1 for i in planted["exact_rows"] if int(i) in dup_rows)
        stage(table, data, "pool (normalise)", "engine", len(raw), got,
              notes=f"{len(bigpool):,} kept, {len(quarantine):,} quarantined; planted exact copies removed as "
                    f"duplicates {removed:,} / {planted['planted_exact']:,}")
        del raw
        got = measure(compute_text_indicators, bigpool, tokenizer)
        stage(table, data, "text indicators", "engine (batched tokenizer)", len(bigpool), got)
        got = measure(duplicates, bigpool)
        d = got["result"]
        pos = {int(r) - 1: i for i, r in enumerate(bigpool["source_row"].to_numpy())}
        near = [pos[int(i)] for i in planted["near_rows"] if int(i) in pos]
        found = int((d["near_dup_cluster_size"].to_numpy()[near] > 1).sum())
        stage(table, data, "duplicates (exact + MinHash LSH)", "engine (bulk MinHash, one entry per group)",
              len(bigpool), got,
              notes=f"planted one-word edits found {found:,} / {len(near):,}; "
                    f"{d.attrs['n_near_duplicates']:,} near-duplicate rows in all")

    add_ratios(table)
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"scale-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                  "stages": table}, indent=2, default=str), encoding="utf-8")
    print(f"machine: {info.get('cpu')}, {info.get('cores')} cores, torch threads {info.get('torch_threads')}, "
          f"numpy {info.get('numpy')} ({info.get('numpy_blas')}), load {info.get('loadavg_1m')} at start")
    print(markdown(table))
    print(f"\nJSON: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
