"""The password gate holds for a page URL opened first on a fresh server (a bookmark, a reload
after a restart): Streamlit would otherwise run pages/<page>.py without streamlit_app.py. Before
sign-in nothing but the sign-in form shows (no page list); after it, the URL's page and its
query (a report deep link) are where the user lands."""

import json

import pytest

from lib import db
from lib.cli import main
from lib.evaluation import EvaluationSpec, evaluate
from lib.ingest import ingest_file
from lib.workspace import resolve_workspace
from tests.browser.conftest import AppServer, _free_port
from tests.browser.ui import idle, select_value

pytestmark = pytest.mark.browser
PASSWORD = "team-secret-1"


def _gated_workspace(ws, monkeypatch) -> None:
    monkeypatch.setenv("TEAMPW", PASSWORD)
    assert main(["set-password", "--from-env", "TEAMPW", "--workspace", str(ws)]) == 0


def _only_the_sign_in_form(page) -> None:
    page.get_by_label("Password", exact=True).wait_for()
    page.wait_for_timeout(1500)
    assert page.locator("[data-testid='stSidebarNav']").count() == 0
    assert page.locator("[data-testid='stSidebar']").count() == 0
    for name in ("Home", "Data", "Checks", "Train", "Review", "Evaluate", "Playground",
                 "Experiments"):
        assert page.get_by_role("link", name=name).count() == 0, name
    assert page.locator("[data-testid='stMain'] h1").all_inner_texts() == ["Reranker Studio"]


def _sign_in(page) -> None:
    page.get_by_label("Password", exact=True).fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong password.").wait_for()
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_direct_page_url_on_a_fresh_server_meets_the_password_gate(page, tmp_path,
                                                                   monkeypatch):
    ws = tmp_path / "ws"
    _gated_workspace(ws, monkeypatch)
    server = AppServer(ws, _free_port()).start()
    try:
        page.goto(server.url + "/data")  # the very first session of this server
        _only_the_sign_in_form(page)
        assert page.get_by_role("heading", name="Data", exact=True).count() == 0
        assert page.get_by_text("Add a dataset").count() == 0
        _sign_in(page)
        page.get_by_role("heading", name="Data", exact=True).wait_for()  # the page asked for
        page.get_by_text("Add a dataset").wait_for()
        page.locator("[data-testid='stSidebarNav']").wait_for()  # the pages, once signed in
    finally:
        server.stop()


def _evaluation(ws, tmp_path) -> str:
    w = resolve_workspace(ws)
    with db.connect(w) as con:  # no demo dataset needed
        con.execute("INSERT OR REPLACE INTO settings VALUES ('demo_loaded', 'skipped')")
    rows = [{"query_id": f"q{q}", "doc_id": f"q{q}d{d}", "query": f"wing lift {q}",
             "document": f"lift of a wing {d}" if d == 0 else f"heat transfer {d}",
             "label": int(d == 0)} for q in range(4) for d in range(3)]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = ingest_file(w, src, "pairs").dataset_id
    run = w.root / "imports" / "prod.jsonl"
    run.parent.mkdir()
    run.write_text("".join(json.dumps({"query_id": r["query_id"], "doc_id": r["doc_id"],
                                       "score": float(r["doc_id"][-1])}) + "\n" for r in rows),
                   encoding="utf-8")
    spec = EvaluationSpec(dataset=ds, model="bm25", baselines=[f"run:{run}"], split="all",
                          metrics=["ndcg@10"])
    first = evaluate(w, spec).eval_id
    evaluate(w, spec)  # a newer one: the page would show it unless the link is kept
    return first


def test_report_deep_link_survives_sign_in(browser, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    _gated_workspace(ws, monkeypatch)
    eval_id = _evaluation(ws, tmp_path)
    server = AppServer(ws, _free_port()).start()
    try:
        for attempt in ("fresh server", "server already in use"):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/evaluate?report={eval_id}")
            page.get_by_label("Password", exact=True).wait_for()
            _sign_in(page)
            page.get_by_role("heading", name="Evaluate", exact=True).wait_for()
            idle(page)
            assert page.url.split("?")[0].endswith("/evaluate"), (attempt, page.url)
            assert f"report={eval_id}" in page.url, (attempt, page.url)
            assert select_value(page, "Show evaluation") == eval_id, attempt
            context.close()
    finally:
        server.stop()
