"""Incremental pool shards: what a new shard and an unchanged shard cost, against rescoring the whole pool.

    .venv/bin/python benchmarks/bench_shards.py                    # 4 shards x 25 Alpaca rows, then a 5th
    .venv/bin/python benchmarks/bench_shards.py --shards 8 --rows 50

Everything runs in-process against a temporary Dagster instance and storage (nothing of the project's
``.instsel`` is touched but the converted model weights). Shards are real rows of the bundled Stanford Alpaca
sample written to a landing folder; ``pool_shard_sensor`` is evaluated once and its partitions ingested; then:

1. first pass: ``shard_metric_features`` + ``shard_superfiltering_scores`` of every shard (models loaded, loss cache
   empty);
2. unchanged: the same assets re-materialised for every shard (result cache: no model loaded, nothing computed);
3. a new shard: the sensor sees one more file and only it is featurised and scored;
4. the reference style, in the same process: Superfiltering's IFD and the features over all rows of all shards
   at once with every cache off (what rescoring the pool on each arrival costs without shards), and the same with
   the loss cache on (the unpartitioned pipeline: only its features are recomputed).

The table gives seconds, rows computed and the ratio of each incremental step to the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_ASSETS = ("shard_metric_features", "shard_superfiltering_scores")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=4, help="shards landed first (default 4)")
    p.add_argument("--rows", type=int, default=25, help="rows per shard (default 25)")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="instsel-bench-shards-"))
    landing = tmp / "landing"
    landing.mkdir()
    os.environ.update({"INSTSEL_HOME": str(tmp / "home"), "INSTSEL_LANDING_DIR": str(landing),
                       "DAGSTER_HOME": str(tmp / "dagster_home"), "HF_HUB_OFFLINE": "1",
                       "INSTSEL_MODEL_CACHE": os.environ.get("INSTSEL_MODEL_CACHE",
                                                             str(ROOT / ".instsel" / "models"))})
    (tmp / "dagster_home").mkdir()
    (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    import dagster as dg
    import torch

    from instsel_assets.bench import machine_info
    from instsel_assets.defs import build_definitions
    from instsel_assets.defs.shards import pool_shard_sensor

    rows = json.loads((ROOT / "data" / "pools" / "alpaca" / "alpaca_sample.json").read_text())
    need = (args.shards + 1) * args.rows
    if need > len(rows):
        p.error(f"{args.shards + 1} shards x {args.rows} rows need {need} rows; the sample has {len(rows)}")
    for i in range(args.shards):
        chunk = rows[i * args.rows:(i + 1) * args.rows]
        (landing / f"shard-{i:03d}.jsonl").write_text("\n".join(json.dumps(r) for r in chunk) + "\n")

    defs = build_definitions()
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.get()
    cursor = None

    def ingest() -> list[str]:
        nonlocal cursor
        result = pool_shard_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        if isinstance(result, dg.SkipReason):
            return []
        cursor = result.cursor
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for run in result.run_requests:
            job.execute_in_process(instance=instance, partition_key=run.partition_key,
                                   asset_selection=[dg.AssetKey("pool_shard"), dg.AssetKey("pool_shard_quarantine")])
        return [r.partition_key for r in result.run_requests]

    def score(partitions: list[str]) -> tuple[float, int]:
        t0 = time.perf_counter()
        computed = 0
        for partition in partitions:
            result = job.execute_in_process(instance=instance, partition_key=partition,
                                            asset_selection=[dg.AssetKey(a) for a in SHARD_ASSETS])
            assert result.success
            for mat in result.asset_materializations_for_node("shard_superfiltering_scores"):
                computed += int(mat.metadata["rows_computed"].value)
        return time.perf_counter() - t0, computed

    first = ingest()
    t_first, n_first = score(first)
    t_same, n_same = score(first)
    i = args.shards
    (landing / f"shard-{i:03d}.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows[i * args.rows:(i + 1) * args.rows]) + "\n")
    new = ingest()
    t_new, n_new = score(new)

    # Reference style: the whole pool (every shard) featurised and scored at once, with no cache at all.
    from instsel_assets.features.embeddings import minilm_embedding
    from instsel_assets.features.indicators import compute_text_indicators
    from instsel_assets.registry import get_scorer
    from instsel_assets.defs.storage import storage_kind

    assert storage_kind() == "local"
    import duckdb

    con = duckdb.connect(str(tmp / "home" / "instsel.duckdb"), read_only=True)
    pool = con.execute("select * from public.pool_shard").df()
    con.close()
    lm = defs.resources["filter_model"]
    emb = defs.resources["embedding_model"]
    t0 = time.perf_counter()
    model, tokenizer = lm.load()
    compute_text_indicators(pool, tokenizer)
    minilm_embedding(pool, model=emb.load(), batch_size=emb.batch_size)
    kwargs = {k: v for k, v in lm.engine_kwargs(model, tokenizer).items() if k != "cache"}
    get_scorer("superfiltering").fn(pool, model, tokenizer, **kwargs)
    t_ref = time.perf_counter() - t0
    # The unpartitioned pipeline as it is: the whole pool again, the loss cache on (warm from the shard runs), the
    # features recomputed (they have no cache outside the shards).
    t0 = time.perf_counter()
    compute_text_indicators(pool, tokenizer)
    minilm_embedding(pool, model=emb.load(), batch_size=emb.batch_size)
    cached = lm.engine_kwargs(model, tokenizer)
    get_scorer("superfiltering").fn(pool, model, tokenizer, **cached)
    t_ref_cached = time.perf_counter() - t0
    misses = cached["cache"].stats()["misses"] if cached.get("cache") is not None else len(pool)

    info = machine_info(torch.device("cpu"))
    print(f"machine: {info.get('cpu')} ({info.get('cores')} cores), torch {torch.__version__}, "
          f"{args.shards} shards x {args.rows} rows, then 1 more; reference: all {len(pool)} rows, no cache "
          f"(models already in memory); load average {info.get('loadavg_1m')}")
    table = [
        ("first pass, every shard (models load)", t_first, n_first),
        ("re-materialise every unchanged shard", t_same, n_same),
        ("one new shard", t_new, n_new),
        ("reference: rescore the whole pool, no cache", t_ref, len(pool)),
        ("whole pool again, loss cache on (features recomputed)", t_ref_cached, misses),
    ]
    print(f"| step | seconds | rows computed | / reference |\n|---|---:|---:|---:|")
    for label, seconds, computed in table:
        print(f"| {label} | {seconds:.1f} | {computed} | {seconds / t_ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
