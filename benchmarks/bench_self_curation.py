"""Self-curation ratings: shared-prefix key/value reuse against running every rating prompt whole.

    .venv/bin/python benchmarks/bench_self_curation.py --rows 100

The self-curation prompt (Instruction Backtranslation) is ~450 tokens of fixed text before each row's
instruction and answer. ``next_token.candidate_logprobs`` runs the tokens every prompt shares once and
hands their key/value cache to every batch (``shared_prefix=True``, the default); ``shared_prefix=False``
runs each prompt whole, as the engine did before. Both run here on the same rows, model and batch
size, in fp32 and bf16, in one process; the table gives rows/s, prompt tokens/s, the speed against fp32
whole prompts (the reference), and the agreement of the expected ratings with it (max |difference|,
Spearman).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from scipy.stats import spearmanr

    from instsel_assets import bench
    from instsel_assets.models.loading import load_causal_lm
    from instsel_assets.scoring import next_token, self_curation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100, help="bundled Stanford Alpaca rows (default 100)")
    p.add_argument("--model", default="packaged:smollm2-135m-instruct")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated; the first is the reference")
    args = p.parse_args(argv)

    pool = bench.bench_pool(ROOT / "data" / "bench" / "alpaca_500.json", args.rows)
    rows = []
    reference = None
    for dtype in args.dtypes.split(","):
        model, tok = load_causal_lm(args.model, dtype=dtype)
        device = next(model.parameters()).device
        digit_ids = self_curation.digit_token_ids(tok)
        prompts = [self_curation.rating_prompt_ids(tok, *self_curation.rated_pair(conv), digit_ids, 1024)[0]
                   for conv in pool["conversations"]]
        n_tokens = sum(len(x) for x in prompts)
        if reference is None:
            shared = next_token.common_prefix_length(prompts)
            print(f"machine: {bench.machine_info(device)}")
            print(f"rows {len(prompts)}; model {args.model}; batch {args.batch_size}; {n_tokens:,} prompt tokens, "
                  f"{shared} shared by every prompt ({shared * len(prompts) / n_tokens:.0%} of all tokens)")
        for flag in (False, True):
            next_token.candidate_logprobs(model, tok, prompts[:8], digit_ids, batch_size=args.batch_size,
                                          shared_prefix=flag)  # warm-up
            t0 = time.perf_counter()
            logprobs = next_token.candidate_logprobs(model, tok, prompts, digit_ids, batch_size=args.batch_size,
                                                     shared_prefix=flag)
            seconds = time.perf_counter() - t0
            scores = self_curation.expected_rating(logprobs)[0]
            if reference is None:
                reference = (seconds, scores)
            rows.append((f"{dtype}, {'shared prefix' if flag else 'whole prompts'}", seconds, scores, n_tokens))
    base_s, base_scores = reference
    print()
    print(f"Reference: {rows[0][0]}. Ratings are expected values in [1, 5].")
    print()
    print("| mode | seconds | rows/s | prompt tokens/s | speed vs reference | max abs diff of rating | Spearman |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, seconds, scores, n_tokens in rows:
        diff = float(np.nanmax(np.abs(scores - base_scores)))
        rho = float(spearmanr(scores, base_scores).statistic)
        print(f"| {name} | {seconds:.1f} | {len(scores) / seconds:.2f} | {n_tokens / seconds:,.0f} | "
              f"{base_s / seconds:.2f}x | {diff:.2e} | {rho:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
