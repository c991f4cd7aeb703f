"""The evaluation report: held-out loss of every checkpoint and the base model, compared.

Writes a Markdown file and a PNG bar chart; the same Markdown (with the chart inlined) is attached
to the asset's metadata so it renders in the Dagster UI.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pandas as pd

BASE = "base"
RANDOM = "random"

REPORT_COLUMNS = ("model", "method", "subset_rows", "subset_hash", "test_set", "n_examples", "n_answer_tokens",
                  "mean_loss", "perplexity", "delta_loss_vs_random", "delta_loss_vs_base", "beats_random",
                  "beats_base")


def comparison_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``rows``: one dict per evaluated model and test set with ``model, method, subset_rows, subset_hash,
    test_set, n_examples, n_answer_tokens, mean_loss``. The base model has ``method == "base"``.

    Lower held-out loss is better, so a negative delta means the method beats the reference. Each method is
    compared on each test set with ``random`` at its own budget (``random@5pct`` for ``ifd@5pct``; the default
    ``random`` for the base model and ``full``) and with the base model.
    """
    from instsel_assets.selection.plan import baseline_keys

    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    if "test_set" not in table.columns:
        table["test_set"] = ""
    table["perplexity"] = table["mean_loss"].map(lambda x: math.exp(x) if math.isfinite(x) else float("nan"))
    loss = {(m, t): x for m, t, x in zip(table["method"], table["test_set"], table["mean_loss"])}

    def random_of(method: str) -> str:
        return RANDOM if method == BASE else baseline_keys(method).get("random", method)

    table["delta_loss_vs_random"] = [x - loss.get((random_of(m), t), float("nan"))
                                     for m, t, x in zip(table["method"], table["test_set"], table["mean_loss"])]
    table["delta_loss_vs_base"] = [x - loss.get((BASE, t), float("nan"))
                                   for t, x in zip(table["test_set"], table["mean_loss"])]
    table["beats_random"] = table["delta_loss_vs_random"] < 0
    table["beats_base"] = table["delta_loss_vs_base"] < 0
    order = {BASE: 0, RANDOM: 1}
    table = table.sort_values(by=["test_set", "method"],
                              key=lambda s: s.map(lambda m: (order.get(m, 2), m)) if s.name == "method" else s)
    return table[list(REPORT_COLUMNS)].reset_index(drop=True)


def plot_losses(table: pd.DataFrame, path: Path) -> Path:
    """One panel per test set: every model's held-out loss (base grey, random red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test_sets = list(dict.fromkeys(table["test_set"])) or [""]
    fig, axes = plt.subplots(len(test_sets), 1, figsize=(max(7.0, 0.6 * table["method"].nunique() + 2),
                                                         2.8 * len(test_sets)), dpi=100, squeeze=False)
    for ax, test_set in zip(axes[:, 0], test_sets):
        part = table[table["test_set"] == test_set]
        colors = ["#888888" if m == BASE else "#d62728" if m.partition("@")[0] == RANDOM else "#1f77b4"
                  for m in part["method"]]
        ax.bar(part["method"], part["mean_loss"], color=colors)
        low, high = float(part["mean_loss"].min()), float(part["mean_loss"].max())
        pad = max((high - low) * 0.5, 0.01)
        ax.set_ylim(max(0.0, low - pad), high + pad)
        ax.set_ylabel("mean loss")
        ax.set_title(f"Held-out loss on {test_set} (lower is better)", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        for i, value in enumerate(part["mean_loss"]):
            ax.text(i, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def render_markdown(table: pd.DataFrame, png_name: str, context: dict[str, Any], inline_png: bytes | None = None) -> str:
    shown = table.copy()
    for col in ("mean_loss", "perplexity", "delta_loss_vs_random", "delta_loss_vs_base"):
        shown[col] = shown[col].map(lambda x: f"{x:.4f}" if pd.notna(x) else "")
    image = (f"data:image/png;base64,{base64.b64encode(inline_png).decode('ascii')}" if inline_png else png_name)
    lines = [
        "# instsel evaluation report",
        "",
        f"Test sets: **{context.get('test_sets')}** (items with reference answers). "
        "Metric: token-weighted mean cross-entropy of the reference answer given the prompt (chat template; every "
        "reference turn of a multi-turn item given the turns before it); lower is better. Deltas are against the "
        "model fine-tuned on a random subset of the same size and against the base model, on the same test set.",
        "",
        shown.to_markdown(index=False),
        "",
        f"![held-out loss]({image})",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in context.items() if k != "test_sets"),
    ]
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, out_dir: Path, context: dict[str, Any]) -> tuple[Path, Path, str]:
    """Write ``evaluation_report.md`` and ``evaluation_report.png`` to ``out_dir``; return both paths
    and the Markdown with the chart inlined (for the UI)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_losses(table, out_dir / "evaluation_report.png")
    md_path = out_dir / "evaluation_report.md"
    md_path.write_text(render_markdown(table, png.name, context), encoding="utf-8")
    return md_path, png, render_markdown(table, png.name, context, inline_png=png.read_bytes())
