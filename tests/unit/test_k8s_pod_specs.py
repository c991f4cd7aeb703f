"""The Kubernetes Job of every asset's step, as dagster-k8s would submit it, built with no cluster.

The definitions are loaded the way the code server of deploy/values.yaml loads them: with that user
deployment's ``env`` (``INSTSEL_EXECUTOR=k8s``, the GPU settings), so the jobs run on the configured
``k8s_job_executor``. The step jobs come from dagster-k8s's own code: the executor is created from the job's
resolved run config, and its ``K8sStepHandler.launch_step`` builds each step's container context (the run
launcher's config, the code location's container context, the executor's config, then the step's
``dagster-k8s/config`` op tags) and calls ``construct_dagster_k8s_job``; only the Kubernetes batch API that
would receive the Job is a mock. The code location's container context is the one the chart passes with
``includeConfigInLaunchedRuns`` (namespace, service account, env ConfigMap, envSecrets, volumes, resources).

The GPU tags are computed when the ``instsel_assets.defs`` modules are imported, so each test imports them
afresh under its environment, and puts the original modules back afterwards.
"""

from __future__ import annotations

import importlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import yaml

from instsel_assets import settings

VALUES = settings.PROJECT_ROOT / "deploy" / "values.yaml"
IMAGE = "registry.example.com/instsel:test"
NAMESPACE = "dagster"
RELEASE = "dagster"  # the chart's fullname for a release named "dagster"
GPU = "nvidia.com/gpu"
DEFAULT_TOLERATIONS = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: not-a-real-token}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: dagster}}]
current-context: test
"""


def user_deployment() -> dict:
    return yaml.safe_load(VALUES.read_text())["dagster-user-deployments"]["deployments"][0]


def code_location_container_context(deployment: dict) -> dict:
    """What the chart's ``dagsterUserDeployments.k8sContainerContext`` gives the runs of this deployment."""
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env",
                            *(c["name"] for c in deployment.get("envConfigMaps") or [])],
        "env_secrets": [s["name"] for s in deployment.get("envSecrets") or []],
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
    }
    for key, field in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("resources", "resources")):
        if deployment.get(key):
            k8s[field] = deployment[key]
    return {"k8s": k8s}


def run_launcher_config(kubeconfig: Path) -> dict:
    """The K8sRunLauncher the chart configures (its instance ConfigMap), out of cluster."""
    launcher = yaml.safe_load(VALUES.read_text())["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "service_account_name": RELEASE,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "dagster_home": "/opt/dagster/dagster_home",
        "job_namespace": NAMESPACE,
        "env_config_maps": [f"{RELEASE}-pipeline-env"],
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    if run_k8s := launcher.get("runK8sConfig"):
        config["run_k8s_config"] = {"pod_spec_config": run_k8s["podSpecConfig"]}
    return config


def _is_defs_module(name: str) -> bool:
    return name == "definitions" or name == "instsel_assets.defs" or name.startswith("instsel_assets.defs.")


@pytest.fixture
def load_defs(monkeypatch, tmp_path):
    """Import ``instsel_assets.defs`` and ``definitions`` afresh under the environment of the test (deploy/values.yaml's
    user deployment env, then ``overrides``) and return the loaded ``defs``; restore the original modules after."""
    import instsel_assets

    saved = {name: module for name, module in sys.modules.items() if _is_defs_module(name)}
    saved_attribute = instsel_assets.__dict__.get("defs")

    def load(**overrides: str):
        for name, value in (user_deployment().get("env") or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "instsel"))  # not the image's /var/lib/instsel
        for name, value in overrides.items():
            monkeypatch.setenv(name, value)
        for name in [name for name in sys.modules if _is_defs_module(name)]:
            del sys.modules[name]
        return importlib.import_module("definitions").defs

    yield load
    for name in [name for name in sys.modules if _is_defs_module(name)]:
        del sys.modules[name]
    sys.modules.update(saved)
    if saved_attribute is not None:
        instsel_assets.defs = saved_attribute


@contextmanager
def k8s_instance(tmp_path: Path):
    from dagster._core.test_utils import instance_for_test

    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(KUBECONFIG)
    overrides = {"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher",
                                  "config": run_launcher_config(kubeconfig)}}
    with instance_for_test(overrides=overrides) as instance:
        yield instance


def asset_steps(defs) -> dict[str, list[str]]:
    """Step key (the asset's op name) -> the asset keys it materialises."""
    graph = defs.resolve_asset_graph()
    steps: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        steps.setdefault(graph.assets_def_for_key(key).op.name, []).append(key.to_user_string())
    return steps


def gpu_steps(defs) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {graph.assets_def_for_key(k).op.name for k in graph.get_all_asset_keys()
            if (graph.assets_def_for_key(k).op.tags or {}).get("instsel/device") == "gpu"}


def build_step_jobs(defs, tmp_path: Path) -> tuple[dict[str, dict], dict]:
    """The Kubernetes Job body and namespace dagster-k8s submits for every asset step of the global asset job,
    as the API server would receive them (camelCase dicts); and the executor."""
    import kubernetes
    from dagster._core.code_pointer import FileCodePointer
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._core.test_utils import create_run_for_test
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.client import DagsterKubernetesClient

    job_def = defs.resolve_implicit_global_asset_job_def()
    job = InMemoryJob(job_def)
    # The origin the code server of deploy/values.yaml reports (`dagster code-server start -f ... -d ...`).
    root = "/opt/instsel"
    origin = JobPythonOrigin(job_def.name, RepositoryPythonOrigin(
        executable_path="/opt/venv/bin/python",
        code_pointer=FileCodePointer(python_file=f"{root}/definitions.py", fn_name="defs", working_directory=root),
        container_image=IMAGE,
        entry_point=["dagster"],
        container_context=code_location_container_context(user_deployment())))
    batch_api = mock.MagicMock()
    real_client = DagsterKubernetesClient.production_client
    with mock.patch.object(DagsterKubernetesClient, "production_client",
                           staticmethod(lambda **_: real_client(batch_api_override=batch_api))), \
            k8s_instance(tmp_path) as instance:
        resolved = ResolvedRunConfig.build(job_def, {})
        executor = job_def.executor_def.executor_creation_fn(InitExecutorContext(
            job=job, executor_def=job_def.executor_def, executor_config=resolved.execution.execution_engine_config,
            instance=instance))
        plan = create_execution_plan(job)
        run = create_run_for_test(instance, job_name=job_def.name, job_code_origin=origin)
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True,
                               retry_mode=RetryMode.DISABLED),
            log_manager=create_context_free_log_manager(instance, run), executor=executor, output_capture=None)
        api = kubernetes.client.ApiClient()
        jobs = {}
        for step_key in sorted(asset_steps(defs)):
            context = StepHandlerContext(instance=instance, plan_context=plan_context, steps=plan.steps,
                                         execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key]))
            list(executor._step_handler.launch_step(context))  # noqa: SLF001 - the executor's own step handler
            name, _, kwargs = batch_api.method_calls[-1]
            assert name == "create_namespaced_job"
            jobs[step_key] = {"namespace": kwargs["namespace"], "body": api.sanitize_for_serialization(kwargs["body"])}
    return jobs, {"max_concurrent": executor._max_concurrent}  # noqa: SLF001


def pod_spec(job: dict) -> dict:
    return job["body"]["spec"]["template"]["spec"]


def container(job: dict) -> dict:
    return pod_spec(job)["containers"][0]


def resources(job: dict) -> dict:
    res = container(job).get("resources") or {}
    return {"requests": res.get("requests") or {}, "limits": res.get("limits") or {}}


def assert_gpu_step(job: dict, gpus: str, memory: str, tolerations: list, node_selector: dict) -> None:
    res = resources(job)
    assert res["limits"][GPU] == gpus and res["requests"][GPU] == gpus
    assert res["limits"]["memory"] == memory and res["requests"]["memory"] == memory
    assert pod_spec(job).get("tolerations") == tolerations
    assert (pod_spec(job).get("nodeSelector") or {}) == node_selector


def assert_cpu_step(job: dict) -> None:
    res = resources(job)
    assert GPU not in res["requests"] and GPU not in res["limits"]
    assert not any(t.get("key") == GPU for t in pod_spec(job).get("tolerations") or [])
    assert not pod_spec(job).get("nodeSelector")


def test_every_asset_step_is_a_job_and_only_gpu_assets_request_a_gpu(load_defs, tmp_path):
    """deploy/values.yaml's env as is: every asset's step job, GPU limits and tolerations on the GPU assets only."""
    env = user_deployment()["env"]
    defs = load_defs()
    assert defs.executor is not None and defs.executor.name == "k8s"
    jobs, _ = build_step_jobs(defs, tmp_path)
    steps, gpu = asset_steps(defs), gpu_steps(defs)
    assert set(jobs) == set(steps) and gpu and set(steps) - gpu  # both kinds exist
    assert {"ifd_scores", "finetuned_checkpoints", "alpagasus_scores"} <= gpu
    assert {"instruction_pool_assets", "metric_features", "selected_subsets", "method_comparison"}.isdisjoint(gpu)
    tolerations = json.loads(env.get("INSTSEL_K8S_GPU_TOLERATIONS", json.dumps(DEFAULT_TOLERATIONS)))
    node_selector = json.loads(env.get("INSTSEL_K8S_GPU_NODE_SELECTOR", "{}"))
    deployment = user_deployment()
    for step_key, job in jobs.items():
        body = job["body"]
        assert body["kind"] == "Job" and job["namespace"] == NAMESPACE, step_key
        assert container(job)["image"] == IMAGE
        assert container(job)["args"][:3] == ["dagster", "api", "execute_step"]
        # The code location's Secret, ConfigMap and shared data volume reach every step pod.
        env_from = container(job)["envFrom"]
        assert {"secretRef": {"name": "instsel-judge"}} in env_from
        assert {"configMapRef": {"name": f"{RELEASE}-instsel-user-env"}} in env_from
        assert {m["name"]: m["mountPath"] for m in container(job)["volumeMounts"]} == {
            m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
        assert [v["name"] for v in pod_spec(job)["volumes"]] == [v["name"] for v in deployment["volumes"]]
        assert pod_spec(job)["securityContext"] == {"fsGroup": 1000}
        if step_key in gpu:
            assert_gpu_step(job, env["INSTSEL_K8S_GPUS"], env["INSTSEL_K8S_GPU_MEMORY"], tolerations, node_selector)
        else:
            assert_cpu_step(job)
            # CPU steps are sized by the user deployment's resources (includeConfigInLaunchedRuns).
            assert resources(job) == {"requests": deployment["resources"]["requests"],
                                      "limits": deployment["resources"]["limits"]}


def test_gpu_count_memory_and_placement_follow_the_environment(load_defs, tmp_path):
    node_selector = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
                   {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    defs = load_defs(INSTSEL_K8S_GPUS="2", INSTSEL_K8S_GPU_MEMORY="80Gi",
                     INSTSEL_K8S_GPU_NODE_SELECTOR=json.dumps(node_selector),
                     INSTSEL_K8S_GPU_TOLERATIONS=json.dumps(tolerations))
    jobs, _ = build_step_jobs(defs, tmp_path)
    gpu = gpu_steps(defs)
    assert len(gpu) >= 20
    for step_key, job in jobs.items():
        if step_key in gpu:
            assert_gpu_step(job, "2", "80Gi", tolerations, node_selector)
        else:
            assert_cpu_step(job)


def test_executor_settings_from_the_environment_reach_the_step_pods(load_defs, tmp_path):
    defs = load_defs(INSTSEL_K8S_NAMESPACE="instsel-steps", INSTSEL_K8S_IMAGE_PULL_POLICY="Always",
                     INSTSEL_K8S_SERVICE_ACCOUNT="instsel-steps", INSTSEL_K8S_ENV_CONFIG_MAPS="instsel-settings, hf-mirror",
                     INSTSEL_K8S_ENV_SECRETS="instsel-judge,hf-token", INSTSEL_K8S_MAX_CONCURRENT="3")
    jobs, executor = build_step_jobs(defs, tmp_path)
    assert executor["max_concurrent"] == 3
    for step_key in ("ifd_scores", "metric_features"):
        job = jobs[step_key]
        assert job["namespace"] == "instsel-steps"
        assert container(job)["imagePullPolicy"] == "Always"
        assert pod_spec(job)["serviceAccountName"] == "instsel-steps"
        env_from = container(job)["envFrom"]
        for config_map in ("instsel-settings", "hf-mirror"):
            assert {"configMapRef": {"name": config_map}} in env_from
        for secret in ("instsel-judge", "hf-token"):
            assert {"secretRef": {"name": secret}} in env_from
        assert env_from.count({"secretRef": {"name": "instsel-judge"}}) == 1  # merged, not repeated


def test_k8s_executor_in_the_loaded_definitions(load_defs):
    defs = load_defs(INSTSEL_EXECUTOR="k8s")
    assert defs.executor.name == "k8s"
    for job in defs.resolve_all_job_defs():
        assert job.executor_def.name == "k8s", job.name


@pytest.mark.parametrize("value", [None, "", "in_process", "multiprocess"])
def test_default_executor_is_dagsters(monkeypatch, value):
    import dagster as dg

    from instsel_assets.defs import build_definitions
    from instsel_assets.defs.executors import executor_from_env

    if value is None:
        monkeypatch.delenv("INSTSEL_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("INSTSEL_EXECUTOR", value)
    assert executor_from_env() is None
    defs = build_definitions()
    assert defs.executor is None
    assert defs.resolve_job_def("prepare_pool_job").executor_def is dg.multi_or_in_process_executor


def test_unknown_executor_is_a_clear_error(monkeypatch):
    from instsel_assets.defs import build_definitions

    monkeypatch.setenv("INSTSEL_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match=r"INSTSEL_EXECUTOR='kubernetes'.*in_process, multiprocess, k8s"):
        build_definitions()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("INSTSEL_K8S_IMAGE_PULL_POLICY", "always", "Always, IfNotPresent, Never"),
    ("INSTSEL_K8S_MAX_CONCURRENT", "four", "not an integer"),
    ("INSTSEL_K8S_MAX_CONCURRENT", "0", "at least 1"),
])
def test_bad_k8s_setting_is_a_clear_error(monkeypatch, variable, value, message):
    from instsel_assets.defs.executors import executor_from_env

    monkeypatch.setenv("INSTSEL_EXECUTOR", "k8s")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}=.*{message}"):
        executor_from_env()
