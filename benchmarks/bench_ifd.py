"""IFD throughput and fidelity: the batched engine against a Cherry-LLM-style reference loop.

    python benchmarks/bench_ifd.py --rows 200

Scores the first ``--rows`` Alpaca rows with the packaged SmolLM2-135M-Instruct:

- ``reference``: what Cherry LLM's (and Superfiltering's) scoring code does: one example per forward
  pass, the full model with ``labels`` (prefix positions set to -100), i.e. full-vocabulary logits at
  every position, fp32. Two passes per row (s(A|Q), s(A)).
- ``engine``: ``instsel_assets.scoring.ifd.ifd_scores`` (length-bucketed batches, LM head only at answer
  positions) in fp32 and bf16, batch sizes 8 and 16.

All variants score the same token ids (the chat-template pairs of ``chat.prefix_answer_pairs``), so the
differences are compute only. Prints a Markdown table: examples/s (rows; two sequences per row),
speed-up vs the reference, max |ΔIFD| and Spearman rank correlation of IFD vs the reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from instsel_assets.models import chat  # noqa: E402
from instsel_assets.models.loading import PACKAGED_SMOLLM2, cpu_has_native_bf16, load_causal_lm  # noqa: E402
from instsel_assets.scoring.ifd import ifd_scores  # noqa: E402

DATA_CANDIDATES = [
    ROOT / "data" / "pools" / "alpaca" / "alpaca_sample.json",
]


def load_rows(path: Path | None, n: int) -> tuple[pd.DataFrame, Path]:
    path = path or next(p for p in DATA_CANDIDATES if p.exists())
    records = json.loads(path.read_text(encoding="utf-8"))[:n]
    pool = pd.DataFrame({
        "id": [f"row-{i}" for i in range(len(records))],
        "conversations": [[
            {"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
            {"role": "assistant", "content": r["output"]},
        ] for r in records],
    })
    return pool, path


def reference_ifd(pool: pd.DataFrame, model, tokenizer, max_length: int) -> np.ndarray:
    """Cherry LLM's loop: one sequence per forward, ``model(input_ids, labels=labels).loss``."""
    out = []
    with torch.no_grad():
        for conv in pool["conversations"]:
            losses = []
            for with_prefix in (True, False):
                pa = chat.prefix_answer_pairs(tokenizer, conv, with_prefix=with_prefix)[0]
                prefix, answer = pa.prefix_ids, pa.answer_ids
                if len(prefix) + len(answer) > max_length:  # same rule as the engine
                    prefix = prefix[len(prefix) + len(answer) - max_length:]
                ids = torch.tensor([prefix + answer])
                labels = ids.clone()
                labels[:, : len(prefix)] = -100
                losses.append(model(input_ids=ids, labels=labels).loss.float().item())
            out.append(losses[0] / losses[1])
    return np.array(out)


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "native_bf16": cpu_has_native_bf16(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--data", type=Path, default=None, help="Alpaca-format JSON list")
    ap.add_argument("--batch-sizes", default="8,16")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pool, path = load_rows(args.data, args.rows)
    info = machine()
    print(f"# IFD benchmark {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"data: {path} (first {len(pool)} rows); model: {PACKAGED_SMOLLM2}; max_length {args.max_length}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    m32, tok = load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    m16, _ = load_causal_lm(PACKAGED_SMOLLM2, dtype="bfloat16", device="cpu")
    warm = pool.iloc[:2]
    ifd_scores(warm, m32, tok, batch_size=2)
    ifd_scores(warm, m16, tok, batch_size=2)
    n_tokens = sum(len(p.prefix_ids) + len(p.answer_ids) for c in pool["conversations"]
                   for w in (True, False) for p in chat.prefix_answer_pairs(tok, c, with_prefix=w)[:1])
    print(f"tokens scored per variant (both passes, prefix + answer): {n_tokens}", flush=True)

    results = []
    ref_ifd = None
    ref_rate = None
    if not args.skip_reference:
        reference_ifd(warm, m32, tok, args.max_length)
        t0 = time.perf_counter()
        ref_ifd = reference_ifd(pool, m32, tok, args.max_length)
        secs = time.perf_counter() - t0
        ref_rate = len(pool) / secs
        results.append(("reference loop (1 example/pass, full logits)", "fp32", 1, secs, ref_ifd))
        print(f"reference: {secs:.1f} s", flush=True)
    for model, dname in ((m32, "fp32"), (m16, "bf16")):
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            t0 = time.perf_counter()
            got = ifd_scores(pool, model, tok, batch_size=bs, max_length=args.max_length)["ifd"].to_numpy()
            secs = time.perf_counter() - t0
            results.append(("engine (bucketed, head at answers)", dname, bs, secs, got))
            print(f"engine {dname} bs={bs}: {secs:.1f} s", flush=True)

    print()
    print("| variant | dtype | batch | seconds | examples/s | speed-up vs reference | max abs ΔIFD | Spearman vs reference |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, dname, bs, secs, ifd in results:
        rate = len(pool) / secs
        if ref_ifd is not None:
            speed = f"{rate / ref_rate:.2f}x"
            delta = f"{np.nanmax(np.abs(ifd - ref_ifd)):.2e}"
            rho = f"{pd.Series(ifd).corr(pd.Series(ref_ifd), method='spearman'):.4f}"
        else:
            speed = delta = rho = "n/a"
        print(f"| {name} | {dname} | {bs} | {secs:.1f} | {rate:.2f} | {speed} | {delta} | {rho} |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
