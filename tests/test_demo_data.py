"""Tests for the bundled Cranfield demo dataset and the code that builds it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from lib.demo_data import (
    DEMO_DATASET_NAME,
    DEMO_DATASET_PATH,
    ROW_KEYS,
    build_cranfield_rows,
    parse_documents,
    parse_qrels,
    parse_queries,
    write_jsonl,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CRANFIELD_DIR = REPO_ROOT.parent / "shared" / "data" / "cranfield"
SHIPPED = REPO_ROOT / "data" / "cranfield.jsonl"
NEGATIVES = 10

needs_raw = pytest.mark.skipif(
    not CRANFIELD_DIR.is_dir(),
    reason=f"raw Cranfield collection not found at {CRANFIELD_DIR}",
)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    if not CRANFIELD_DIR.is_dir():
        pytest.skip(f"raw Cranfield collection not found at {CRANFIELD_DIR}")
    return build_cranfield_rows(CRANFIELD_DIR, negatives_per_query=NEGATIVES)


@pytest.fixture(scope="module")
def shipped_rows() -> list[dict]:
    raw = SHIPPED.read_bytes()
    assert b"\r" not in raw, "shipped file must use LF line endings"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


# --- shipped file (independent of the raw collection) -------------------------------------


def test_constants_point_at_shipped_file() -> None:
    assert DEMO_DATASET_PATH == SHIPPED
    assert DEMO_DATASET_NAME == "cranfield-demo"


def test_shipped_file_rows_are_well_formed(shipped_rows: list[dict]) -> None:
    assert shipped_rows
    for row in shipped_rows:
        assert tuple(row) == ROW_KEYS
        for key in ("query_id", "query", "doc_id", "document"):
            assert isinstance(row[key], str) and row[key].strip(), (key, row)
        assert isinstance(row["label"], int) and 0 <= row["label"] <= 4
    pairs = [(r["query_id"], r["doc_id"]) for r in shipped_rows]
    assert len(pairs) == len(set(pairs)), "a (query, document) pair appears twice"


def test_shipped_file_is_usable_for_reranking(shipped_rows: list[dict]) -> None:
    by_query: dict[str, set[int]] = defaultdict(set)
    for row in shipped_rows:
        by_query[row["query_id"]].add(row["label"])
    # every query has at least one relevant and one negative document to rank
    assert all(labels & {1, 2, 3, 4} and 0 in labels for labels in by_query.values())


# --- parsers on the raw files --------------------------------------------------------------


@needs_raw
def test_parse_queries_maps_positions_not_dot_i_values() -> None:
    queries = parse_queries(CRANFIELD_DIR / "cran.qry")
    assert len(queries) == 225
    assert [q["position"] for q in queries] == list(range(1, 226))
    assert queries[2]["qid_raw"] == "004"
    assert queries[2]["text"] == (
        "what problems of heat conduction in composite slabs have been solved so far ."
    )
    assert queries[-1]["qid_raw"] == "365"
    assert all(q["text"] and "\r" not in q["text"] for q in queries)


@needs_raw
def test_parse_documents_handles_empty_and_corrupted_records() -> None:
    docs = parse_documents(CRANFIELD_DIR / "cran.all.1400")
    assert len(docs) == 1400
    assert docs["471"] == {"title": "", "text": ""}
    assert docs["995"] == {"title": "", "text": ""}
    assert docs["1"]["text"].startswith(docs["1"]["title"])
    # doc 240 has stray ".A"/".B" lines inside its abstract: the abstract must not be cut there
    tail = "reduces to zero the heat transfer in a laminar separated flow ."
    assert docs["240"]["text"].endswith(tail)
    markers = {".I", ".T", ".A", ".B", ".W"}
    assert not any(markers & set(d["text"].split()) for d in docs.values())


@needs_raw
def test_parse_qrels_drops_undocumented_code() -> None:
    qrels = parse_qrels(CRANFIELD_DIR / "cranqrel")
    assert qrels[0] == (1, "184", 2)
    assert {code for _, _, code in qrels} == {1, 2, 3, 4}
    with_undocumented = parse_qrels(CRANFIELD_DIR / "cranqrel", keep_undocumented=True)
    undocumented = [q for q in with_undocumented if q[2] == -1]
    assert len(undocumented) == 225  # one per query, and the last line has no newline
    assert len(with_undocumented) - len(undocumented) == len(qrels)


# --- built rows ----------------------------------------------------------------------------


def _label(rows: list[dict], query_id: str, doc_id: str) -> int:
    (match,) = [r["label"] for r in rows if r["query_id"] == query_id and r["doc_id"] == doc_id]
    return match


@needs_raw
def test_labels_are_five_minus_code(rows: list[dict]) -> None:
    assert _label(rows, "cran-q001", "cran-d0184") == 3  # cranqrel "1 184 2"
    assert _label(rows, "cran-q002", "cran-d0012") == 4  # cranqrel "2 12 1"
    assert _label(rows, "cran-q001", "cran-d0013") == 1  # cranqrel "1 13 4"
    assert _label(rows, "cran-q225", "cran-d1213") == 2  # cranqrel "225 1213 3"
    raw = parse_qrels(CRANFIELD_DIR / "cranqrel")
    judged = {(f"cran-q{p:03d}", f"cran-d{int(d):04d}"): 5 - c for p, d, c in raw}
    for row in rows:
        if row["label"] > 0:
            assert judged[(row["query_id"], row["doc_id"])] == row["label"]


@needs_raw
def test_undocumented_and_empty_documents_are_never_emitted(rows: list[dict]) -> None:
    undocumented = {
        (f"cran-q{p:03d}", f"cran-d{int(d):04d}")
        for p, d, c in parse_qrels(CRANFIELD_DIR / "cranqrel", keep_undocumented=True)
        if c == -1
    }
    assert not undocumented & {(r["query_id"], r["doc_id"]) for r in rows}
    emitted_docs = {r["doc_id"] for r in rows}
    assert "cran-d0471" not in emitted_docs
    assert "cran-d0995" not in emitted_docs  # judged for query 125, but has no text
    assert all(r["document"] for r in rows)


@needs_raw
def test_each_query_has_exactly_n_unjudged_hard_negatives(rows: list[dict]) -> None:
    judged_any: dict[str, set[str]] = defaultdict(set)
    for p, d, _ in parse_qrels(CRANFIELD_DIR / "cranqrel", keep_undocumented=True):
        judged_any[f"cran-q{p:03d}"].add(f"cran-d{int(d):04d}")
    negatives: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row["label"] == 0:
            negatives[row["query_id"]].append(row["doc_id"])
    assert len(negatives) == 225
    for query_id, doc_ids in negatives.items():
        assert len(doc_ids) == NEGATIVES, query_id
        assert len(set(doc_ids)) == NEGATIVES, query_id
        assert not set(doc_ids) & judged_any[query_id], query_id


@needs_raw
def test_rows_are_ordered_by_query_then_label(rows: list[dict]) -> None:
    query_ids = [r["query_id"] for r in rows]
    assert query_ids == sorted(query_ids)
    by_query: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_query[row["query_id"]].append(row)
    for group in by_query.values():
        judged = [r for r in group if r["label"] > 0]
        assert group[: len(judged)] == judged  # judged first, negatives after
        keys = [(-r["label"], r["doc_id"]) for r in judged]
        assert keys == sorted(keys)


@needs_raw
def test_zero_negatives_gives_only_judged_pairs() -> None:
    rows = build_cranfield_rows(CRANFIELD_DIR, negatives_per_query=0)
    assert rows and all(r["label"] > 0 for r in rows)


@needs_raw
def test_rebuild_is_byte_identical_to_shipped_file(rows: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "cranfield.jsonl"
    write_jsonl(rows, out)
    assert out.read_bytes() == SHIPPED.read_bytes()
