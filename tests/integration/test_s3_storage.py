"""INSTSEL_STORAGE=s3 against a real S3-compatible server (moto's, on loopback): every kind of value the chain
stores goes through the S3 IO managers and back.

- tables with the real tables' list columns (``conversations``: list of role/content structs; ``embedding``:
  float32 arrays), read back with exactly the pandas types the DuckDB IO manager gives, and an empty table;
- a partitioned table (two selection partitions, ``ifd`` and ``ifd@5pct``, each read back alone, then together);
- checkpoint-like artefact directories (several files, nested folders) and a file-valued artefact, downloaded
  back byte for byte to a local cache with the same structure;
- two real ``dg.materialize`` runs through ``default_resources()``: the real ``evaluation_test_sets``,
  ``external_answers`` and SQL model ``length_indicators`` (from S3 inputs), then a partition of a selection ->
  checkpoint -> reader chain; the bucket is listed and the sentinel credentials are looked for everywhere.
"""

import hashlib
import logging
import math
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

BUCKET = "instsel-test-bucket"
PREFIX = "runs/test"
ACCESS_KEY_ID = "AKIDSENTINEL7Q3Z"
SECRET_KEY = "sentinel-secret-key-9f2c4b1e-do-not-log"
SESSION_TOKEN = "sentinel-session-token-51aa"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A moto S3 server on a free loopback port with the bucket created, and the environment of
    ``INSTSEL_STORAGE=s3`` with sentinel credentials; yields a boto3 client of that server."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                "INSTSEL_S3_CACHE", "INSTSEL_S3_REGION", "INSTSEL_DUCKDB"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-creds"),
        "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost",
        "INSTSEL_STORAGE": "s3", "INSTSEL_S3_BUCKET": BUCKET, "INSTSEL_S3_PREFIX": PREFIX,
        "INSTSEL_S3_ENDPOINT_URL": endpoint,
        "INSTSEL_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    (tmp_path / "dagster_home").mkdir()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def bucket_keys(client, prefix: str = PREFIX + "/") -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys |= {item["Key"] for item in page.get("Contents", [])}
    return keys


# ------------------------------------------------------------------------------------------------ data
def pool_frame() -> pd.DataFrame:
    """Rows with the columns and types of the real ``instruction_pool`` (conversations: STRUCT(role, content)[])."""
    convs = [
        [{"role": "user", "content": "Give three tips for staying healthy."},
         {"role": "assistant", "content": "1. Eat a balanced diet.\n2. Exercise.\n3. Sleep well."}],
        [{"role": "user", "content": "给出三个保持健康的建议。"}, {"role": "assistant", "content": "均衡饮食，经常锻炼。"},
         {"role": "user", "content": "再详细一点？"}, {"role": "assistant", "content": "每天睡够八小时。"}],
        [{"role": "user", "content": "Translate 'good morning' into French.\n\nInput: good morning"},
         {"role": "assistant", "content": "Bonjour."}],
    ]
    return pd.DataFrame({
        "id": ["a1b2c3d4e5f60718", "0f1e2d3c4b5a6978", "1234567890abcdef"],
        "source": ["alpaca", "belle_zh", "dolly"],
        "conversations": convs,
        "instruction": ["Give three tips for staying healthy.", "给出三个保持健康的建议。",
                        "Translate 'good morning' into French."],
        "input": ["", "", "good morning"],
        "output": ["1. Eat a balanced diet.\n2. Exercise.\n3. Sleep well.", "均衡饮食，经常锻炼。", "Bonjour."],
        "n_turns": [1, 2, 1],
        "category": [None, None, "open_qa"],
        "source_file": ["alpaca.json", "belle_zh.jsonl", "dolly.jsonl"],
        "source_row": [0, 0, 3],
    })


def features_frame(pool: pd.DataFrame) -> pd.DataFrame:
    """Rows with the columns and types of the real ``metric_features`` (embedding: FLOAT[])."""
    rng = np.random.default_rng(0)
    n = len(pool)
    return pd.DataFrame({
        "id": pool["id"], "language": ["en", "zh", "en"],
        "instruction_tokens": [8, 9, 12], "input_tokens": [0, 0, 3], "output_tokens": [17, 11, 4],
        "total_tokens": [25, 20, 19], "ttr": [0.9, 1.0, 0.75], "mtld": [42.5, float("nan"), 10.0],
        "embedding": [rng.standard_normal(16).astype(np.float32) for _ in range(n)],
        "knn6_mean_distance": [0.41, 0.52, 0.38],
    })


def plain(value):
    """Cells as plain Python (numpy arrays -> lists, NaN -> a marker) for exact comparisons."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, np.generic):
        return plain(value.item())
    return value


def assert_same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.astype(str).to_dict() == want.dtypes.astype(str).to_dict()
    assert len(got) == len(want)
    for col in got.columns:
        assert [type(v) for v in got[col]] == [type(v) for v in want[col]], col
        assert [plain(v) for v in got[col]] == [plain(v) for v in want[col]], col
        arrays = [(v.dtype, w.dtype) for v, w in zip(got[col], want[col]) if isinstance(v, np.ndarray)]
        assert all(a == b for a, b in arrays), col


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_checkpoint_dir(root: Path, seed: int = 0) -> Path:
    """A directory shaped like a LoRA checkpoint plus a TEGIT head: several files, nested folders, an empty file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter_model.safetensors").write_bytes(rng.bytes(300_000))
    (root / "adapter_config.json").write_text('{"r": 8, "target_modules": ["q_proj", "v_proj"]}')
    (root / "tokenizer.json").write_text('{"model": {"type": "BPE"}, "added_tokens": ["<|im_start|>"]}')
    (root / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (root / "instsel_checkpoint.json").write_text(f'{{"base_model": "packaged:smollm2-135m-instruct", "seed": {seed}}}')
    (root / "head").mkdir(exist_ok=True)
    (root / "head" / "classifier.pt").write_bytes(rng.bytes(4096))
    (root / "head" / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "head" / "nested" / "deeper" / "state.bin").write_bytes(rng.bytes(1000))
    (root / "head" / "nested" / "EMPTY").write_bytes(b"")
    return root


# ------------------------------------------------------------------------------------------------ configuration
def test_storage_selection_and_default_unchanged(tmp_path, monkeypatch):
    import dagster as dg

    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.resources import default_resources
    from instsel_assets.defs.storage import S3ArtifactIOManager, S3TableIOManager, storage_resources

    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    for var in ("INSTSEL_STORAGE", "INSTSEL_S3_BUCKET", "INSTSEL_S3_PREFIX", "INSTSEL_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    assert storage_resources() == {}
    local = default_resources()
    assert isinstance(local["io_manager"], InstselDuckDBIOManager)
    assert isinstance(local["artifact_io_manager"], dg.FilesystemIOManager)
    monkeypatch.setenv("INSTSEL_STORAGE", "local")
    assert storage_resources() == {}

    monkeypatch.setenv("INSTSEL_STORAGE", "gcs")
    with pytest.raises(ValueError, match="INSTSEL_STORAGE"):
        storage_resources()
    monkeypatch.setenv("INSTSEL_STORAGE", "s3")
    with pytest.raises(ValueError, match="INSTSEL_S3_BUCKET"):
        storage_resources()
    monkeypatch.setenv("INSTSEL_S3_BUCKET", BUCKET)
    monkeypatch.setenv("INSTSEL_S3_ENDPOINT_URL", f"http://user:{SECRET_KEY}@127.0.0.1:9000")
    with pytest.raises(ValueError, match="must not hold credentials") as err:
        storage_resources()
    assert SECRET_KEY not in str(err.value)

    monkeypatch.setenv("INSTSEL_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    s3_mode = default_resources()
    table_io, artifact_io = s3_mode["io_manager"], s3_mode["artifact_io_manager"]
    assert isinstance(table_io, S3TableIOManager) and isinstance(artifact_io, S3ArtifactIOManager)
    assert (table_io.bucket, table_io.prefix) == (BUCKET, "instsel")  # the default prefix
    assert artifact_io.cache_dir == str((tmp_path / "home" / "cache" / "s3").resolve())
    # the credentials are references to the standard variables, not their values
    assert isinstance(table_io.s3.aws_secret_access_key, dg.EnvVar)
    assert table_io.s3.aws_secret_access_key == "AWS_SECRET_ACCESS_KEY"
    assert table_io.s3.aws_session_token is None  # unset -> left to boto3's chain
    assert {k for k in s3_mode if s3_mode[k] is not local.get(k)} >= {"io_manager", "artifact_io_manager"}
    assert set(s3_mode) == set(local)


# ------------------------------------------------------------------------------------------------ IO managers
def test_tables_round_trip_with_the_duckdb_types(s3, tmp_path):
    import dagster as dg

    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.storage import read_table, storage_resources

    pool = pool_frame()
    features = features_frame(pool)
    empty = pd.DataFrame({"id": pd.Series([], dtype=object), "reason": pd.Series([], dtype=object),
                          "kind": pd.Series([], dtype=object)})
    tables = {"instruction_pool": pool, "metric_features": features, "pool_quarantine": empty,
              ("raw_datasets", "alpaca"): pool.drop(columns=["id"])}
    duck = InstselDuckDBIOManager(database=str(tmp_path / "reference.duckdb"))
    duck_config = {"database": str(tmp_path / "reference.duckdb"), "connection_config": {}}
    with dg.build_resources(storage_resources()) as res, dg.build_resources({"io_manager": duck}) as ref:
        # the EnvVar resolved to the sentinel inside the resources, and the client signs with it
        assert res.io_manager.s3.aws_secret_access_key == SECRET_KEY
        creds = res.io_manager.s3.get_client()._request_signer._credentials.get_frozen_credentials()
        assert (creds.access_key, creds.secret_key, creds.token) == (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN)
        assert SECRET_KEY not in repr(res.io_manager) and SECRET_KEY not in repr(res.artifact_io_manager)
        for key, frame in tables.items():
            out = dg.build_output_context(asset_key=key)
            res.io_manager.handle_output(out, frame)
            metadata = out.get_logged_metadata()
            assert metadata["dagster/storage_kind"].value == "s3"
            assert metadata["dagster/row_count"].value == len(frame)
            ref_out = dg.build_output_context(asset_key=key, resource_config=duck_config)
            ref.io_manager.handle_output(ref_out, frame)
            got = res.io_manager.load_input(dg.build_input_context(asset_key=key, upstream_output=out))
            want = ref.io_manager.load_input(dg.build_input_context(
                asset_key=key, resource_config=duck_config, upstream_output=ref_out,
                dagster_type=dg.PythonObjectDagsterType(pd.DataFrame)))
            # exactly what the DuckDB IO manager hands a consumer today
            assert_same_frame(got, want)
    keys = bucket_keys(s3)
    assert {f"{PREFIX}/instruction_pool/table.parquet", f"{PREFIX}/metric_features/table.parquet",
            f"{PREFIX}/pool_quarantine/table.parquet", f"{PREFIX}/raw_datasets/alpaca/table.parquet"} <= keys

    got = read_table("instruction_pool")
    assert [plain(c) for c in got["conversations"]] == [plain(c) for c in pool["conversations"]]
    assert all(isinstance(t, dict) for c in got["conversations"] for t in c)
    emb = read_table("metric_features")["embedding"]
    assert all(e.dtype == np.float32 for e in emb)
    np.testing.assert_array_equal(np.stack(emb), np.stack(features["embedding"]))
    assert read_table("pool_quarantine").empty
    with pytest.raises(LookupError, match="materialise it first") as err:
        read_table("never_materialised")
    assert SECRET_KEY not in str(err.value) and ACCESS_KEY_ID not in str(err.value)


def test_partitioned_table_per_selection_partition(s3):
    import dagster as dg

    from instsel_assets.defs.selection import selection_partitions
    from instsel_assets.defs.storage import storage_resources

    assert {"ifd", "ifd@5pct"} <= set(selection_partitions.get_partition_keys())

    def subset(method: str, ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"method": method, "selection_rank": range(len(ids)), "id": ids,
                             "source": ["alpaca"] * len(ids), "budget": len(ids)})

    meta = {"partition_expr": "method"}
    with dg.build_resources(storage_resources()) as res:
        io = res.io_manager

        def write(method: str, frame: pd.DataFrame) -> None:
            out = dg.build_output_context(asset_key="selected_subsets", partition_key=method,
                                          asset_partitions_def=selection_partitions, definition_metadata=meta)
            io.handle_output(out, frame)
            assert out.get_logged_metadata()["dagster/partition_row_count"].value == len(frame)

        def read(method: str) -> pd.DataFrame:
            return io.load_input(dg.build_input_context(asset_key="selected_subsets", partition_key=method,
                                                        asset_partitions_def=selection_partitions))

        write("ifd", subset("ifd", ["a", "b", "c"]))
        write("ifd@5pct", subset("ifd@5pct", ["d"]))
        assert read("ifd")["id"].tolist() == ["a", "b", "c"] and set(read("ifd")["method"]) == {"ifd"}
        assert read("ifd@5pct")["id"].tolist() == ["d"]
        # re-materialising one partition replaces it and leaves the other alone
        write("ifd", subset("ifd", ["e", "f"]))
        assert read("ifd")["id"].tolist() == ["e", "f"]
        assert read("ifd@5pct")["id"].tolist() == ["d"]
        # an input over several partitions (a non-partitioned consumer): the stored ones, in one frame
        keys = selection_partitions.get_partition_keys()
        both = io.load_input(dg.build_input_context(
            asset_key="selected_subsets", asset_partitions_def=selection_partitions,
            asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1])))
        assert sorted(both["id"]) == ["d", "e", "f"]
        with pytest.raises(LookupError, match="any of the 2 partitions"):
            io.load_input(dg.build_input_context(
                asset_key="selected_subsets", asset_partitions_def=selection_partitions,
                asset_partition_key_range=dg.PartitionKeyRange("perplexity", "prompt_uncertainty")))
        with pytest.raises(LookupError, match="partition 'random'"):
            read("random")
        # one run over two partitions (a single-run backfill): the rows are split on partition_expr
        pair = dg.PartitionKeyRange("ifd", "superfiltering")
        assert selection_partitions.get_partition_keys_in_range(pair) == ["ifd", "superfiltering"]
        io.handle_output(dg.build_output_context(asset_key="selected_subsets", asset_partition_key_range=pair,
                                                 asset_partitions_def=selection_partitions, definition_metadata=meta),
                         pd.concat([subset("ifd", ["g"]), subset("superfiltering", ["h", "i"])]))
        assert read("ifd")["id"].tolist() == ["g"] and read("superfiltering")["id"].tolist() == ["h", "i"]
    keys = bucket_keys(s3)
    assert {f"{PREFIX}/selected_subsets/ifd/table.parquet", f"{PREFIX}/selected_subsets/ifd@5pct/table.parquet"} \
        <= keys


def test_artifact_directories_round_trip(s3, tmp_path):
    import dagster as dg

    from instsel_assets.defs.selection import selection_partitions
    from instsel_assets.defs.storage import fetch_artifact, storage_resources

    src = write_checkpoint_dir(tmp_path / "work" / "checkpoints" / "ifd@5pct")
    original = tree(src)
    manifest = {"path": str(src), "base_model": "packaged:smollm2-135m-instruct", "selection_method": "ifd@5pct",
                "budget": 30, "subset_hash": "0123456789abcdef", "sft_config": {"max_steps": 2, "lora_r": 8},
                "first_loss": 2.5, "last_loss": float("nan"), "scorer_settings": None}
    base = f"{PREFIX}/finetuned_checkpoints/ifd@5pct"
    with dg.build_resources(storage_resources()) as res:
        io = res.artifact_io_manager

        def out(partition="ifd@5pct", key="finetuned_checkpoints"):
            return dg.build_output_context(asset_key=key, partition_key=partition,
                                           asset_partitions_def=selection_partitions)

        def load(partition="ifd@5pct", key="finetuned_checkpoints"):
            return io.load_input(dg.build_input_context(asset_key=key, partition_key=partition,
                                                        asset_partitions_def=selection_partitions))

        ctx = out()
        io.handle_output(ctx, manifest)
        metadata = ctx.get_logged_metadata()
        assert metadata["artifact_files"].value == len(original) == 8
        assert metadata["artifact_bytes"].value == sum(len(b) for b in original.values())
        assert metadata["storage_uri"].value == f"s3://{BUCKET}/{base}/"
        assert bucket_keys(s3, base + "/") == {f"{base}/value.pickle", f"{base}/files.json",
                                               *(f"{base}/files/{rel}" for rel in original)}

        import shutil
        shutil.rmtree(src)  # the consumer runs elsewhere: only the bucket has the files
        loaded = load()
        local = Path(loaded["path"])
        assert local.is_dir() and local.is_relative_to(tmp_path / "home" / "cache" / "s3")
        assert tree(local) == original  # same names, same nesting, same bytes
        assert (local / "head" / "nested" / "EMPTY").stat().st_size == 0
        assert {k: plain(v) for k, v in loaded.items() if k != "path"} == \
               {k: plain(v) for k, v in manifest.items() if k != "path"}
        assert load()["path"] == loaded["path"]  # a second load reuses the complete copy

        # re-materialised with a file gone and one changed: the bucket and the next load follow exactly
        src2 = write_checkpoint_dir(src, seed=1)
        (src2 / "head" / "nested" / "deeper" / "state.bin").unlink()
        io.handle_output(out(), {**manifest, "path": str(src2)})
        assert f"{base}/files/head/nested/deeper/state.bin" not in bucket_keys(s3, base + "/")
        again = load()
        assert again["path"] != loaded["path"] and tree(Path(again["path"])) == tree(src2)
        assert tree(Path(loaded["path"])) == original  # the copy a running step may still read is untouched

        # a file-valued artefact (instruction_gpt4_selector_model: the selector's JSON) and a value without path
        selector = tmp_path / "work" / "selectors" / "instruction_gpt4" / "selector.json"
        selector.parent.mkdir(parents=True)
        selector.write_text('{"weights": [0.1, 0.2], "settings": {"hidden": 32}}')
        sctx = dg.build_output_context(asset_key="instruction_gpt4_selector_model")
        io.handle_output(sctx, {"path": str(selector), "weights": [0.1, 0.2]})
        got = io.load_input(dg.build_input_context(asset_key="instruction_gpt4_selector_model", upstream_output=sctx))
        assert Path(got["path"]).name == "selector.json" and Path(got["path"]).read_bytes() == selector.read_bytes()
        assert got["weights"] == [0.1, 0.2]
        pctx = dg.build_output_context(asset_key="plain_value")
        io.handle_output(pctx, {"n": 1, "items": ("a", "b")})
        assert io.load_input(dg.build_input_context(asset_key="plain_value", upstream_output=pctx)) == \
            {"n": 1, "items": ("a", "b")}

        with pytest.raises(FileNotFoundError, match="does not exist"):
            io.handle_output(out("ifd"), {"path": str(tmp_path / "missing")})
        with pytest.raises(LookupError, match="partition 'random'"):
            load("random")
    assert bucket_keys(s3, f"{PREFIX}/instruction_gpt4_selector_model/") >= {
        f"{PREFIX}/instruction_gpt4_selector_model/files/selector.json"}
    fetched = fetch_artifact("finetuned_checkpoints", "ifd@5pct")
    assert tree(Path(fetched["path"])) == tree(src2)


# ------------------------------------------------------------------------------------------------ real runs
def test_materialize_real_assets_through_s3(s3, tmp_path, caplog, capfd):
    import dagster as dg
    from dagster._serdes import serialize_value

    from instsel_assets import settings
    from instsel_assets.defs.evaluation import evaluation_test_sets, external_answers
    from instsel_assets.defs.resources import default_resources
    from instsel_assets.defs.selection import selection_partitions
    from instsel_assets.defs.sql_models import build_sql_asset
    from instsel_assets.defs.storage import read_table
    from instsel_assets.sql.models import discover_sql_models

    caplog.set_level(logging.DEBUG)  # botocore's and Dagster's debug lines included
    pool = pool_frame()

    @dg.asset(name="instruction_pool")
    def pool_stub() -> pd.DataFrame:
        return pool

    @dg.asset(name="metric_features")
    def features_stub() -> pd.DataFrame:
        return features_frame(pool)

    @dg.asset
    def test_set_counts(evaluation_test_sets: pd.DataFrame) -> pd.DataFrame:
        return evaluation_test_sets.groupby("test_set").size().rename("items").reset_index()

    (length_model,) = [m for m in discover_sql_models(settings.sql_models_dir()) if m.name == "length_indicators"]
    length_indicators = build_sql_asset(length_model)

    resources = default_resources()
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([evaluation_test_sets, external_answers, test_set_counts, pool_stub, features_stub,
                            length_indicators], resources=resources, instance=instance)
    assert first.success

    # a selection partition -> its checkpoint (a directory) -> a reader that gets the downloaded copy
    method = "ifd@5pct"
    workdir = Path(os.environ["INSTSEL_HOME"]) / "checkpoints"

    @dg.asset(name="selected_subsets", partitions_def=selection_partitions, metadata={"partition_expr": "method"})
    def subsets_stub(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"method": context.partition_key, "selection_rank": [0, 1], "id": pool["id"][:2].tolist()})

    @dg.asset(name="finetuned_checkpoints", partitions_def=selection_partitions, io_manager_key="artifact_io_manager")
    def checkpoint_stub(context: dg.AssetExecutionContext, selected_subsets: pd.DataFrame) -> dict:
        out = write_checkpoint_dir(workdir / context.partition_key)
        return {"path": str(out), "selection_method": context.partition_key, "subset_rows": len(selected_subsets)}

    @dg.asset(partitions_def=selection_partitions)
    def checkpoint_files(finetuned_checkpoints: dict) -> pd.DataFrame:
        root = Path(finetuned_checkpoints["path"])
        files = tree(root)
        return pd.DataFrame({"file": list(files), "sha256": [hashlib.sha256(b).hexdigest() for b in files.values()],
                             "root": str(root), "subset_rows": finetuned_checkpoints["subset_rows"]})

    second = dg.materialize([subsets_stub, checkpoint_stub, checkpoint_files], partition_key=method,
                            resources=resources, instance=instance)
    assert second.success

    keys = bucket_keys(s3)
    for asset in ("evaluation_test_sets", "external_answers", "test_set_counts", "instruction_pool",
                  "metric_features", "length_indicators"):
        assert f"{PREFIX}/{asset}/table.parquet" in keys
    for asset in ("selected_subsets", "checkpoint_files"):
        assert f"{PREFIX}/{asset}/{method}/table.parquet" in keys
    made = tree(workdir / method)
    assert {f"{PREFIX}/finetuned_checkpoints/{method}/files/{rel}" for rel in made} | {
        f"{PREFIX}/finetuned_checkpoints/{method}/value.pickle"} <= keys
    assert not (Path(os.environ["INSTSEL_HOME"]) / "instsel.duckdb").exists()  # no table went to DuckDB

    # what the runs stored reads back from the bucket
    test_sets = read_table("evaluation_test_sets")
    assert test_sets.groupby("test_set").size().to_dict() == \
        read_table("test_set_counts").set_index("test_set")["items"].to_dict()
    assert len(test_sets) == sum(first.output_for_node("test_set_counts")["items"])
    lengths = read_table("length_indicators").set_index("id")
    # the SQL model read the conversations structs from S3: the assistant characters of all turns
    expected = {r.id: sum(len(t["content"]) for t in r.conversations if t["role"] == "assistant")
                for r in pool.itertuples()}
    assert lengths["response_chars_all_turns"].to_dict() == expected
    files = read_table("checkpoint_files", method)
    assert dict(zip(files["file"], files["sha256"])) == {k: hashlib.sha256(v).hexdigest() for k, v in made.items()}
    assert not Path(files["root"].iloc[0]).is_relative_to(workdir)  # the reader got the downloaded copy
    assert set(files["subset_rows"]) == {2}

    # no credential in metadata, the event log, the runs' config or anything logged
    records = []
    for result in (first, second):
        records += instance.all_logs(result.run_id)
        run = instance.get_run_by_id(result.run_id)
        assert SECRET_KEY not in serialize_value(run.run_config)
    materialisations = [r for r in records if r.dagster_event is not None and r.dagster_event.is_step_materialization]
    assert len(materialisations) == 9
    for record in materialisations:
        metadata = serialize_value(record.dagster_event.event_specific_data.materialization.metadata)
        assert SECRET_KEY not in metadata and ACCESS_KEY_ID not in metadata and SESSION_TOKEN not in metadata
        assert "storage_uri" in metadata
    event_log = "\n".join(serialize_value(r) for r in records)
    assert f"s3://{BUCKET}/{PREFIX}/" in event_log
    for sentinel in (SECRET_KEY, ACCESS_KEY_ID, SESSION_TOKEN):
        assert sentinel not in event_log
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "s3://" in logged  # the IO managers did log where things went
    assert "Found credentials in environment variables" in logged  # botocore's DEBUG lines were captured too
    # (at DEBUG botocore itself prints the signed headers, the access key id and a session token among them; never
    # the secret key)
    assert SECRET_KEY not in logged


def test_landing_shards_from_an_s3_prefix(s3, monkeypatch):
    """Pool shards landing under an S3 prefix: the sensor lists them (ETags), adds the partitions, and the shard
    tables are written to and read back from the bucket; a changed object is ingested again, a bad name never."""
    import json

    import dagster as dg

    from instsel_assets.defs.storage import read_table
    from test_pool_shards import Harness, alpaca_rows

    monkeypatch.setenv("INSTSEL_LANDING_S3_PREFIX", "landing")
    rows = alpaca_rows()
    s3.put_object(Bucket=BUCKET, Key="landing/a.jsonl", Body="\n".join(json.dumps(r) for r in rows[:3]) + "\n{bad\n")
    s3.put_object(Bucket=BUCKET, Key="landing/b.json", Body=json.dumps(rows[3:5]))
    s3.put_object(Bucket=BUCKET, Key="landing/bad name.json", Body="[]")
    s3.put_object(Bucket=BUCKET, Key="landing/nested/c.json", Body="[]")  # not directly under the prefix
    with dg.instance_for_test() as instance:
        h = Harness(instance)
        tick = h.sensor_tick()
        assert [r.partition_key for r in tick.run_requests] == ["a.jsonl", "b.json"]
        a = read_table("pool_shard", "a.jsonl")
        assert len(a) == 3 and set(a["shard"]) == {"a.jsonl"}
        assert len(read_table("pool_shard_quarantine", "a.jsonl")) == 1
        assert h.latest("pool_shard", "a.jsonl")["location"] == f"s3://{BUCKET}/landing/a.jsonl"
        assert isinstance(h.sensor_tick(), dg.SkipReason)
        s3.put_object(Bucket=BUCKET, Key="landing/b.json", Body=json.dumps(rows[3:6]))
        assert [r.partition_key for r in h.sensor_tick().run_requests] == ["b.json"]
        assert len(read_table("pool_shard", "b.json")) == 3
        assert sorted(instance.get_dynamic_partitions("pool_shards")) == ["a.jsonl", "b.json"]
