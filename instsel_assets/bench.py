"""``instsel bench ifd``: what scoring a pool with IFD costs on this machine, engine vs reference-style code.

Scores the same rows three ways on the same model, in one process:

- ``reference``: what Cherry LLM's, Superfiltering's and MoDS's scoring code does: one example per forward
  pass, ``model(input_ids, labels=...)`` (full-vocabulary logits at every position), fp32, two passes per
  row (s(A|Q) and s(A));
- ``engine fp32``: ``scoring.ifd.ifd_scores`` (length-bucketed batches, LM head only at answer positions,
  worker threads) in fp32: it must agree with the reference to 1e-3 relative;
- ``engine bf16`` (where the hardware computes bf16 natively): the faster mode, reported with its Spearman
  correlation and its top-10% selection overlap against fp32 (targets: >= 0.99 and >= 95%).

All variants score the same token ids (the chat-template pairs of ``chat.prefix_answer_pairs``), so the
differences are compute only. Throughput is given as examples/s (rows), tokens/s (every token fed, both
passes) and as the fraction of the FLOP-bound limit: ``2 x non-embedding parameters x tokens / seconds``
against a matrix-multiply rate measured on this machine in the same dtype, right before the runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from instsel_assets import settings

SPEC_TARGETS = {"fp32_max_rel_diff": 1e-3, "fast_spearman": 0.99, "fast_top10_overlap": 0.95}


def machine_info(device: torch.device) -> dict[str, Any]:
    from instsel_assets.models.loading import cpu_has_native_bf16

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "native_bf16_cpu": cpu_has_native_bf16(),
        "device": str(device),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int = 1024, seconds: float = 1.5) -> float:
    """Measured FLOP/s of ``size x size`` matrix products in ``dtype`` (2 n^3 FLOPs each)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(4):
            a @ b
        n += 4
        sync()
    return 2.0 * size ** 3 * n / (time.perf_counter() - t0)


def non_embedding_parameters(model) -> int:
    from instsel_assets.models.loading import count_parameters

    emb = model.get_input_embeddings().weight.numel()
    return count_parameters(model) - emb


def bench_pool(path: Path, rows: int) -> pd.DataFrame:
    """The first ``rows`` records of an Alpaca-format JSON list as a pool (user = instruction + input)."""
    records = json.loads(path.read_text(encoding="utf-8"))
    if rows > len(records):
        raise ValueError(f"--rows {rows}: {path} holds only {len(records)} records")
    records = records[:rows]
    return pd.DataFrame({
        "id": [f"row-{i}" for i in range(len(records))],
        "conversations": [[
            {"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
            {"role": "assistant", "content": r["output"]},
        ] for r in records],
    })


def reference_ifd(pool: pd.DataFrame, model, tokenizer, max_length: int) -> np.ndarray:
    """Cherry LLM's loop: one sequence per forward, ``model(input_ids, labels=labels).loss``, fp32."""
    from instsel_assets.scoring.ifd import first_turn_pairs
    from instsel_assets.scoring.loss_engine import fit_to_length

    device = model.get_input_embeddings().weight.device
    out = []
    with torch.no_grad():
        for conv in pool["conversations"]:
            losses = []
            for prefix, answer in first_turn_pairs(tokenizer, conv):
                prefix, answer, _ = fit_to_length(prefix, answer, max_length)  # the engine's truncation
                ids = torch.tensor([prefix + answer], device=device)
                labels = ids.clone()
                labels[:, : len(prefix)] = -100
                losses.append(model(input_ids=ids, labels=labels).loss.float().item())
            out.append(losses[0] / losses[1])
    return np.array(out)


def top_fraction_overlap(a: np.ndarray, b: np.ndarray, ids: np.ndarray, fraction: float = 0.10) -> float:
    """Share of the IFD selection (Cherry LLM's rule: drop IFD >= 1, top fraction) that two score vectors
    have in common."""
    from instsel_assets.selection.ifd_top_fraction import select_ifd, top_fraction_budget

    budget = top_fraction_budget(len(ids), fraction)
    sel_a = set(select_ifd(pd.DataFrame({"id": ids, "ifd": a}), budget))
    sel_b = set(select_ifd(pd.DataFrame({"id": ids, "ifd": b}), budget))
    if not sel_a:  # nothing passes IFD < 1: no selection to compare
        return float("nan")
    return len(sel_a & sel_b) / len(sel_a)


def run_ifd_bench(*, rows: int = 100, model_name: str | None = None, data: Path | None = None,
                  device: str = "auto", batch_size: int = 8, max_length: int = 1024, workers: str | int = "auto",
                  skip_reference: bool = False, log=print) -> dict[str, Any]:
    from instsel_assets.models.loading import PACKAGED_SMOLLM2, load_causal_lm, pick_device, pick_dtype
    from instsel_assets.scoring.ifd import first_turn_pairs, ifd_scores

    model_name = model_name or PACKAGED_SMOLLM2
    path = data or settings.data_root() / "bench" / "alpaca_500.json"
    pool = bench_pool(Path(path), rows)
    dev = pick_device(device)
    info = machine_info(dev)
    log(f"# IFD benchmark {dt.datetime.now().isoformat(timespec='seconds')}: {rows} rows of {path}, "
        f"model {model_name}, device {dev}")
    log("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))

    m32, tok = load_causal_lm(model_name, dtype="float32", device=str(dev))
    fast_dtype = pick_dtype(dev, "auto")
    m_fast = load_causal_lm(model_name, dtype="bfloat16", device=str(dev))[0] if fast_dtype == torch.bfloat16 else None
    n_params = non_embedding_parameters(m32)
    tokens = sum(len(p) + len(a) for conv in pool["conversations"] for p, a in first_turn_pairs(tok, conv))
    rates = {"float32": matmul_rate(torch.float32, dev)}
    if m_fast is not None:
        rates["bfloat16"] = matmul_rate(torch.bfloat16, dev)
    log(f"non-embedding parameters {n_params:,}; tokens fed per variant {tokens:,}; matmul "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOPS" for k, v in rates.items()))

    warm = pool.iloc[:2]
    variants: list[dict[str, Any]] = []

    def record(name: str, dtype: str, secs: float, ifd: np.ndarray) -> None:
        flops = 2.0 * n_params * tokens
        variants.append({"variant": name, "dtype": dtype, "seconds": round(secs, 2),
                         "examples_per_s": rows / secs, "tokens_per_s": tokens / secs,
                         "flop_bound_fraction": flops / secs / rates[dtype], "ifd": ifd})
        log(f"{name} ({dtype}): {secs:.1f} s, {rows / secs:.2f} examples/s")

    ref = None
    if not skip_reference:
        reference_ifd(warm, m32, tok, max_length)
        t0 = time.perf_counter()
        ref = reference_ifd(pool, m32, tok, max_length)
        record("reference (1 example/pass, full logits)", "float32", time.perf_counter() - t0, ref)
    engines = [(m32, "float32")] + ([(m_fast, "bfloat16")] if m_fast is not None else [])
    for model, dname in engines:
        ifd_scores(warm, model, tok, batch_size=2, workers=workers)
        t0 = time.perf_counter()
        got = ifd_scores(pool, model, tok, batch_size=batch_size, max_length=max_length, workers=workers)
        record("engine (bucketed batches, head at answers)", dname, time.perf_counter() - t0,
               got["ifd"].to_numpy(dtype=float))

    ids = pool["id"].to_numpy()
    base_rate = variants[0]["examples_per_s"] if ref is not None else None
    fp32_engine = next(v for v in variants if v["variant"].startswith("engine") and v["dtype"] == "float32")
    for v in variants:
        v["speedup_vs_reference"] = v["examples_per_s"] / base_rate if base_rate else None
        if ref is not None:
            v["max_rel_diff_vs_reference"] = float(np.nanmax(np.abs(v["ifd"] - ref) / np.abs(ref)))
        v["spearman_vs_fp32_engine"] = float(pd.Series(v["ifd"]).corr(pd.Series(fp32_engine["ifd"]), method="spearman"))
        v["top10_overlap_vs_fp32_engine"] = top_fraction_overlap(v["ifd"], fp32_engine["ifd"], ids)
    result = {
        "benchmark": "ifd", "date": dt.datetime.now().isoformat(timespec="seconds"), "rows": rows,
        "data": str(path), "model": model_name, "machine": info, "batch_size": batch_size, "workers": workers,
        "max_length": max_length, "non_embedding_parameters": n_params, "tokens_per_variant": tokens,
        "matmul_flops": rates, "targets": SPEC_TARGETS,
        "variants": [{k: v for k, v in var.items() if k != "ifd"} for var in variants],
    }
    if ref is not None:
        best = max(variants[1:], key=lambda v: v["examples_per_s"])
        result.update({
            "reference_examples_per_s": variants[0]["examples_per_s"],
            "engine_examples_per_s": best["examples_per_s"],
            "engine_dtype": best["dtype"],
            "speedup": best["examples_per_s"] / variants[0]["examples_per_s"],
        })
    return result


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.0%}"


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| variant | dtype | seconds | examples/s | tokens/s | FLOP-bound fraction | speed-up vs reference "
             "| max rel. ΔIFD vs reference | Spearman vs fp32 engine | top-10% overlap vs fp32 engine |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v in result["variants"]:
        speed = f"{v['speedup_vs_reference']:.2f}x" if v.get("speedup_vs_reference") else "n/a"
        rel = f"{v['max_rel_diff_vs_reference']:.1e}" if "max_rel_diff_vs_reference" in v else "n/a"
        lines.append(f"| {v['variant']} | {v['dtype']} | {v['seconds']:.1f} | {v['examples_per_s']:.2f} | "
                     f"{v['tokens_per_s']:.0f} | {v['flop_bound_fraction']:.1%} | {speed} | {rel} | "
                     f"{v['spearman_vs_fp32_engine']:.4f} | {_pct(v['top10_overlap_vs_fp32_engine'])} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# instsel bench kcenter
# ---------------------------------------------------------------------------------------------------

KCENTER_REFERENCE_MAX_N = 30_000  # above this the n x n reference is never run (3.6 GB of float32 at 30,000)
KCENTER_REFERENCE_MEMORY_SHARE = 0.6  # ... nor when its estimated peak exceeds this share of available memory
KCENTER_RADIUS_MAX_PAIRS = 2_000_000_000  # covering radii are computed while n x k stays below this
KCENTER_RADIUS_TOLERANCE = 1e-4


def synthetic_embeddings(n: int, dim: int, kind: str = "clustered", seed: int = 0, clusters: int = 100) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors, reproducible from ``seed``.

    - ``clustered``: Gaussian blobs, like sentence embeddings of a pool of task types: ``clusters``
      unit-vector centres, each row one centre plus isotropic noise whose norm is the blob's spread
      (drawn per blob in [0.25, 0.75]), then normalised (rows of one blob ~0.35-0.9 apart, blobs ~1.4);
    - ``diffuse``: isotropic Gaussian rows, normalised: every pair of rows is about sqrt(2) apart in
      high dimension, the hard case for any pruning by the triangle inequality.
    """
    if n < 1 or dim < 1:
        raise ValueError(f"need n >= 1 and dim >= 1, got n={n}, dim={dim}")
    rng = np.random.default_rng(seed)
    if kind == "diffuse":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    elif kind == "clustered":
        centres = rng.standard_normal((clusters, dim))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        spread = rng.uniform(0.25, 0.75, size=clusters)
        label = rng.integers(clusters, size=n)
        x = np.empty((n, dim), dtype=np.float32)
        step = 65536
        for s in range(0, n, step):
            lab = label[s:s + step]
            noise = rng.standard_normal((lab.size, dim)) * (spread[lab] / np.sqrt(dim))[:, None]
            x[s:s + step] = centres[lab] + noise
    else:
        raise ValueError(f"data must be 'clustered' or 'diffuse', got {kind!r}")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _rss_bytes(field: str = "VmRSS") -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand the C allocator's free pages back to the system (glibc ``malloc_trim``), so that memory
    an earlier run freed is not silently reused by the next one and left out of its resident-set growth."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def measure_call(fn, *args, **kwargs) -> dict[str, Any]:
    """Run ``fn(*args, **kwargs)`` once with ``tracemalloc`` on: ``measure(fn, args, kwargs, trace=True)``."""
    return measure(fn, args, kwargs, trace=True)


def measure(fn, args: tuple = (), kwargs: dict[str, Any] | None = None, *, trace: bool = True) -> dict[str, Any]:
    """Run ``fn`` once; its result, wall seconds, ``tracemalloc`` peak (Python and numpy allocations
    made during the call, torch's excluded; ``None`` when ``trace`` is off, as for pure-Python code,
    which tracemalloc slows several times) and the peak growth of the resident set.

    The resident-set peak is the kernel's high-water mark, reset before the call where Linux allows
    it; elsewhere it is sampled every millisecond by a thread. It counts every allocation (torch
    tensors included); the allocator's free pages are released first (``_release_free_memory``), and
    the kernel counts memory in pages, so small runs show no growth.
    """
    import gc
    import threading
    import tracemalloc

    gc.collect()
    _release_free_memory()
    before = _rss_bytes()
    exact = before is not None and _reset_rss_peak()
    sampled = [before or 0]
    stop = threading.Event()
    sampler = None
    if before is not None and not exact:
        def sample() -> None:
            while not stop.wait(0.001):
                sampled[0] = max(sampled[0], _rss_bytes() or 0)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    kwargs = kwargs or {}
    traced_peak = None
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - t0
        if trace:
            _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        if trace:
            tracemalloc.stop()
        stop.set()
        if sampler is not None:
            sampler.join()
    if before is None:
        rss_peak = None
    elif exact:
        rss_peak = max(0, (_rss_bytes("VmHWM") or before) - before)
    else:
        rss_peak = max(0, max(sampled[0], _rss_bytes() or 0) - before)
    return {"result": result, "seconds": seconds, "tracemalloc_peak_bytes": traced_peak,
            "rss_peak_delta_bytes": rss_peak, "rss_peak_method": "high-water mark" if exact else "sampled"}


def kcenter_machine_info() -> dict[str, Any]:
    info = machine_info(torch.device("cpu"))
    info.pop("native_bf16_cpu", None)
    info["numpy"] = np.__version__
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # the layout of numpy's build information is not a stable API
        info["numpy_blas"] = None
    info["memory_total_gb"] = _meminfo_gb("MemTotal")
    info["memory_available_gb"] = _meminfo_gb("MemAvailable")
    return info


def _meminfo_gb(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def reference_skip_reason(n: int, k: int) -> str | None:
    """Why the ``n x n`` reference is not run, or ``None`` when it fits comfortably: n at most
    ``KCENTER_REFERENCE_MAX_N`` and its estimated peak (two n x n float32 matrices) within
    ``KCENTER_REFERENCE_MEMORY_SHARE`` of the available memory."""
    from instsel_assets.selection.kcenter_reference import reference_peak_bytes

    matrix_gb = 4 * n * n / 1e9
    peak_gb = reference_peak_bytes(n, k) / 1e9
    available = _meminfo_gb("MemAvailable")
    if n > KCENTER_REFERENCE_MAX_N:
        return (f"skipped: n x n would need {matrix_gb:.1f} GB (float32; ~{peak_gb:.1f} GB at its peak); "
                f"the reference runs for n <= {KCENTER_REFERENCE_MAX_N:,}")
    if available is not None and peak_gb > KCENTER_REFERENCE_MEMORY_SHARE * available:
        return (f"skipped: n x n would need {matrix_gb:.1f} GB (float32; ~{peak_gb:.1f} GB at its peak), "
                f"more than {KCENTER_REFERENCE_MEMORY_SHARE:.0%} of the {available:.1f} GB available")
    return None


KCENTER_VARIANTS = ("reference", "float32", "float16", "pruned-float32", "pruned-float16")


def run_kcenter_bench(*, n: int = 20_000, dim: int = 384, k: int = 1000, seed: int = 0, data: str = "clustered",
                      reference: bool = True, prune: bool = True, variants: Sequence[str] | None = None,
                      log=print) -> dict[str, Any]:
    """Greedy k-center on seeded synthetic embeddings: the O(n) running-minimum version (float32,
    float16, and with triangle-inequality pruning when ``prune``) against the reference-style
    ``n x n`` version when it fits (``reference_skip_reason``).

    Each variant runs once (after a small warm-up of all of them) and reports seconds, the
    ``tracemalloc`` peak and the resident-set peak growth (``measure_call``), the share of row-to-center
    distances it computed, and its covering radius (max over rows of the distance to the nearest
    center). The baseline for agreement is the reference when it ran, else O(n) float32: a variant
    agrees when it picks the same centers or its covering radius is within 1e-4 of the baseline's.

    ``variants`` (names of ``KCENTER_VARIANTS``) keeps only those, in that table order; the first one that runs
    is then the baseline. Used at 1M rows, where each unpruned variant makes ``k`` passes over the whole matrix.
    """
    wanted = set(KCENTER_VARIANTS if variants is None else variants)
    unknown = wanted - set(KCENTER_VARIANTS)
    if unknown or not wanted:
        raise ValueError(f"variants must be names of {', '.join(KCENTER_VARIANTS)}, got {sorted(variants or [])}")
    from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices
    from instsel_assets.selection.kcenter_reference import covering_radius, kcenter_reference_indices

    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    info = kcenter_machine_info()
    log(f"# k-center benchmark {dt.datetime.now().isoformat(timespec='seconds')}: n={n:,} dim={dim} k={k:,} "
        f"data={data} seed={seed}")
    log("machine: " + ", ".join(f"{key}={v}" for key, v in info.items()))
    t0 = time.perf_counter()
    x = synthetic_embeddings(n, dim, data, seed)
    log(f"embeddings generated in {time.perf_counter() - t0:.1f} s ({x.nbytes / 1e6:.0f} MB float32)")

    runs: list[tuple[str, str, Any]] = []
    skip = (reference_skip_reason(n, k) if reference else "skipped: --skip-reference") if "reference" in wanted \
        else "skipped: not among the variants asked for"
    if skip is None:
        runs.append(("reference (n x n matrix)", "float32",
                     lambda a, b, st: kcenter_reference_indices(a, b, seed=seed)))
    for precision in ("float32", "float16"):
        if precision in wanted:
            runs.append(("O(n) running min", precision,
                         lambda a, b, st, p=precision: kcenter_greedy_indices(a, b, seed=seed, precision=p)))
    if prune:
        for precision in ("float32", "float16"):
            if f"pruned-{precision}" in wanted:
                runs.append(("O(n) + triangle pruning", precision,
                             lambda a, b, st, p=precision: kcenter_greedy_indices(
                                 a, b, seed=seed, precision=p, prune=True, stats=st)))
    if not runs:
        raise ValueError("no variant left to run (the reference was skipped and no other variant was asked for)")

    warm = synthetic_embeddings(min(n, 256), dim, data, seed + 1)
    for _, _, fn in runs:
        fn(warm, min(k, 8), {})

    rows: list[dict[str, Any]] = []
    for name, precision, fn in runs:
        st: dict[str, int] = {}
        got = measure_call(fn, x, k, st)
        row = {"variant": name, "precision": precision, "seconds": got["seconds"],
               "tracemalloc_peak_mb": got["tracemalloc_peak_bytes"] / 1e6,
               "rss_peak_delta_mb": None if got["rss_peak_delta_bytes"] is None else got["rss_peak_delta_bytes"] / 1e6,
               "rss_peak_method": got["rss_peak_method"],
               "distances_computed_share": (st["distances_computed"] / max(1, st["distances_computed"]
                                                                          + st["distances_skipped"])
                                            if st else (None if name.startswith("reference") else 1.0)),
               "centers": got["result"]}
        log(f"{name} ({precision}): {row['seconds']:.2f} s, tracemalloc peak {row['tracemalloc_peak_mb']:.1f} MB, "
            f"RSS peak +{row['rss_peak_delta_mb'] or 0:.1f} MB")
        rows.append(row)

    radius_skip = None
    if n * k > KCENTER_RADIUS_MAX_PAIRS:
        radius_skip = f"not computed: n x k = {n * k:,} above {KCENTER_RADIUS_MAX_PAIRS:,}"
    radii: dict[tuple, float] = {}
    for row in rows:
        key = tuple(row["centers"])
        if radius_skip is None and key not in radii:
            radii[key] = covering_radius(x, row["centers"])
        row["covering_radius"] = radii.get(key)

    base = rows[0]
    ref = base if base["variant"].startswith("reference") else None
    for row in rows:
        row["same_centers_as_baseline"] = row["centers"] == base["centers"]
        if row["covering_radius"] is not None and base["covering_radius"] is not None:
            row["radius_diff_vs_baseline"] = abs(row["covering_radius"] - base["covering_radius"])
        else:
            row["radius_diff_vs_baseline"] = None
        row["agrees_with_baseline"] = (row["same_centers_as_baseline"]
                                       or (row["radius_diff_vs_baseline"] is not None
                                           and row["radius_diff_vs_baseline"] <= KCENTER_RADIUS_TOLERANCE))
        if ref is not None:
            row["speedup_vs_reference"] = ref["seconds"] / row["seconds"]
            row["tracemalloc_ratio_vs_reference"] = ref["tracemalloc_peak_mb"] / max(row["tracemalloc_peak_mb"], 1e-6)
            # below 1 MB the resident-set growth is within memory the process already held: no ratio
            row["rss_ratio_vs_reference"] = (ref["rss_peak_delta_mb"] / row["rss_peak_delta_mb"]
                                             if ref["rss_peak_delta_mb"] is not None
                                             and (row["rss_peak_delta_mb"] or 0) >= 1.0 else None)
        else:
            row["speedup_vs_reference"] = row["tracemalloc_ratio_vs_reference"] = row["rss_ratio_vs_reference"] = None
    result = {
        "benchmark": "kcenter", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "n": n, "dim": dim, "k": k, "seed": seed, "data": data, "machine": info,
        "baseline": f"{base['variant']} ({base['precision']})",
        "reference": "ran" if ref is not None else skip,
        "reference_rule": (f"n <= {KCENTER_REFERENCE_MAX_N:,} and about 2 x 4 n^2 bytes within "
                           f"{KCENTER_REFERENCE_MEMORY_SHARE:.0%} of the available memory"),
        "covering_radius": radius_skip or "max over rows of the distance to the nearest center (float64)",
        "radius_tolerance": KCENTER_RADIUS_TOLERANCE,
        "all_agree": all(r["agrees_with_baseline"] for r in rows),
        "variants": [{key: v for key, v in r.items() if key != "centers"} for r in rows],
    }
    return result


def _num(v, fmt: str, none: str = "n/a") -> str:
    return none if v is None else format(v, fmt)


def kcenter_markdown_table(result: dict[str, Any]) -> str:
    lines = ["| variant | precision | seconds | tracemalloc peak MB | RSS peak +MB | distances computed "
             "| speed-up vs reference | memory ratio vs reference (tracemalloc / RSS) | same centers as baseline "
             "| covering radius | Δ radius vs baseline |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for v in result["variants"]:
        mem = ("n/a" if v["tracemalloc_ratio_vs_reference"] is None else
               f"{v['tracemalloc_ratio_vs_reference']:.0f}x / "
               + ("n/a" if v["rss_ratio_vs_reference"] is None else f"{v['rss_ratio_vs_reference']:.0f}x"))
        lines.append(
            f"| {v['variant']} | {v['precision']} | {v['seconds']:.2f} | {v['tracemalloc_peak_mb']:.1f} | "
            f"{_num(v['rss_peak_delta_mb'], '.1f')} | {_num(v['distances_computed_share'], '.1%')} | "
            f"{_num(v['speedup_vs_reference'], '.1f')}{'x' if v['speedup_vs_reference'] else ''} | {mem} | "
            f"{'yes' if v['same_centers_as_baseline'] else 'no'} | {_num(v['covering_radius'], '.6f')} | "
            f"{_num(v['radius_diff_vs_baseline'], '.1e')} |")
    return "\n".join(lines)
