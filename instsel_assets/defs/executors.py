"""The executor of the code location, chosen by environment variables read when the definitions load.

``INSTSEL_EXECUTOR`` picks it:

- unset, ``in_process`` or ``multiprocess`` (the default): no executor is set on the Definitions, so every
  job keeps Dagster's default executor (multiprocess; a run can pick in-process with the run config
  ``execution: {config: {in_process: {}}}``). ``instsel demo`` and ``dagster dev`` behave as before.
- ``k8s``: dagster-k8s's ``k8s_job_executor``: each step of a run is its own Kubernetes Job. It needs the
  ``K8sRunLauncher`` (the Dagster Helm chart's ``runLauncher.type``). GPU steps carry their resources,
  node selector and tolerations in their ``dagster-k8s/config`` op tags (``defs/k8s.py``); CPU steps
  request no GPU.

The ``k8s`` executor is configured from these variables; each one left unset keeps what the run launcher
and the code location (the Helm chart's user deployment) already give the step pods:

| variable | executor field | value |
| --- | --- | --- |
| ``INSTSEL_K8S_NAMESPACE`` | ``job_namespace`` | namespace of the step Jobs |
| ``INSTSEL_K8S_IMAGE_PULL_POLICY`` | ``image_pull_policy`` | ``Always``, ``IfNotPresent`` or ``Never`` |
| ``INSTSEL_K8S_SERVICE_ACCOUNT`` | ``service_account_name`` | service account of the step pods |
| ``INSTSEL_K8S_ENV_CONFIG_MAPS`` | ``env_config_maps`` | comma-separated ConfigMap names, loaded as environment |
| ``INSTSEL_K8S_ENV_SECRETS`` | ``env_secrets`` | comma-separated Secret names, loaded as environment |
| ``INSTSEL_K8S_MAX_CONCURRENT`` | ``max_concurrent`` | most step pods of one run at the same time |

The values are fixed when the definitions load (the executor is ``configured``), like the GPU tags.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

EXECUTOR_VAR = "INSTSEL_EXECUTOR"
DEFAULT_EXECUTORS = ("in_process", "multiprocess")
ALLOWED_EXECUTORS = (*DEFAULT_EXECUTORS, "k8s")
IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor ``INSTSEL_EXECUTOR`` names, or None for Dagster's default (unset, ``in_process``,
    ``multiprocess``). Raises ValueError on any other value."""
    value = os.environ.get(EXECUTOR_VAR, "").strip().lower()
    if not value or value in DEFAULT_EXECUTORS:
        return None
    if value == "k8s":
        return k8s_executor_from_env()
    raise ValueError(f"{EXECUTOR_VAR}={os.environ[EXECUTOR_VAR]!r} is not a known executor; "
                     f"allowed values: {', '.join(ALLOWED_EXECUTORS)} (unset means in_process/multiprocess, "
                     "Dagster's default)")


def k8s_executor_config_from_env() -> dict[str, Any]:
    """The ``k8s_job_executor`` config the ``INSTSEL_K8S_*`` variables give (only the fields that are set)."""
    config: dict[str, Any] = {}
    if namespace := _get("INSTSEL_K8S_NAMESPACE"):
        config["job_namespace"] = namespace
    if policy := _get("INSTSEL_K8S_IMAGE_PULL_POLICY"):
        if policy not in IMAGE_PULL_POLICIES:
            raise ValueError(f"INSTSEL_K8S_IMAGE_PULL_POLICY={policy!r} is not one of {', '.join(IMAGE_PULL_POLICIES)}")
        config["image_pull_policy"] = policy
    if account := _get("INSTSEL_K8S_SERVICE_ACCOUNT"):
        config["service_account_name"] = account
    if config_maps := _names("INSTSEL_K8S_ENV_CONFIG_MAPS"):
        config["env_config_maps"] = config_maps
    if secrets := _names("INSTSEL_K8S_ENV_SECRETS"):
        config["env_secrets"] = secrets
    if max_concurrent := _get("INSTSEL_K8S_MAX_CONCURRENT"):
        try:
            config["max_concurrent"] = int(max_concurrent)
        except ValueError:
            raise ValueError(f"INSTSEL_K8S_MAX_CONCURRENT={max_concurrent!r} is not an integer") from None
        if config["max_concurrent"] < 1:
            raise ValueError(f"INSTSEL_K8S_MAX_CONCURRENT={max_concurrent!r} must be at least 1")
    return config


def k8s_executor_from_env() -> dg.ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor`` (name ``k8s``) configured from the ``INSTSEL_K8S_*`` variables."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config_from_env())


def _get(var: str) -> str:
    return os.environ.get(var, "").strip()


def _names(var: str) -> list[str]:
    return [name.strip() for name in _get(var).split(",") if name.strip()]
