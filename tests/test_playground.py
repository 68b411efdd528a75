"""Playground: a query and typed (or picked) documents ranked by two rankers side by side."""

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.bootstrap import load_demo
from lib.evaluation.playground import rank_documents, split_documents
from lib.textsafe import escape_markdown

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "playground.py")


def test_split_documents_on_blank_lines():
    text = "first doc\ncontinues here\n\n\nsecond doc\n---\nthird doc\n"
    assert split_documents(text) == ["first doc continues here", "second doc", "third doc"]


def test_rank_documents_side_by_side(workspace, tiny_model):
    docs = ["heat transfer to a cylinder", "supersonic nozzle flow separation", "wing lift"]
    res = rank_documents(workspace, "nozzle flow", docs, ["bm25", str(tiny_model)])
    t = res.table
    assert list(t["doc"])[0] == "d2"  # sorted by the first ranker: bm25 puts the match first
    assert sorted(t["bm25 rank"]) == [1, 2, 3] and sorted(t["tiny-ce rank"]) == [1, 2, 3]
    assert t.loc[t["doc"] == "d2", "document"].iloc[0] == docs[1]
    with pytest.raises(ValueError, match="type a query"):
        rank_documents(workspace, " ", docs, ["bm25", "bm25"])


def _by_label(widgets, label):
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r}: {[w.label for w in widgets]}"
    return found[0]


def test_playground_page_ranks_typed_documents(workspace, tiny_model):
    load_demo(workspace)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Playground"
    _by_label(at.selectbox, "Ranker A").set_value("bm25").run()
    _by_label(at.selectbox, "Ranker B").set_value("other (hub id or path)").run()
    _by_label(at.text_input, "Ranker B: hub id or path").input(str(tiny_model)).run()
    _by_label(at.button, "Rank").click().run()  # a folder outside the workspace: refused
    assert [e.value for e in at.error] == [
        f"path {escape_markdown(repr(str(tiny_model)))} must be relative and stay inside "
        f"{escape_markdown(str(workspace.root))}"]
    assert not at.dataframe
    shutil.copytree(tiny_model, workspace.root / "imports" / "tiny-ce")
    _by_label(at.text_input, "Ranker B: hub id or path").input("imports/tiny-ce").run()
    _by_label(at.button, "Rank").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert len(table) == 4 and {"bm25 rank", "tiny-ce rank", "rank change"} <= set(table.columns)
    # no query word occurs in the heat-transfer example: BM25 scores it 0, last
    assert table.iloc[-1]["document"].startswith("heat transfer to a cylinder")
    assert table.iloc[-1]["bm25 score"] == 0


def test_playground_page_picks_a_dataset_query(workspace):
    load_demo(workspace)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.radio[0].set_value("Pick a query from a dataset").run()
    assert not at.exception
    _by_label(at.selectbox, "Ranker A").set_value("bm25").run()
    _by_label(at.selectbox, "Ranker B").set_value("biencoder").run()
    _by_label(at.button, "Rank").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert "label" in table.columns and len(table) > 5
