"""IFD throughput and fidelity: the batched loss engine against a reference-style loop.

    .venv/bin/python benchmarks/bench_ifd.py --rows 500          # same as: instsel bench ifd --rows 500

The measurement itself lives in ``instsel_assets/bench.py`` (so users get it as ``instsel bench ifd``);
this script prints the machine, the sizes and the ratio table, and appends the JSON result to
``benchmarks/results/ifd-<date>.json`` for the record behind ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from instsel_assets.cli import main as instsel_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"ifd-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    import contextlib
    import io

    from instsel_assets.bench import markdown_table

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = instsel_main(["bench", "ifd", *argv, "--json"])
    if code != 0:
        return code
    result = json.loads(buf.getvalue())
    target.write_text(json.dumps(result, indent=2), encoding="utf-8")
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, device {m['device']}, "
          f"native bf16 {m['native_bf16_cpu']}, load average {m['loadavg_1m']}")
    print(f"rows {result['rows']} of {result['data']}; model {result['model']}; "
          f"{result['tokens_per_variant']:,} tokens per variant; batch {result['batch_size']}, workers {result['workers']}")
    print("matmul: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOPS" for k, v in result["matmul_flops"].items()))
    print()
    print(markdown_table(result))
    print(f"\nJSON: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
