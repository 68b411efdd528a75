"""The Checks page renders headless: demo data (nothing to report), a planted leak (fixed)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.bootstrap import load_demo
from tests.test_checks import LEAKY, _force_split, _ingest, _rows

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "checks.py")


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _texts(elements):
    return " ".join(str(e.value) for e in elements)


def test_checks_page_on_demo_data_runs_then_shows_cache(workspace):
    load_demo(workspace)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Checks"
    assert "Not checked yet" in _texts(at.info)
    _button(at, "Run checks").click().run()
    assert not at.exception
    assert "No query in validation (45 queries)" in _texts(at.success)
    assert not at.error  # no leakage, no label errors on the demo
    assert len(at.get("plotly_chart")) >= 2  # label distribution, length histogram
    # a fresh session (browser refresh) shows the stored results without running anything
    again = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not again.exception
    assert "(from cache)" in _texts(again.markdown)
    assert "Not checked yet" not in _texts(again.info)


def test_checks_page_finds_planted_leak_and_resplit_fixes_it(workspace, tmp_path):
    ds = _ingest(workspace, tmp_path, _rows(), "planted")
    _force_split(workspace, ds, LEAKY, "sp-leaky")
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.selectbox[1].set_value(128)  # max length
    _button(at, "Run checks").click().run()
    assert not at.exception
    assert "3 of 6 validation queries" in _texts(at.error)
    findings = at.dataframe[0].value
    assert sorted(findings["kind"]) == ["exact", "near_duplicate", "normalized"]
    _button(at, "Re-split keeping near-duplicate groups together").click().run()
    assert not at.exception
    assert "Leakage findings now: 0" in _texts(at.success)
    assert "No query in validation" in _texts(at.success)
