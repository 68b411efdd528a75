"""User text never renders as markdown: a dataset whose queries and documents carry an image
pointing at a tracking server, emphasis, headings and LaTeX is shown on every page (Evaluate
drill-down and Playground included) without one request to that server and without one element
made from it; the text itself is shown literally."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib import db, split
from lib.checks import run_checks
from lib.evaluation import EvaluationSpec, evaluate
from lib.ingest import ingest_file
from tests.browser.conftest import AppServer, _free_port, wait_for_app
from tests.browser.ui import goto, idle, select

pytestmark = pytest.mark.browser


class _Tracker(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def tracker():
    _Tracker.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), _Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _nasty(port: int, tag: str) -> str:
    return (f"![trk](http://127.0.0.1:{port}/{tag}.png) **boldmark** _emmark_ "
            f"$x^2$ :red[redmark] <b>rawmark</b> [lnk](http://127.0.0.1:{port}/{tag}-link)"
            f"\n# headmark wing lift")


def _workspace(ws, port: int, tmp_path) -> str:
    from lib.workspace import resolve_workspace

    w = resolve_workspace(ws)
    with db.connect(w) as con:  # no demo dataset: every page shows the nasty one
        con.execute("INSERT OR REPLACE INTO settings VALUES ('demo_loaded', 'skipped')")
    rows = []
    for q in range(6):
        for d in range(4):
            rows.append({"query_id": f"q{q}", "doc_id": f"q{q}d{d}",
                         "query": _nasty(port, f"q{q}") + f" number {q}",
                         "document": _nasty(port, f"q{q}d{d}") + f" wing lift doc {d}",
                         "label": 1 if d == 0 else 0})
    src = tmp_path / "nasty.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = ingest_file(w, src, "nasty_x_").dataset_id
    split.make_split(w, ds, 0.3, 0.3, 1)
    run = w.root / "imports" / "prod.jsonl"
    run.parent.mkdir()
    run.write_text("".join(json.dumps({"query_id": r["query_id"], "doc_id": r["doc_id"],
                                       "score": float(len(r["doc_id"]) + (r["doc_id"] < "q3"))})
                           + "\n" for r in rows), encoding="utf-8")
    evaluate(w, EvaluationSpec(dataset=ds, model="bm25", baselines=[f"run:{run}"], split="all",
                               metrics=["ndcg@10", "mrr@10"]))
    run_checks(w, ds)
    return ds


def _assert_clean(page, port: int, requests: list[str], where: str) -> None:
    if where != "Experiments":  # its runs table reruns every 5 s: goto() waited for it once
        idle(page)
    page.wait_for_timeout(1000)
    bad = [u for u in requests if f":{port}" in u]
    assert not bad, f"{where}: the browser fetched {bad}"
    assert not _Tracker.hits, f"{where}: the tracking server was hit: {_Tracker.hits}"
    main = page.locator("[data-testid='stMain']")
    assert main.locator(f"img[src*=':{port}']").count() == 0, where
    # an element holding exactly the marked word was made from the user's markup (the page's
    # own bold around a whole query holds more than that)
    for tag, mark in (("strong", "boldmark"), ("em", "emmark"), ("b", "rawmark"),
                      ("span", "redmark")):
        made = main.locator(tag, has_text=re.compile(rf"^\s*{mark}\s*$"))
        assert made.count() == 0, f"{where}: <{tag}>{mark}</{tag}>"
    assert main.locator("h1, h2, h3, h4, h5, h6", has_text="headmark").count() == 0, where
    assert main.locator(".katex").count() == 0, f"{where}: LaTeX rendered"


def test_user_text_is_shown_literally_on_every_page(page, tmp_path, tracker):
    port = tracker.server_address[1]
    ws = tmp_path / "ws"
    _workspace(ws, port, tmp_path)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    server = AppServer(ws, _free_port()).start()
    try:
        page.goto(server.url)
        wait_for_app(page)
        _assert_clean(page, port, requests, "Home")
        for label in ("Data", "Checks", "Train", "Review", "Experiments"):
            goto(page, label)
            if label == "Checks":
                page.get_by_text("Results for").first.wait_for()  # the cached checks are shown
            _assert_clean(page, port, requests, label)

        goto(page, "Evaluate")
        page.get_by_text("Drill-down: both rankings side by side").first.wait_for()
        _assert_clean(page, port, requests, "Evaluate")  # before: the caption fetched the image
        caption = page.locator("[data-testid='stCaptionContainer']",
                               has_text="**boldmark**").first
        caption.wait_for()  # the query, literally, in the drill-down caption
        assert f"![trk](http://127.0.0.1:{port}/q" in caption.inner_text()
        select(page, "Query (most improved first)", 1)
        _assert_clean(page, port, requests, "Evaluate, another query")

        goto(page, "Playground")
        page.get_by_text("Pick a query from a dataset").click()
        idle(page)
        page.get_by_text("labelled candidates").first.wait_for()
        assert "**boldmark**" in page.get_by_text("labelled candidates").first.inner_text()
        select(page, "Ranker A", "bm25")
        page.get_by_role("button", name="Rank").click()
        page.get_by_text("Ranked by bm25").first.wait_for(timeout=180_000)
        _assert_clean(page, port, requests, "Playground")
    finally:
        server.stop()
