"""Loading ``defs`` gives exactly the asset keys, checks, jobs and schedules of the snapshot.

A change to the graph is a deliberate act: regenerate the snapshot with
``INSTSEL_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_definitions.py`` and review the diff.
"""

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).resolve().parent.parent / "snapshots" / "definitions.json"


def describe_definitions() -> dict:
    from definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": sorted(node.partitions_def.get_partition_keys()) if node.partitions_def else None,
            "has_code_version": node.code_version is not None,
            "gpu_tagged": "dagster-k8s/config" in (graph.assets_def_for_key(key).op.tags or {}),
        }
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    schedules = sorted(s.name for s in defs.schedules or [])
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules}


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


def test_gpu_steps_request_a_gpu_and_cpu_steps_do_not():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        tags = graph.assets_def_for_key(key).op.tags or {}
        k8s = tags.get("dagster-k8s/config")
        if key.to_user_string() in {"ifd_scores", "finetuned_checkpoints", "evaluation_reports"}:
            k8s = json.loads(k8s) if isinstance(k8s, str) else k8s
            assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        else:
            assert k8s is None, key


def test_jobs_resolve():
    from definitions import defs

    for name in ("prepare_pool_job", "select_and_train_job", "evaluate_job"):
        assert isinstance(defs.resolve_job_def(name), dg.JobDefinition)
    assert defs.resolve_job_def("select_and_train_job").partitions_def is not None
