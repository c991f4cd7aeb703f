"""The Dagster UI of the project in a real browser: ``dagster dev -w workspace.yaml``, driven by headless Chromium.

Only assets that need no model run, so the test stays short: ``evaluation_test_sets`` (reads ``data/eval``) and
the raw datasets + ``instruction_pool`` / ``pool_quarantine`` of a small data root (``test_chain.small_data_root``:
the first 14 rows of every bundled source). Everything lives in ``tmp_path`` (``DAGSTER_HOME``, ``INSTSEL_HOME``,
the data root); the converted models are shared with the project (``INSTSEL_MODEL_CACHE``) as in test_chain.

1. ``dagster dev`` starts (``ui_server.DagsterDev``); its start-up time (spawn to the code location ``instsel``
   loaded) is printed and written to ``<tmp_path>/ui/startup.json``.
2. The browser opens the global asset graph (``/asset-groups``) and the catalog (``/assets``), then the page of
   ``evaluation_test_sets``, clicks its "Materialize" button, follows the "Launched run" toast's "View" link to
   the run page and waits, by GraphQL, for the run to succeed and, in the page, for "Success".
3. The asset's page shows the materialisation's metadata (row count 1,915, the ``items`` per test set), its
   checks and, on the Lineage tab, its downstream assets.
4. By GraphQL only: ``launchRun`` of ``__ASSET_JOB`` for ``instruction_pool`` with its multi-asset sibling
   ``pool_quarantine`` and its raw upstreams; the run's materialisation metadata (read = kept + duplicates +
   quarantined, per-source row counts) and the asset check results are read back. Then the browser shows the
   same counts on ``instruction_pool``'s page and its raw upstreams and downstream assets on the Lineage tab.

Screenshots go to ``<tmp_path>/screenshots`` and are copied to ``.instsel/ui-screenshots/`` of the project (git-
ignored) when ``.instsel`` exists. Chromium: ``$INSTSEL_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the
PATH, else Playwright's own download; the test is skipped when there is none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from instsel_assets import settings
from test_chain import ROWS_PER_SOURCE, small_data_root
from ui_server import DagsterDev, DagsterDevError, write_instance_config

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration

SCREENSHOT_COPY_DIR = settings.PROJECT_ROOT / ".instsel" / "ui-screenshots"
UI_TIMEOUT_MS = 60_000  # one page element to appear (the first page load compiles nothing, but 2 shared cores)
RUN_TIMEOUT = 300  # seconds for a model-free run (measured: ~10-20 s)
TEST_SET_ROWS = 1915  # 80 + 180 + 218 + 252 + 300 + 80 + 805 items

META = """__typename label
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }"""

RUN_MATERIALIZATIONS = """
query RunMaterializations($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status assetMaterializations { assetKey { path } metadataEntries { %s } } }
  }
}
""" % META

ASSET_CHECKS = """
query AssetChecks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name blocking
            executionForLatestMaterialization { runId status evaluation { success metadataEntries { %s } } }
          }
        }
      }
    }
  }
}
""" % META

ASSET_NODES = """
{
  assetNodes { assetKey { path } opNames dependencyKeys { path } }
}
"""


# ------------------------------------------------------------------------------------------------ helpers
def chromium_executable() -> str | None:
    """A system Chromium (``$INSTSEL_CHROMIUM``, ``chromium`` / ``chromium-browser`` on the PATH), or None for
    Playwright's own."""
    candidates = [os.environ.get("INSTSEL_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                  "/usr/bin/chromium"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def metadata(entries: list[dict]) -> dict:
    """GraphQL metadata entries as ``{label: value}`` (JSON entries parsed)."""
    out = {}
    for e in entries:
        if "jsonString" in e:
            out[e["label"]] = json.loads(e["jsonString"])
        else:
            out[e["label"]] = next((e[k] for k in ("intValue", "floatValue", "text", "mdStr") if k in e), None)
    return out


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of a Markdown table's rows (header first, the ``---`` line left out)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.strip().startswith("|")]
    return [r for r in rows if not all(c and set(c) <= set("-: ") for c in r)]


class Screens:
    """Numbered full-page screenshots into ``directory`` (copied to ``copy_to`` when given); ``taken`` lists them."""

    def __init__(self, directory: Path, copy_to: Path | None) -> None:
        self.directory = directory
        self.copy_to = copy_to
        self.taken: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            for old in copy_to.glob("*.png"):  # only this test's latest screenshots are kept there
                old.unlink()

    def shoot(self, page, name: str, full_page: bool = True) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 5000, f"screenshot {path} is suspiciously small"
        if self.copy_to is not None:
            shutil.copy2(path, self.copy_to / path.name)
        self.taken.append(path)
        return path


def wait_graph_settled(page, timeout: float = 20.0) -> None:
    """Wait until the lineage graph's pan / zoom has stopped moving (its transform unchanged for ~1 s), so that the
    screenshot shows the graph where it settles; the assertions on the nodes' names do not need it."""
    read = "() => Array.from(document.querySelectorAll('[style*=\"matrix(\"]')).map(e => e.style.transform).join('|')"
    deadline = time.monotonic() + timeout
    last, stable = None, 0
    while time.monotonic() < deadline:
        current = page.evaluate(read)
        stable = stable + 1 if current and current == last else 0
        if stable >= 4:
            return
        last = current
        page.wait_for_timeout(250)


def forget_graph_zoom(page) -> None:
    """The lineage graph opens at the zoom the last lineage graph had (``localStorage.lineageGraphZoomLevel``) and
    renders only the nodes in view; without that key it zooms to fit the whole graph."""
    page.evaluate("() => window.localStorage.removeItem('lineageGraphZoomLevel')")


def metadata_row(page, key: str):
    """The row of the asset page's metadata table whose key cell is ``key``."""
    return page.locator("tr").filter(has=page.locator("td:first-child").get_by_text(key, exact=True)).first


def materialize_button(page):
    # The button's accessible name is "materialization Materialize" (its icon has aria-label="materialization");
    # anchoring at the end keeps "Materialize all" / "Materialize selected" out.
    return page.get_by_role("button", name=re.compile(r"(^|\s)Materialize$"))


def open_asset(page, base_url: str, key: str, view: str | None = None) -> None:
    page.goto(f"{base_url}/assets/{key}" + (f"?view={view}" if view else ""), wait_until="domcontentloaded")
    # the asset's tabs (Overview, Events, Checks, Lineage) are there once its definition has loaded
    page.get_by_role("tab", name="Overview").wait_for(timeout=UI_TIMEOUT_MS)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def dagster_ui(tmp_path):
    data_root = small_data_root(tmp_path)
    dagster_home = tmp_path / "dagster_home"
    write_instance_config(dagster_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTSEL_")}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "INSTSEL_HOME": str(tmp_path / "home"),
        "INSTSEL_DATA_DIR": str(data_root),
        # Shared with the demo and test_chain: the converted models live there once per machine.
        "INSTSEL_MODEL_CACHE": str(settings.PROJECT_ROOT / ".instsel" / "models"),
    })
    server = DagsterDev(tmp_path / "ui" / "dagster_dev.log", env=env, workspace="workspace.yaml")
    with server:
        startup = {"startup_seconds": round(server.startup_seconds, 2),
                   "server_info_seconds": round(server.server_info_seconds, 2),
                   "dagster_version": server.server_info.get("dagster_version"),
                   "port": server.port, "workspace": "workspace.yaml", "location": server.location}
        (tmp_path / "ui" / "startup.json").write_text(json.dumps(startup, indent=2) + "\n")
        print(f"\n[ui] dagster dev answered /server_info after {server.server_info_seconds:.1f} s; code location "
              f"'instsel' loaded after {server.startup_seconds:.1f} s (log: {server.log_path})", flush=True)
        yield server
    print(f"\n[ui] dagster dev stopped in {server.stop_seconds:.1f} s", flush=True)


@pytest.fixture
def browser_page(tmp_path):
    executable = chromium_executable()
    with sync_api.sync_playwright() as p:
        if executable is None and not Path(p.chromium.executable_path).exists():
            pytest.skip("no Chromium: set INSTSEL_CHROMIUM, install chromium, or run `playwright install chromium`")
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            # The UI greets a first visitor on localhost with a "Join the Dagster community" dialog (after ~1 s,
            # over whatever is being clicked); "Skip" stores this flag, so the test starts as a returning user.
            context.add_init_script("window.localStorage.setItem('communityNux', '1')")
            context.set_default_timeout(UI_TIMEOUT_MS)
            sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)
            yield context.new_page()
        finally:
            sync_api.expect.set_options(timeout=5_000)  # Playwright's default, for other tests of the session
            browser.close()


# ------------------------------------------------------------------------------------------------ the test
def test_dagster_ui_in_a_browser(tmp_path, dagster_ui, browser_page):
    with dagster_ui.show_log_on_failure():
        try:
            check_ui(tmp_path, dagster_ui, browser_page)
        except BaseException:
            failure = tmp_path / "screenshots" / "failure.png"
            with contextlib.suppress(Exception):
                failure.parent.mkdir(parents=True, exist_ok=True)
                browser_page.screenshot(path=str(failure), full_page=True)
                print(f"\n[ui] the page at the failure: {browser_page.url} (screenshot {failure})", file=sys.stderr)
            raise


def check_ui(tmp_path: Path, server: DagsterDev, page) -> None:
    base = server.url
    copy_to = SCREENSHOT_COPY_DIR if SCREENSHOT_COPY_DIR.parent.is_dir() else None
    screens = Screens(tmp_path / "screenshots", copy_to)
    expect = sync_api.expect
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"[ui] {time.monotonic() - started:6.1f}s  {message}", flush=True)

    try:
        # The server-side flag of the same dialog (it is not shown once the instance has it).
        server.graphql("mutation { setNuxSeen }")
    except DagsterDevError:
        pass

    from instsel_assets.defs.evaluation import ALL_TEST_SETS
    from instsel_assets.evaluation.test_sets import TEST_SETS

    # --- 2. the asset graph and the catalog ----------------------------------------------------------------------
    step("asset graph")
    page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in ("raw", "pool", "evaluation", "scores"):  # the asset groups, in the sidebar and the graph
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    wait_graph_settled(page)
    screens.shoot(page, "asset_graph", full_page=False)

    page.goto(f"{base}/assets", wait_until="domcontentloaded")
    expect(page.get_by_role("link", name="evaluation_test_sets").first).to_be_visible()
    expect(page.get_by_role("link", name="instruction_pool").first).to_be_visible()
    screens.shoot(page, "asset_catalog", full_page=False)

    # --- 2. materialise evaluation_test_sets with the UI's button -----------------------------------------------
    step("evaluation_test_sets: Materialize")
    open_asset(page, base, "evaluation_test_sets")
    expect(page.get_by_text("Never materialized").first).to_be_visible()
    button = materialize_button(page)
    expect(button).to_have_count(1)
    expect(button).to_be_enabled()
    button.click()
    # The toast "Launched run <8 hex> [View]" stays ~4 s; its "View" is a link to /runs/<run id>.
    toast = (page.get_by_role("region", name=re.compile(r"^Notifications")).get_by_role("listitem")
             .filter(has_text=re.compile(r"Launched run [0-9a-f]{8}")))
    expect(toast).to_be_visible()
    short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    view = toast.get_by_role("link", name="View", exact=True)
    href = view.get_attribute("href")
    assert href and re.fullmatch(rf"/runs/{short_id}[0-9a-f-]{{28}}", href), href
    try:
        view.click(timeout=3000)
    except sync_api.TimeoutError:  # the toast went away first: follow its link by hand
        page.goto(f"{base}{href}", wait_until="domcontentloaded")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    assert href == f"/runs/{run_id}", (href, page.url)
    page.mouse.move(5, 5)  # off the toast: it stays while hovered, over the run page's events
    expect(toast).to_be_hidden()
    step(f"run {run_id} launched from the UI; waiting for it")
    run = server.wait_for_run(run_id, timeout=RUN_TIMEOUT)
    step(f"run {run_id}: {run['status']} in {run['endTime'] - run['startTime']:.1f} s")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("evaluation_test_sets").first).to_be_visible()
    screens.shoot(page, "run_evaluation_test_sets", full_page=False)

    # --- 3. its metadata, checks and lineage in the asset's page ----------------------------------------------------
    step("evaluation_test_sets: metadata, checks, lineage")
    open_asset(page, base, "evaluation_test_sets")
    items = metadata_row(page, "items")
    expect(items).to_be_visible()
    expected_items = {name: TEST_SETS[name].n_items for name in ALL_TEST_SETS}
    assert sum(expected_items.values()) == TEST_SET_ROWS
    items_text = items.inner_text()
    for name, n in expected_items.items():
        assert re.search(rf'"{name}":\s*{n}\b', items_text), f"items metadata lacks {name}: {n}:\n{items_text}"
    row_count = page.get_by_text("Row count", exact=True).locator("..")
    expect(row_count).to_contain_text(re.compile(r"(?<![\d,])1,?915(?![\d,])"))  # "Row count" + "1,915"
    expect(metadata_row(page, "with_reference")).to_be_visible()
    screens.shoot(page, "evaluation_test_sets_metadata")

    page.get_by_role("tab", name="Checks").click()
    for check in ("declared_counts", "great_expectations_suite"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(2)
    screens.shoot(page, "evaluation_test_sets_checks", full_page=False)

    forget_graph_zoom(page)
    page.get_by_role("tab", name="Lineage").click()
    page.wait_for_url(re.compile(r"view=lineage"))
    for downstream in ("external_answers", "evaluation_reports", "generated_answers", "pairwise_judgements"):
        expect(page.get_by_text(downstream, exact=True).first).to_be_visible()
    expect(page.get_by_text("evaluation_test_sets", exact=True).first).to_be_visible()
    wait_graph_settled(page)
    screens.shoot(page, "evaluation_test_sets_lineage", full_page=False)

    # --- 4. instruction_pool by GraphQL: launch, wait, read the metadata and the checks back ------------------------
    step("instruction_pool: launchRun by GraphQL")
    nodes = {tuple(n["assetKey"]["path"]): n for n in server.graphql(ASSET_NODES)["assetNodes"]}
    pool = nodes[("instruction_pool",)]
    raw_keys = [tuple(k["path"]) for k in pool["dependencyKeys"]]
    assert raw_keys and all(k[0] == "raw_datasets" for k in raw_keys), raw_keys
    # instruction_pool is one output of a multi-asset that cannot be subset: select its siblings too (the UI does).
    siblings = [k for k, n in nodes.items() if set(n["opNames"]) & set(pool["opNames"])]
    assert set(siblings) == {("instruction_pool",), ("pool_quarantine",)}, siblings
    pool_run_id = server.launch_assets([*raw_keys, *siblings], tags={"instsel/test": "ui-graphql"})
    pool_run = server.wait_for_run(pool_run_id, timeout=RUN_TIMEOUT)
    step(f"run {pool_run_id}: {pool_run['status']} in {pool_run['endTime'] - pool_run['startTime']:.1f} s")

    materialized = {tuple(m["assetKey"]["path"]): metadata(m["metadataEntries"]) for m in
                    server.graphql(RUN_MATERIALIZATIONS, {"runId": pool_run_id})["runOrError"]["assetMaterializations"]}
    assert set(materialized) == {*raw_keys, *siblings}, sorted(materialized)
    raw_rows = {k[-1]: materialized[k]["dagster/row_count"] for k in raw_keys}
    assert raw_rows == {k[-1]: ROWS_PER_SOURCE for k in raw_keys}, raw_rows
    pool_meta = materialized[("instruction_pool",)]
    read, kept = pool_meta["read"], pool_meta["kept"]
    quarantined, duplicates = pool_meta["quarantined"], pool_meta["duplicates"]
    assert read == sum(raw_rows.values()) == kept + duplicates + quarantined, pool_meta
    assert pool_meta["dagster/row_count"] == kept
    assert materialized[("pool_quarantine",)]["dagster/row_count"] == duplicates + quarantined
    header, *per_source_rows = markdown_rows(pool_meta["counts_per_source"])
    assert header == ["source", "read", "kept", "duplicates", "quarantined"], header
    assert {r[0]: int(r[1]) for r in per_source_rows} == raw_rows, per_source_rows
    assert sum(int(r[2]) for r in per_source_rows) == kept, per_source_rows

    checks = {}
    for key in siblings:
        result = server.graphql(ASSET_CHECKS, {"key": {"path": list(key)}})["assetNodeOrError"]["assetChecksOrError"]
        assert result["__typename"] == "AssetChecks", result
        checks.update({f"{key[-1]}:{c['name']}": c for c in result["checks"]})
    assert set(checks) == {"instruction_pool:accounting", "instruction_pool:unique_ids",
                           "instruction_pool:great_expectations_suite", "pool_quarantine:reasons_present",
                           "pool_quarantine:great_expectations_suite"}, sorted(checks)
    for name, check in checks.items():
        execution = check["executionForLatestMaterialization"]
        assert execution and execution["runId"] == pool_run_id, f"{name}: {execution}"
        assert execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"], f"{name}: {execution}"
    accounting = metadata(checks["instruction_pool:accounting"]["executionForLatestMaterialization"]["evaluation"]
                          ["metadataEntries"])
    assert accounting == {"rows_read": read, "violations": []}, accounting

    # --- 3. the same numbers and the lineage on instruction_pool's page ----------------------------------------------
    step("instruction_pool: metadata and lineage in the browser")
    open_asset(page, base, "instruction_pool")
    for key, value in (("read", read), ("kept", kept), ("duplicates", duplicates), ("quarantined", quarantined)):
        expect(metadata_row(page, key).locator("td").last).to_have_text(re.compile(rf"^\s*{value}\s*$"))
    per_source = metadata_row(page, "counts_per_source")  # the Markdown table, rendered as a table
    for row in [header, *per_source_rows]:
        expect(per_source.get_by_role("row", name=" ".join(row), exact=True)).to_be_visible()
    expect(page.get_by_text("Row count", exact=True).locator("..")).to_contain_text(
        re.compile(rf"(?<![\d,]){kept:,}(?![\d,])"))
    # the Overview's lineage section links every upstream asset (and the first 20 downstream ones)
    for key in [*raw_keys, ("metric_features",), ("duplicate_indicators",), ("ifd_scores",)]:
        expect(page.locator(f"a[href='/assets/{'/'.join(key)}']").first).to_be_visible()
    screens.shoot(page, "instruction_pool_metadata")

    # Nearest neighbours: the raw sources upstream, every score, indicator and selection asset downstream.
    forget_graph_zoom(page)
    page.get_by_role("tab", name="Lineage").click()
    page.wait_for_url(re.compile(r"view=lineage"))
    for name in [key[-1] for key in raw_keys] + ["instruction_pool", "metric_features", "ifd_scores",
                                                 "length_indicators", "selected_subsets"]:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    wait_graph_settled(page)
    screens.shoot(page, "instruction_pool_lineage", full_page=False)

    # Upstream only: the three raw sources and nothing downstream.
    forget_graph_zoom(page)
    page.goto(f"{base}/assets/instruction_pool?view=lineage&lineageScope=upstream", wait_until="domcontentloaded")
    expect(page.get_by_role("button", name=re.compile(r"Upstream$"))).to_be_visible()
    for key in raw_keys:
        expect(page.get_by_text(key[-1], exact=True).first).to_be_visible()
    expect(page.get_by_text("instruction_pool", exact=True).first).to_be_visible()
    expect(page.get_by_text("metric_features", exact=True)).to_have_count(0)
    wait_graph_settled(page)
    screens.shoot(page, "instruction_pool_lineage_upstream", full_page=False)

    step(f"{len(screens.taken)} screenshots in {screens.directory}" + (f" and {copy_to}" if copy_to else ""))
    if copy_to is not None:
        shutil.copy2(tmp_path / "ui" / "startup.json", copy_to / "startup.json")
    for path in screens.taken:
        print(f"[ui]   {path.name}", flush=True)
