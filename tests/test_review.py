"""Review of mined negatives: suspicious first, decisions change the version (not the parent)."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lib import mining, review, split
from tests.test_mining import build, snapshot

ROOT = Path(__file__).resolve().parents[1]


def _guard(queries, docs):  # share of the document's words that are query words
    return np.array([len(set(q.split()) & set(d.split())) / len(set(d.split()))
                     for q, d in zip(queries, docs, strict=True)])


@pytest.fixture
def mined(workspace, tmp_path):
    build(workspace, tmp_path)
    return mining.mine(workspace, "pos", mining.MineOptions(
        corpus="aero", negatives=3, range_max=20, margin=None, guard="fake", max_score=2.0),
        guard_fn=_guard)


def test_most_suspicious_first_and_decisions_round_trip(workspace, mined):
    table = review.review_table(workspace, mined.name)
    assert len(table) == mined.mined
    assert table["suspicion"].is_monotonic_decreasing
    top = table.iloc[0]
    assert (top["query_id"], top["doc_id"]) == ("q1", "planted")  # answers q1 word for word
    parent_before = snapshot(workspace, "pos")
    key = [("q1", "planted")]
    assert review.decide(workspace, mined.name, key, "relevant") == 1
    pairs = split.load_split_pairs(workspace, mined.name)
    assert pairs.query("doc_id == 'planted'")["label"].tolist() == [1]
    assert review.decide(workspace, mined.name, key, "dropped") == 1
    assert "planted" not in set(split.load_split_pairs(workspace, mined.name)["doc_id"])
    others = list(zip(table["query_id"][1:4], table["doc_id"][1:4], strict=True))
    assert review.decide(workspace, mined.name, others, "accepted") == 3  # in bulk
    review.decide(workspace, mined.name, key, "pending")  # back from dropped: restored
    restored = split.load_split_pairs(workspace, mined.name).query("doc_id == 'planted'")
    assert restored["label"].tolist() == [0]
    counts = review.review_counts(workspace, mined.name)
    assert counts["mined"] == mined.mined and counts["accepted"] == 3
    assert counts["pending"] == mined.mined - 3
    assert snapshot(workspace, "pos").equals(parent_before)
    with pytest.raises(ValueError, match="not mined"):
        review.decide(workspace, mined.name, [("q1", "p1")], "dropped")


def test_review_page_bulk_drop(workspace, mined):
    at = AppTest.from_file(str(ROOT / "pages" / "review.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Review"
    assert any(m.label == "Mined" and m.value == str(mined.mined) for m in at.metric)
    pick = at.multiselect(key="review_pick")
    assert pick.options[0] == "q1 | planted"  # the most suspicious first
    pick.set_value([pick.options[0]]).run()
    at.button(key="review_drop").click().run()
    assert not at.exception
    assert review.review_counts(workspace, mined.name)["dropped"] == 1
    assert at.multiselect(key="review_pick").value == []  # decided: the pick is emptied
    assert any(m.label == "Dropped" and m.value == "1" for m in at.metric)


def test_data_page_adds_a_corpus_from_a_dataset(workspace, tmp_path):
    from lib.ingest import ingest_file

    data = tmp_path / "d.jsonl"
    data.write_text('{"query": "q", "document": "wing flutter", "label": 1}\n'
                    '{"query": "q", "document": "jet noise", "label": 0}\n')
    ingest_file(workspace, data, "tiny")
    at = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=60).run()
    assert not at.exception
    at.selectbox(key="corpus_from_ds").set_value("tiny").run()
    at.text_input(key="corpus_name").set_value("tiny-docs").run()
    at.button(key="corpus_add").click().run()
    assert not at.exception
    from lib import corpora

    c = corpora.get_corpus(workspace, "tiny-docs")
    assert c.n_docs == 2
    assert (corpora.index_dir(workspace, c) / "bm25-v1" / "meta.json").is_file()
    assert any("tiny-docs" in str(df.value["name"].tolist()) for df in at.dataframe)


def test_data_page_corpus_expander_keeps_its_state(workspace):
    """An upload inside 'Add a corpus' reruns the page; an untracked expander whose place had
    shifted (the ingest run adds a progress slot above it) came back collapsed in the browser,
    hiding the file just chosen. Keyed and tracked, it opens from its state on every rerun."""
    at = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=60)
    at.session_state["corpus_adder"] = True  # the user opened it
    at.run()
    at.run()
    assert not at.exception
    adder = next(e for e in at.expander if e.label == "Add a corpus")
    assert adder.proto.expanded


def test_review_page_mines_a_new_version(workspace, tmp_path):
    build(workspace, tmp_path)
    at = AppTest.from_file(str(ROOT / "pages" / "review.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No mined dataset yet" in i.value for i in at.info)
    at.selectbox(key="mine_ds").set_value("pos")
    at.selectbox(key="mine_corpus").set_value("aero")
    at.button(key="mine_go").click().run()
    assert not at.exception
    assert any("into the new dataset pos-mined" in s.value for s in at.success)
    assert list(review.mined_versions(workspace)["name"]) == ["pos-mined"]
    assert any(m.label == "Mined" and m.value == "40" for m in at.metric)
