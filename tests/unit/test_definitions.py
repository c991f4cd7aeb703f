"""Loading ``defs`` gives exactly the asset keys, checks, jobs, schedules and sensors of the snapshot.

A change to the graph is a deliberate act: regenerate the snapshot with
``INSTSEL_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_definitions.py`` and review the diff.
"""

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).resolve().parent.parent / "snapshots" / "definitions.json"


def _partitions(partitions_def) -> list[str] | str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):  # its keys live in the instance
        return f"dynamic:{partitions_def.name}"
    return sorted(partitions_def.get_partition_keys())


def describe_definitions() -> dict:
    from definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "has_code_version": node.code_version is not None,
            "gpu_tagged": "dagster-k8s/config" in (graph.assets_def_for_key(key).op.tags or {}),
        }
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    schedules = sorted(s.name for s in defs.schedules or [])
    sensors = sorted(s.name for s in defs.sensors or [])
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_definitions_match_snapshot():
    current = describe_definitions()
    if os.environ.get("INSTSEL_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_check_and_a_code_version():
    current = describe_definitions()
    checked = {c.split(":")[0] for c in current["checks"]}
    assert set(current["assets"]) <= checked
    assert all(a["has_code_version"] for a in current["assets"].values())


GPU_ASSETS = {"subset_experiments", "mods_seed_model", "mods_necessary_instructions", "ifd_pre_experienced_model", "ifd_scores", "superfiltering_scores", "perplexity_scores",
              "prompt_uncertainty_scores", "nuggets_scores", "self_curation_scores", "diverseevol_ranks",
              "tegit_discriminator", "tegit_scores", "finetuned_checkpoints", "evaluation_reports",
              "alpagasus_scores", "deita_scores", "instag_tags", "lift_scores", "tree_instruct_scores",
              "wavecoder_scores", "reward_scores", "generated_answers", "pairwise_judgements", "judge_fidelity",
              "shard_superfiltering_scores"}


def test_gpu_steps_request_a_gpu_and_cpu_steps_do_not():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        tags = graph.assets_def_for_key(key).op.tags or {}
        k8s = tags.get("dagster-k8s/config")
        if key.to_user_string() in GPU_ASSETS:
            k8s = json.loads(k8s) if isinstance(k8s, str) else k8s
            assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        else:
            assert k8s is None, key


def test_jobs_resolve():
    from definitions import defs

    for name in ("prepare_pool_job", "trainable_llm_scores_job", "judge_scores_job", "select_and_train_job",
                 "evaluate_job"):
        assert isinstance(defs.resolve_job_def(name), dg.JobDefinition)
    assert defs.resolve_job_def("select_and_train_job").partitions_def is not None


def test_every_trainable_llm_scorer_has_an_asset_and_every_selection_a_partition():
    """docs/METHODS.md family 2: each method is a registered scorer with an asset, and a selection partition."""
    from definitions import defs
    from instsel_assets import registry
    from instsel_assets.defs.selection import COLUMN_ASSETS
    from instsel_assets.selection.plan import selection_names

    registry.load_all()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in ("ifd", "superfiltering", "perplexity", "prompt_uncertainty", "nuggets", "self_curation",
                 "diverseevol", "tegit"):
        assert name in selection_names()
        selector = registry.get_selector(name)
        score_assets = {COLUMN_ASSETS[c] for c in selector.columns if c in COLUMN_ASSETS}
        assert score_assets and score_assets <= keys, name
    assert "ifd_pre_experienced_model" in keys and "tegit_discriminator" in keys


def test_every_judge_scorer_has_an_asset_and_every_judge_selection_a_partition():
    """docs/METHODS.md family 3: each pool-scoring judge template is a registered scorer whose columns an asset of
    the judge_scores group writes, and its selection reads them from that asset."""
    from definitions import defs
    from instsel_assets import registry
    from instsel_assets.defs.selection import COLUMN_ASSETS
    from instsel_assets.selection.plan import DEMO_SELECTIONS, selection_names

    registry.load_all()
    graph = defs.resolve_asset_graph()
    judge_assets = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "judge_scores"}
    assert judge_assets == {"alpagasus_scores", "deita_scores", "instag_tags", "lift_scores", "tree_instruct_scores",
                            "wavecoder_scores"}
    for name in ("alpagasus", "deita", "instag", "lift", "tree_instruct", "wavecoder"):
        assert name in selection_names() and name not in DEMO_SELECTIONS
        assert registry.get_scorer(name).family == "powerful-llm"
        selector = registry.get_selector(name)
        read = {COLUMN_ASSETS[c] for c in selector.columns if c in COLUMN_ASSETS} & judge_assets
        assert len(read) == 1, name
    assert COLUMN_ASSETS["instag_tags"] == "instag_tags"  # the normalised tags; the raw ones are instag_tags_raw
    selected = graph.get(dg.AssetKey("selected_subsets"))
    assert judge_assets <= {k.to_user_string() for k in selected.parent_keys}
    assert "judge" in defs.resources


def test_the_indicator_and_small_model_scorers_have_assets_and_their_selections_partitions():
    """docs/METHODS.md families 1 and 4: duplicates and the reward score are tables selectors can read; DQ, the
    coreset and the reward top-m are partitions."""
    from definitions import defs
    from instsel_assets import registry
    from instsel_assets.defs.selection import COLUMN_ASSETS
    from instsel_assets.selection.plan import selection_names

    graph = defs.resolve_asset_graph()
    for scorer, asset, group in (("duplicates", "duplicate_indicators", "features"),
                                 ("reward_score", "reward_scores", "scores")):
        assert graph.get(dg.AssetKey(asset)).group_name == group
        assert {COLUMN_ASSETS[c] for c in registry.get_scorer(scorer).columns if c != "reward_model"} == {asset}
    assert {"dataset_quantization", "coreset", "reward_top"} <= set(selection_names())
    assert "reward_model" in defs.resources
