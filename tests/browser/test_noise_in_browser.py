"""The label-noise review in a real browser: a flag reviewed and relabelled, the cleaned version
made, and a retrain launched on it with the config of the run it came from."""

import pytest

from lib import db, relabel
from lib.training import jobs
from lib.training.config import build_config
from lib.workspace import resolve_workspace
from tests.browser.conftest import AppServer, _free_port, wait_for_app
from tests.browser.ui import goto, idle, select
from tests.test_noise import finished_job

pytestmark = pytest.mark.browser


def test_review_a_flag_relabel_it_and_launch_the_retrain(page, tmp_path, tiny_model):
    ws = resolve_workspace(tmp_path / "ws")
    with db.connect(ws) as con:  # no demo dataset needed
        con.execute("INSERT OR REPLACE INTO settings VALUES ('demo_loaded', 'skipped')")
    job, planted = finished_job(ws, tmp_path)
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "epochs": 1, "learning_rate": 1e-3, "cpu_threads": 1})
    source = jobs.create_run(ws, "demo12", cfg, enqueue=False).run_id
    with db.connect(ws) as con:
        con.execute("UPDATE runs SET status = 'finished' WHERE run_id = ?", [source])
    server = AppServer(ws.root, _free_port()).start()
    try:
        page.goto(server.url)
        wait_for_app(page)
        goto(page, "Noise", "Label noise")
        key = f"{planted.query_id} | {planted.doc_id}"
        assert select(page, "Pick flagged pairs (query | doc)", 1) == key  # after 'Select all'
        field = page.get_by_label("New label", exact=True)
        field.fill("3")
        field.press("Enter")
        idle(page)
        page.get_by_role("button", name="Relabel", exact=True).click()
        page.get_by_text("1 pairs: relabel.").first.wait_for()
        page.get_by_role("button", name="Create cleaned version").click()
        page.get_by_text("1 relabelled, 0 dropped").first.wait_for()
        log = relabel.change_log(ws, "demo12-relabelled")
        assert log[["doc_id", "action", "old_label", "new_label"]].values.tolist() == [
            [planted.doc_id, "relabel", 0, 3]]
        page.get_by_role("button", name=f"Retrain on demo12-relabelled with the config of "
                                        f"{source}").click()
        page.get_by_text("queued on demo12-relabelled").first.wait_for()
        runs = jobs.list_runs(ws)
        new = runs[runs["dataset"] == "demo12-relabelled"]["run_id"].tolist()
        assert len(new) == 1
        jobs.stop_run(ws, new[0], timeout_s=10)
    finally:
        server.stop()
