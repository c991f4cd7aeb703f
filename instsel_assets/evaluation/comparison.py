"""The method comparison (docs/METHODS.md, "Evaluation"; the survey's first open challenge): one table of every
selection method x budget x test set with the held-out loss, the winning score against the internal baselines
(``random`` at the same budget, ``full``) and against the external models shipped with the test set, the judge's
fidelity beside it, plots, and each row's lineage (subset hash, scorer settings).

Rows: one per (method, test set), plus a pooled ``all`` row per method (WS over every judged item of every test
set; the loss there is the mean of the per-set losses). WS is None where nothing was judged; ``n_vs_*`` says
over how many items each WS was computed, so a WS from 3 items reads as such.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.evaluation.winning import summarise_columns

ALL = "all"
COMPARISON_COLUMNS = (
    "method", "selection", "budget", "subset_rows", "subset_hash", "test_set", "heldout_loss",
    "ws_vs_random", "n_vs_random", "ws_vs_full", "n_vs_full", "ws_vs_external", "n_vs_external",
    "win_rate_vs_random", "win_rate_vs_full", "position_consistency", "scorer_settings", "selection_run_id")


def win_table(judgements: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, baseline, baseline_kind, test_set), plus ``test_set == "all"`` pooled rows: the
    counts, WS, win rate and position consistency of the items judged "ok"; ``n_pairs`` and ``n_not_ok`` count
    every item, judged or not."""
    rows = []
    keys = ["method", "baseline", "baseline_kind", "test_set"]
    frames = [judgements, judgements.assign(test_set=ALL)] if len(judgements) else []
    for frame in frames:
        for key, group in frame.groupby(keys, sort=True):
            ok = group[group["judge_status"] == "ok"]
            summary = summarise_columns(*(pd.to_numeric(ok[c]).tolist()
                                          for c in ("score_a_ab", "score_b_ab", "score_a_ba", "score_b_ba")))
            rows.append({**dict(zip(keys, key)), "n_pairs": len(group), "n_not_ok": len(group) - len(ok),
                         **summary})
    columns = [*keys, "n_pairs", "n_not_ok", "n_all", "n_win", "n_tie", "n_lose", "winning_score", "win_rate",
               "n_two_orders", "n_one_order", "n_consistent", "position_consistency"]
    return pd.DataFrame(rows, columns=columns)


def comparison_table(losses: pd.DataFrame, wins: pd.DataFrame, lineage: dict[str, dict[str, Any]],
                     baselines: dict[str, dict[str, str]]) -> pd.DataFrame:
    """The report's table (``COMPARISON_COLUMNS``). ``losses``: evaluation_reports' table (method, test_set,
    mean_loss); ``wins``: ``win_table``; ``lineage``: per method ``selection, budget, subset_rows, subset_hash,
    scorer_settings, selection_run_id``; ``baselines``: per method ``{"random": key, "full": key}``."""
    loss_of = {(m, t): float(x) for m, t, x in zip(losses.get("method", []), losses.get("test_set", []),
                                                    losses.get("mean_loss", []))}
    methods = sorted(({m for m in wins.get("method", [])} | {m for m, _ in loss_of}) - {"base"})
    rows = []
    for method in methods:
        mine = wins[wins["method"] == method] if len(wins) else wins
        test_sets = sorted({t for m, t in loss_of if m == method} | set(mine.get("test_set", [])) - {ALL})
        for test_set in [*test_sets, ALL]:
            here = mine[mine["test_set"] == test_set] if len(mine) else mine
            row: dict[str, Any] = {"method": method, "test_set": test_set, **_lineage_fields(lineage.get(method))}
            if test_set == ALL:
                per_set = [loss_of[(method, t)] for t in test_sets if (method, t) in loss_of]
                row["heldout_loss"] = float(np.mean(per_set)) if per_set else math.nan
            else:
                row["heldout_loss"] = loss_of.get((method, test_set), math.nan)
            for kind in ("random", "full"):
                target = baselines.get(method, {}).get(kind)
                hit = here[(here["baseline_kind"] == "internal") & (here["baseline"] == target)] if len(here) else here
                won = hit.iloc[0] if len(hit) else None
                row[f"ws_vs_{kind}"] = _number(won, "winning_score")
                row[f"n_vs_{kind}"] = int(won["n_all"]) if won is not None else 0
                row[f"win_rate_vs_{kind}"] = _number(won, "win_rate")
            ext = here[here["baseline_kind"] == "external"] if len(here) else here
            row["ws_vs_external"] = json.dumps({str(r.baseline): _round(r.winning_score)
                                                for r in ext.itertuples(index=False)}, sort_keys=True)
            row["n_vs_external"] = int(ext["n_all"].sum()) if len(ext) else 0
            judged = here[here["n_two_orders"] > 0] if len(here) else here
            n_two = int(judged["n_two_orders"].sum()) if len(judged) else 0
            row["position_consistency"] = (float(judged["n_consistent"].sum()) / n_two) if n_two else None
            rows.append(row)
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for column in ("ws_vs_random", "ws_vs_full", "win_rate_vs_random", "win_rate_vs_full", "position_consistency",
                   "heldout_loss"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table


def _lineage_fields(info: dict[str, Any] | None) -> dict[str, Any]:
    info = info or {}
    return {"selection": info.get("selection", ""), "budget": info.get("budget", ""),
            "subset_rows": int(info.get("subset_rows") or 0), "subset_hash": info.get("subset_hash", ""),
            "scorer_settings": json.dumps(info.get("scorer_settings") or {}, sort_keys=True, default=str),
            "selection_run_id": info.get("selection_run_id", "")}


def _number(row, column: str) -> float | None:
    if row is None:
        return None
    value = row[column]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _round(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)


# ------------------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_distributions(judgements: pd.DataFrame, path: Path) -> Path:
    """Box plot per method of the judge's scores of its own answers (both orders, every baseline)."""
    plt = _plt()
    ok = judgements[judgements["judge_status"] == "ok"] if len(judgements) else judgements
    methods = sorted(set(ok.get("method", [])))
    data = [pd.to_numeric(pd.concat([ok.loc[ok["method"] == m, "score_a_ab"], ok.loc[ok["method"] == m, "score_a_ba"]]))
            .dropna().to_numpy() for m in methods]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(methods) + 2), 3.5), dpi=100)
    if methods:
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right")
    else:
        ax.text(0.5, 0.5, "no judged pairs", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("judge score of the method's answer")
    ax.set_title("Judge score distributions (both orders, every baseline)")
    return _save(fig, plt, path)


def plot_ws_bars(table: pd.DataFrame, path: Path) -> Path:
    """Pooled WS of every method against random and full (1 = parity)."""
    plt = _plt()
    pooled = table[table["test_set"] == ALL]
    methods = list(pooled["method"])
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(methods) + 2), 3.5), dpi=100)
    for offset, kind, color in ((-0.2, "random", "#d62728"), (0.2, "full", "#1f77b4")):
        values = pd.to_numeric(pooled[f"ws_vs_{kind}"], errors="coerce").fillna(0).to_numpy()
        ax.bar(x + offset, values, width=0.4, color=color, label=f"vs {kind}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.set_ylim(0, 2)
    ax.set_ylabel("winning score (all test sets)")
    ax.set_title("Winning score: above 1 beats the baseline")
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_loss_vs_size(losses: pd.DataFrame, path: Path) -> Path:
    """Mean held-out loss over the test sets against the subset size (the base model at 0 rows)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if len(losses):
        mean = losses.groupby("method").agg(loss=("mean_loss", "mean"), rows=("subset_rows", "max")).reset_index()
        ax.scatter(mean["rows"], mean["loss"])
        for r in mean.itertuples(index=False):
            ax.annotate(r.method, (r.rows, r.loss), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("subset rows")
    ax.set_ylabel("held-out loss (mean over test sets)")
    ax.set_title("Held-out loss vs subset size (lower is better)")
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ markdown
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ws_cell(ws, win_rate, n: int) -> str:
    if ws is None or (isinstance(ws, float) and math.isnan(ws)):
        return ""
    return f"{ws:.3f} / {win_rate:.2f} ({n})"


def render_markdown(table: pd.DataFrame, wins: pd.DataFrame, fidelity: list[dict[str, Any]],
                    images: dict[str, str], context: dict[str, Any]) -> str:
    """The report: fidelity first (how far the judge can be trusted), then the table, the external comparison,
    the plots (``images``: title -> path or data URI) and the settings."""
    lines = ["# instsel method comparison", "",
             "Every selection method, at every budget, on the same test sets with the same judge and the same "
             "baselines. WS = 1 + (wins - losses) / items (above 1 beats the baseline); each item judged twice "
             "with the answers swapped: a win is better twice or better once and tied once. Held-out loss: mean "
             "cross-entropy of the test set's reference answers (lower is better).", "",
             "## Judge fidelity (LLMBar Natural, human-labelled pairs)", ""]
    if fidelity:
        lines += ["| judge | pairs judged | accuracy | accuracy (decided) | ties | position consistency | "
                  "prefers 1st shown | prefers 2nd shown | unparsable | failed |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for f in fidelity:
            lines.append(f"| {f['judge_backend']} | {f['n_judged']} / {f['n_pairs']} | {_fmt(f['accuracy'])} | "
                         f"{_fmt(f['accuracy_decided'])} | {_fmt(f['tie_rate'])} | {_fmt(f['position_consistency'])} | "
                         f"{_fmt(f['prefers_first_shown'])} | {_fmt(f['prefers_second_shown'])} | "
                         f"{f['n_unparsable']} | {f['n_failed']} |")
        lines += ["", "Chance accuracy is 0.5 for a judge that always decides. A judge with low position consistency "
                      "mostly ties, so its WS stays near 1 whatever the answers: read the WS below with these numbers.",
                  ""]
    else:
        lines += ["(judge_fidelity not materialised)", ""]
    lines += ["## Every method x budget x test set", "",
              "WS cells read `WS / win rate (items)`; the external column lists each shipped model's WS. The `all` "
              "row pools "
              "every judged item of the method; its loss is the mean over the test sets with references.", "",
              "| method | budget | rows | subset hash | test set | held-out loss | WS vs random | WS vs full | "
              "WS vs external | position consistency |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.itertuples(index=False):
        external = ", ".join(f"{m} {_fmt(w, 2)}" for m, w in json.loads(r.ws_vs_external or "{}").items())
        lines.append(f"| {r.method} | {r.budget} | {r.subset_rows} | `{r.subset_hash}` | {r.test_set} | "
                     f"{_fmt(r.heldout_loss)} | {_ws_cell(r.ws_vs_random, r.win_rate_vs_random, r.n_vs_random)} | "
                     f"{_ws_cell(r.ws_vs_full, r.win_rate_vs_full, r.n_vs_full)} | {external} | "
                     f"{_fmt(r.position_consistency, 2)} |")
    lines.append("")
    lines += ["## Lineage of each method", "",
              "| method | subset hash | selected_subsets run | scorer settings |", "| --- | --- | --- | --- |"]
    for r in table[table["test_set"] == ALL].itertuples(index=False):
        settings = r.scorer_settings if len(r.scorer_settings) <= 400 else r.scorer_settings[:400] + "..."
        lines.append(f"| {r.method} | `{r.subset_hash}` | {r.selection_run_id} | {settings.replace('|', '/')} |")
    lines.append("")
    external = wins[(wins["baseline_kind"] == "external") & (wins["test_set"] != ALL)] if len(wins) else wins
    if len(external):
        lines += ["## External comparison (answers shipped with the test sets)", "",
                  "| method | test set | external model | items | win | tie | lose | WS | position consistency |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in external.itertuples(index=False):
            lines.append(f"| {r.method} | {r.test_set} | {r.baseline} | {r.n_all} | {r.n_win} | {r.n_tie} | {r.n_lose} "
                         f"| {_fmt(_round(r.winning_score), 4)} | {_fmt(r.position_consistency)} |")
        lines.append("")
    lines += ["## Plots", ""]
    for title, src in images.items():
        lines += [f"![{title}]({src})", ""]
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in context.items())]
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, wins: pd.DataFrame, judgements: pd.DataFrame, losses: pd.DataFrame,
                 fidelity: list[dict[str, Any]], out_dir: Path, context: dict[str, Any]
                 ) -> tuple[Path, list[Path], str]:
    """Write ``method_comparison.md`` and its three PNGs to ``out_dir``; return the Markdown path, the PNG paths
    and the Markdown with the PNGs inlined (for the Dagster UI)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {"judge score distributions": plot_score_distributions(judgements, out_dir / "method_comparison_scores.png"),
            "winning score": plot_ws_bars(table, out_dir / "method_comparison_ws.png"),
            "held-out loss vs subset size": plot_loss_vs_size(losses, out_dir / "method_comparison_loss_vs_size.png")}
    md_path = out_dir / "method_comparison.md"
    md_path.write_text(render_markdown(table, wins, fidelity, {t: p.name for t, p in pngs.items()}, context),
                       encoding="utf-8")
    inline = {t: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii") for t, p in pngs.items()}
    return md_path, list(pngs.values()), render_markdown(table, wins, fidelity, inline, context)
