"""selection/plan.py: partitions are selection x budget, declared in one place."""

from __future__ import annotations

import pytest

from instsel_assets.selection import plan


def test_every_selection_runs_at_every_budget():
    keys = plan.selection_keys()
    names = plan.selection_names()
    assert keys[: len(names)] == names  # the default budget keeps the bare names
    budgeted = [s.name for s in plan.SELECTIONS if s.budgeted]
    assert len(keys) == len(names) + len(budgeted) * (len(plan.BUDGETS) - 1) == len(set(keys))
    for label in (plan.budget_label(b) for b in plan.BUDGETS[1:]):
        assert {f"{n}@{label}" for n in budgeted} <= set(keys)
    assert "ifd@5pct" in keys and "random@5pct" in keys
    # the full pool takes no budget: one partition
    assert "full" in keys and not any(k.startswith("full@") for k in keys)


def test_full_pool_takes_no_budget_and_baselines_match_the_budget():
    assert plan.parse_selection_key("full")[0].budgeted is False
    with pytest.raises(KeyError, match="takes no budget"):
        plan.parse_selection_key("full@5pct")
    assert plan.baseline_keys("ifd") == {"random": "random", "full": "full"}
    assert plan.baseline_keys("ifd@5pct") == {"random": "random@5pct", "full": "full"}
    assert plan.baseline_keys("random@5pct") == {"full": "full"}
    assert plan.baseline_keys("full") == {"random": "random"}
    assert [plan.budget_of_key(k) for k in ("ifd", "ifd@5pct", "full")] == ["default", "5pct", "pool"]


@pytest.mark.parametrize(("budget", "label", "rows_of_599"), [
    (0.05, "5pct", 30), (0.125, "12_5pct", 75), (6000, "6000rows", 599), (50, "50rows", 50)])
def test_budget_labels_and_rows(budget, label, rows_of_599):
    assert plan.budget_label(budget) == label
    assert plan.budget_rows(599, budget) == rows_of_599
    assert plan.budget_rows(0, budget) == 0


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.0, 1.5, True, "5%", None])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="budget"):
        plan.check_budget_value(bad)


def test_keys_parse_back_to_their_selection_and_budget(monkeypatch):
    spec, budget = plan.parse_selection_key("ifd")
    assert (spec.name, budget) == ("ifd", None)
    spec, budget = plan.parse_selection_key("kcenter_greedy@5pct")
    assert (spec.name, budget) == ("kcenter_greedy", 0.05)
    with pytest.raises(KeyError, match="no budget '7pct' for selection 'ifd'; declared budgets: 5pct"):
        plan.parse_selection_key("ifd@7pct")
    with pytest.raises(KeyError, match="no selection named 'nope'"):
        plan.parse_selection_key("nope@5pct")
    # a user adding DEITA's 6K budget edits BUDGETS only
    monkeypatch.setattr(plan, "BUDGETS", (0.10, 0.05, 6000))
    assert plan.parse_selection_key("deita@6000rows")[1] == 6000
    assert "deita@6000rows" in plan.selection_keys()
    monkeypatch.setattr(plan, "BUDGETS", (0.10, 0.05, 0.05))
    with pytest.raises(ValueError, match="same partition label twice"):
        plan.selection_keys()
