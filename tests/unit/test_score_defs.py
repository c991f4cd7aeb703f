"""defs/scores.py wiring: how an asset's own settings reach its scorer."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import torch

from instsel_assets import registry
from instsel_assets.defs.resources import LanguageModelResource
from instsel_assets.defs.scores import run_scorer


def test_an_assets_params_override_the_resources_engine_settings(monkeypatch):
    seen = {}

    def echo(pool, model, tokenizer, *, progress=None, **kwargs):
        seen.update(kwargs)
        return pd.DataFrame({"id": pool["id"], "echo": 1.0})

    monkeypatch.setitem(registry.SCORERS, "echo_settings", registry.MethodInfo(
        "echo_settings", "scorer", "trainable-llm", "test", "records its keyword arguments", ("echo",), echo))
    lm = LanguageModelResource(model="/nonexistent/model-dir", batch_size=3, max_length=1024, use_loss_cache=False)
    pool = pd.DataFrame({"id": ["a", "b"]})
    context = dg.build_asset_context()
    scores, meta = run_scorer(context, "echo_settings", pool, torch.nn.Linear(2, 2), None, lm, what="rows",
                              params={"max_length": 512}, engine=False)
    # The discriminator is scored at the length it was trained at, not the resource's longer window.
    assert seen == {"batch_size": 3, "max_length": 512}
    assert meta["scorer_settings"].value["max_length"] == 512
    assert list(scores["id"]) == ["a", "b"]
