"""Kubernetes tags for GPU steps, read by dagster-k8s's ``k8s_job_executor`` / run launcher.

The GPU request, memory, node selector and tolerations can be changed with environment
variables (read when the definitions load), so one image serves several clusters:

- ``INSTSEL_K8S_GPUS`` (default ``1``): the ``nvidia.com/gpu`` request and limit;
- ``INSTSEL_K8S_GPU_MEMORY`` (default ``32Gi``): the memory request and limit (the CPU request is 4);
- ``INSTSEL_K8S_GPU_NODE_SELECTOR`` (JSON map, default ``{}``: none): the pod's node selector;
- ``INSTSEL_K8S_GPU_TOLERATIONS`` (JSON list, default: tolerate the ``nvidia.com/gpu`` taint, ``NoSchedule``).

The executor that reads these tags is chosen in ``defs/executors.py`` (``INSTSEL_EXECUTOR=k8s``);
deploy/README.md lists every production variable.
"""

from __future__ import annotations

import json
import os
from typing import Any


def gpu_op_tags() -> dict[str, Any]:
    gpus = os.environ.get("INSTSEL_K8S_GPUS", "1")
    memory = os.environ.get("INSTSEL_K8S_GPU_MEMORY", "32Gi")
    node_selector = json.loads(os.environ.get("INSTSEL_K8S_GPU_NODE_SELECTOR", "{}"))
    tolerations = json.loads(os.environ.get(
        "INSTSEL_K8S_GPU_TOLERATIONS",
        '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'))
    pod_spec: dict[str, Any] = {"tolerations": tolerations}
    if node_selector:
        pod_spec["node_selector"] = node_selector
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "4", "memory": memory, "nvidia.com/gpu": gpus},
                    "limits": {"memory": memory, "nvidia.com/gpu": gpus},
                }
            },
            "pod_spec_config": pod_spec,
        },
        "instsel/device": "gpu",
    }
