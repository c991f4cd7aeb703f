"""The evaluation report's comparison table, Markdown and chart."""

import math

from instsel_assets.evaluation.report import comparison_table, write_report


def rows():
    common = {"test_set": "alpaca_eval_805", "n_examples": 10, "n_answer_tokens": 500}
    return [
        {"model": "m", "method": "base", "subset_rows": 0, "subset_hash": "", "mean_loss": 2.0, **common},
        {"model": "c/ifd", "method": "ifd", "subset_rows": 4, "subset_hash": "h1", "mean_loss": 1.7, **common},
        {"model": "c/random", "method": "random", "subset_rows": 4, "subset_hash": "h2", "mean_loss": 1.8, **common},
        {"model": "c/longest", "method": "longest", "subset_rows": 4, "subset_hash": "h3", "mean_loss": 2.1, **common},
    ]


def test_deltas_and_order():
    table = comparison_table(rows()).set_index("method")
    assert list(comparison_table(rows())["method"]) == ["base", "random", "ifd", "longest"]
    assert math.isclose(table.loc["ifd", "delta_loss_vs_random"], -0.1)
    assert math.isclose(table.loc["longest", "delta_loss_vs_base"], 0.1)
    assert table.loc["ifd", "beats_random"] and not table.loc["longest", "beats_base"]
    assert math.isclose(table.loc["base", "perplexity"], math.exp(2.0))


def test_write_report(tmp_path):
    table = comparison_table(rows())
    md_path, png_path, inline = write_report(table, tmp_path, {"test_set": "alpaca_eval_805", "n_examples": 10,
                                                               "base_model": "m"})
    text = md_path.read_text()
    assert "| ifd" in text and "evaluation_report.png" in text and "base_model=m" in text
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in inline


def test_each_test_set_and_budget_has_its_own_random():
    base = {"n_examples": 10, "n_answer_tokens": 500, "subset_hash": "", "model": "m"}
    data = []
    for test_set, shift in (("alpaca_eval_805", 0.0), ("mt_bench", 1.0)):
        for method, loss, size in (("base", 2.0, 0), ("random", 1.8, 4), ("random@5pct", 1.9, 2), ("ifd", 1.7, 4),
                                   ("ifd@5pct", 1.95, 2), ("full", 1.6, 40)):
            data.append({**base, "method": method, "mean_loss": loss + shift, "subset_rows": size,
                         "test_set": test_set})
    table = comparison_table(data).set_index(["test_set", "method"])
    assert math.isclose(table.loc[("mt_bench", "ifd@5pct"), "delta_loss_vs_random"], 0.05)  # vs random@5pct
    assert math.isclose(table.loc[("mt_bench", "ifd"), "delta_loss_vs_random"], -0.1)  # vs random
    assert math.isclose(table.loc[("alpaca_eval_805", "full"), "delta_loss_vs_random"], -0.2)
    assert math.isclose(table.loc[("mt_bench", "full"), "delta_loss_vs_base"], -0.4)
    assert math.isnan(table.loc[("mt_bench", "random"), "delta_loss_vs_random"]) is False
