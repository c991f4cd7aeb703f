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
