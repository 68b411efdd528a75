"""The whole journey in a real browser: upload -> report -> leak -> re-split -> train -> evaluate
-> drill-down -> HTML report. A slice of the Cranfield demo with planted faults, the tiny model.

Each step saves a screenshot under tests/artifacts/journey/ (the README's walkthrough images come
from here: `make screenshots`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser import journey_data
from tests.browser.conftest import ARTIFACTS, wait_for_app
from tests.browser.ui import fill, goto, idle, one_thread, select, select_value

pytestmark = pytest.mark.browser
SHOTS = ARTIFACTS / "journey"


def _shot(page, name: str, anchor=None) -> None:
    """A tall window, scrolled to `anchor`: the README shows what matters on each page."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1500})
    idle(page)
    if anchor is not None:
        # .first: while a page reruns, Streamlit can briefly hold the old and the new copy of an
        # element (CI once saw two "Runs" headings); either one scrolls to the same place.
        anchor.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)  # let charts finish drawing
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_upload_check_resplit_train_evaluate_report(app_server, page, tmp_path, tiny_model):
    upload = tmp_path / "cranfield-slice.jsonl"
    expected = journey_data.build(upload)

    page.goto(app_server.url)
    wait_for_app(page)
    idle(page)
    _shot(page, "1-home")

    # Data: upload with bad lines -> validation report naming the lines
    goto(page, "Data")
    page.get_by_test_id("stTabs").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(upload))
    page.get_by_role("button", name="Ingest and split").click()
    page.get_by_text("Validation report: cranfield-slice").first.wait_for()
    page.get_by_text(re.compile(
        rf"{expected['lines']} lines = {expected['accepted']} accepted \+ 0 exact duplicates "
        rf"\(stored once\) \+ {expected['rejected']} rejected")).first.wait_for()
    errors = page.locator("[data-testid='stDataFrame']").first
    errors.wait_for()
    page.get_by_text(f"Download the {expected['rejected']} rejected lines").first.wait_for()
    idle(page)
    _shot(page, "2-data")

    # Checks: the planted near-duplicate queries leak into validation; re-split fixes it
    goto(page, "Checks")
    page.get_by_role("button", name="Run checks").click()
    leak = page.get_by_text(re.compile(r"[1-9]\d* of \d+ validation queries .* have a twin in "
                                       r"the training data")).first
    leak.wait_for(timeout=180_000)
    page.get_by_text("near_duplicate").first.wait_for()
    idle(page)
    _shot(page, "3-checks-leak", page.get_by_role("heading", name="Leakage"))
    page.get_by_role("button", name="Re-split keeping near-duplicate groups together").click()
    page.get_by_text(re.compile(r"New active split sp-\w+ \(grouped\S*\); the old split "
                                r"sp-\w+ is kept\. Leakage findings now: 0\.")).first.wait_for(
        timeout=180_000)
    page.get_by_text(re.compile(r"No query in validation \(\d+ queries\) matches")).first.wait_for()

    # Train: the tiny model on the new split; watch it to the end
    goto(page, "Train")
    select(page, "Dataset", re.compile(r"^cranfield-slice"))
    model = shutil.copytree(tiny_model, app_server.workspace.resolve() / "imports" / "tiny-ce")
    fill(page, "Base model", str(model))
    fill(page, "Max length (tokens)", "64")
    one_thread(page)
    launch = page.get_by_role("button", name="Launch")
    launch.click()
    page.get_by_text(re.compile(r"Run run-[\w-]+ queued: \d+ training pairs")).first.wait_for()
    page.get_by_text(re.compile(r"step \d+/\d+ · epoch")).first.wait_for(timeout=180_000)
    page.get_by_role("button", name="Download the model (zip)").first.wait_for(timeout=300_000)
    idle(page)
    done = page.get_by_text(re.compile(r"^run-[\w-]+: finished · dataset cranfield-slice")).first
    done.wait_for()
    run_id = re.match(r"run-[\w-]+", done.inner_text()).group(0)
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 2  # loss and validation
    _shot(page, "4-train", page.get_by_role("heading", name="Runs"))

    # Evaluate: the checkpoint against its own base (prefilled) and BM25
    goto(page, "Evaluate")
    select(page, "Dataset", re.compile(r"^cranfield-slice"))
    assert f"checkpoint of run {run_id}" in select_value(page, "Model under test")
    assert page.get_by_label("More baselines (hub ids or paths, comma-separated)") \
        .input_value() == str(model)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_role("heading", name="Per query").first.wait_for(timeout=300_000)
    idle(page)
    heading = page.get_by_role("heading", name=re.compile(rf"checkpoint:{run_id} vs bm25, ")).first
    heading.wait_for()
    caption = page.get_by_text(re.compile(r"Dataset cranfield-slice, split validation")).first
    assert re.search(r"(\d+) queries evaluated", caption.inner_text())
    page.get_by_text("Drill-down: both rankings side by side").first.wait_for()
    second = select(page, "Query (most improved first)", 1)  # the drill-down of another query
    qid, text = second.split(" ", 1)[0], second.split(": ", 1)[1][:40]
    page.get_by_text(re.compile(re.escape(text) + r".*NDCG@10 of bm25 [\d.]+ (->|→) "
                                r"checkpoint:\S+ [\d.]+\. Rank change")).first.wait_for()
    assert qid in select_value(page, "Query (most improved first)")
    _shot(page, "5-evaluate", heading)

    # The HTML report, as a stakeholder gets it
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download HTML").click()
    html = Path(dl.value.path()).read_text(encoding="utf-8")
    assert f"checkpoint:{run_id}" in html and "bm25" in html and "NDCG@10" in html
    assert "cranfield-slice" in html and "validation" in html
    assert re.search(r"\d+ queries", html)
    assert "<script src=" not in html  # opens offline

    # Playground and Experiments render on what the journey made
    goto(page, "Playground")
    page.get_by_role("button", name="Rank").click()
    page.get_by_text(re.compile(rf"Ranked by checkpoint:{run_id}")).first.wait_for(timeout=120_000)
    _shot(page, "6-playground")
    goto(page, "Experiments")
    # the runs table's own cells are hidden (a canvas grid): wait for a visible mention
    page.get_by_text(run_id).filter(visible=True).first.wait_for()
    _shot(page, "7-experiments")
    assert not page.locator("[data-testid='stException']").count()
