"""Query-level split: disjoint by query, reproducible by seed, `split` field honoured."""

import json

import pytest

from lib.ingest import ingest_file
from lib.split import assign_queries, load_split_pairs, make_split


def test_assignment_is_disjoint_reproducible_and_sized():
    qs = [f"q{i}" for i in range(100)]
    a = assign_queries(qs, 0.2, 0.1, seed=7)
    b = assign_queries(list(reversed(qs)), 0.2, 0.1, seed=7)
    c = assign_queries(qs, 0.2, 0.1, seed=8)
    assert a == b  # input order does not matter
    assert a != c  # the seed does
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "validation", "test")}
    assert counts == {"train": 70, "validation": 20, "test": 10}


def test_fixed_and_grouped_queries():
    qs = [f"q{i}" for i in range(20)]
    groups = {"q1": "g", "q2": "g", "q3": "g"}
    for seed in range(10):
        a = assign_queries(qs, 0.3, 0.0, seed, fixed={"q0": "test"}, groups=groups)
        assert a["q0"] == "test"
        assert a["q1"] == a["q2"] == a["q3"]


def test_bad_fractions_rejected():
    with pytest.raises(ValueError, match="sum to less than 1"):
        assign_queries(["a"], 0.6, 0.5)


def test_make_split_on_dataset_honours_split_field(workspace, tmp_path):
    rows = []
    for q in range(30):
        for d in range(3):
            row = {"query_id": f"q{q}", "query": f"query {q}", "document": f"doc {q} {d}",
                   "label": d % 2}
            if q < 3:
                row["split"] = "test"
            rows.append(json.dumps(row))
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(rows) + "\n")
    ds = ingest_file(workspace, path)
    s1 = make_split(workspace, ds.name, 0.2, 0.0, seed=1)
    s2 = make_split(workspace, ds.name, 0.2, 0.0, seed=1)
    assert s1.split_id == s2.split_id
    assert s1.counts["test"]["queries"] == 3
    assert s1.counts["validation"]["queries"] == 5  # 20% of the 27 free queries, rounded
    df = load_split_pairs(workspace, ds.name)
    per_query = df.groupby("query_id")["split"].nunique()
    assert (per_query == 1).all()
    assert set(df[df["query_id"].isin(["q0", "q1", "q2"])]["split"]) == {"test"}
    assert sum(c["pairs"] for c in s1.counts.values()) == 90


def test_delete_dataset_removes_its_rows_and_cached_checks(workspace, tmp_path):
    from lib import db
    from lib.checks import run_checks
    from lib.datasets import delete_dataset

    rows = [json.dumps({"query": f"q{i}", "document": f"d{i}", "label": i % 2}) for i in range(20)]
    path = tmp_path / "del.jsonl"
    path.write_text("\n".join(rows) + "\n")
    ds = ingest_file(workspace, path)
    make_split(workspace, ds.name)
    run_checks(workspace, ds.name, truncation=False)
    with db.connect(workspace) as con:
        assert con.execute("SELECT count(*) FROM check_cache").fetchall()[0][0] > 0
    delete_dataset(workspace, ds.name)
    with db.connect(workspace) as con:
        for table in ("datasets", "pairs", "splits", "check_cache", "check_runs"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == 0, table
