"""Data checks: planted leaks are found (and nothing else), the re-split removes them, label
problems and truncation are counted exactly, the memory estimate adds up, the CLI contract holds."""

import json

import numpy as np
import pytest

from lib import db
from lib.bootstrap import load_demo
from lib.checks import load_cached_checks, resplit_grouped, run_checks
from lib.checks.labels import check_labels
from lib.checks.leakage import find_leakage, query_groups
from lib.checks.memory import GIB, estimate_training_memory, memory_check
from lib.checks.neardup import near_duplicate_pairs, normalize_text
from lib.checks.truncation import (
    check_truncation,
    dataset_truncation,
    pair_token_lengths,
    suggest_max_length,
    truncation_stats,
)
from lib.cli import main as cli_main
from lib.ingest import ingest_file
from lib.models import load_tokenizer
from lib.split import active_split_id, load_split_pairs


def _ingest(ws, tmp_path, rows, name):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return ingest_file(ws, path, name).dataset_id


def _force_split(ws, dataset_id, assignment, split_id):
    """Put each query where the test needs it (as a user's earlier split might have)."""
    with db.connect(ws) as con:
        con.execute(
            "INSERT INTO splits (split_id, dataset_id, seed, train_frac, val_frac, test_frac, "
            "method, is_active) VALUES (?, ?, 13, 0.6, 0.4, 0.0, 'random', false)",
            [split_id, dataset_id],
        )
        for qid, sp in assignment.items():
            con.execute("INSERT INTO split_assignments VALUES (?, ?, ?)", [split_id, qid, sp])
        con.execute("UPDATE splits SET is_active = (split_id = ?) WHERE dataset_id = ?",
                    [split_id, dataset_id])


def _jaccard3(a, b):
    a, b = normalize_text(a), normalize_text(b)
    sa = {a[i : i + 3] for i in range(len(a) - 2)}
    sb = {b[i : i + 3] for i in range(len(b) - 2)}
    return len(sa & sb) / len(sa | sb)


QUERIES = {
    # planted leaks (train query, validation twin)
    "t1": ("what is a shock wave", "train"),
    "v1": ("what is a shock wave", "validation"),  # exact text, other id
    "t2": ("How do wings generate lift?", "train"),
    "v2": ("how do wings generate LIFT", "validation"),  # case + punctuation
    "t3": ("effect of wall temperature on boundary layer transition", "train"),
    "v3": ("effects of wall temperature on boundary layer transitions", "validation"),  # near
    # near-duplicates inside train: not leakage, but grouped by the re-split
    "t4": ("supersonic flow over a slender cone", "train"),
    "t5": ("supersonic flows over a slender cone", "train"),
    # similar topic, below the threshold: must not be reported
    "t6": ("heat transfer in laminar flow", "train"),
    "v6": ("heat transfer in turbulent flow", "validation"),
    # clean
    "t7": ("flutter of panels in hypersonic flow", "train"),
    "t8": ("buckling of thin cylindrical shells under axial load", "train"),
    "t9": ("drag of blunt bodies at low reynolds number", "train"),
    "v7": ("noise from jet engines at takeoff", "validation"),
    "v8": ("ablation of heat shields during reentry", "validation"),
}
LEAKY = {qid: sp for qid, (_, sp) in QUERIES.items()}
# the same queries, with each planted twin on the same side: no leakage at all
CLEAN = {**LEAKY, "v1": "train", "v2": "train", "v3": "train", "v6": "train",
         "t7": "validation", "t8": "validation", "t9": "validation"}


def _rows():
    rows = []
    for qid, (text, _) in QUERIES.items():
        for k, label in enumerate((2, 0, 0)):
            rows.append({"query_id": qid, "query": text, "doc_id": f"{qid}-d{k}",
                         "document": f"document {k} for {qid}: {text}", "label": label})
    # v1 was judged against the very document t1 was: an identical (query, document) pair
    rows.append({"query_id": "v1", "query": "what is a shock wave", "doc_id": "t1-d0",
                 "document": "document 0 for t1: what is a shock wave", "label": 2})
    return rows


@pytest.fixture
def leaky(workspace, tmp_path):
    ds = _ingest(workspace, tmp_path, _rows(), "planted")
    _force_split(workspace, ds, LEAKY, "sp-leaky")
    return ds


def _pairs_found(report):
    return {(f["kind"], frozenset(m["query_id"] for m in f["queries"])) for f in report.findings}


def test_planted_leaks_are_found_and_nothing_else(workspace, leaky):
    report = find_leakage(workspace, leaky, "sp-leaky", threshold=0.8)
    assert _pairs_found(report) == {
        ("exact", frozenset({"t1", "v1"})),
        ("normalized", frozenset({"t2", "v2"})),
        ("near_duplicate", frozenset({"t3", "v3"})),
    }
    by_kind = {f["kind"]: f for f in report.findings}
    near = by_kind["near_duplicate"]
    assert near["similarity"] == pytest.approx(_jaccard3(QUERIES["t3"][0], QUERIES["v3"][0]),
                                               abs=1e-4)
    assert near["similarity"] == pytest.approx(0.8947, abs=1e-4)
    assert near["splits"] == ["train", "validation"]
    assert by_kind["normalized"]["similarity"] == 1.0
    exact = by_kind["exact"]
    assert exact["pairs"] == 4 and exact["train_pairs"] == 3  # v1 has 4 rows, t1 has 3
    assert exact["identical_pairs"] == 1 and exact["shared_documents"] == 1
    assert exact["examples"][0]["judged_on_both_sides"]
    assert {m["split"]: m["query_id"] for m in exact["queries"]} == {"train": "t1",
                                                                     "validation": "v1"}
    val = report.summary["held_out"]["validation"]
    assert (val["queries"], val["leaked_queries"], val["leaked_pairs"]) == (6, 3, 10)


def test_lower_threshold_reports_the_weaker_pair_too(workspace, leaky):
    sim = _jaccard3(QUERIES["t6"][0], QUERIES["v6"][0])
    report = find_leakage(workspace, leaky, "sp-leaky", threshold=sim - 0.01)
    assert ("near_duplicate", frozenset({"t6", "v6"})) in _pairs_found(report)


def test_clean_split_reports_no_leakage(workspace, tmp_path):
    ds = _ingest(workspace, tmp_path, _rows(), "planted-clean")
    _force_split(workspace, ds, CLEAN, "sp-clean")
    report = find_leakage(workspace, ds, "sp-clean")
    assert report.findings == []
    assert report.summary["held_out"]["validation"]["leaked_queries"] == 0


def test_demo_data_has_no_leakage_and_no_label_issues(workspace):
    load_demo(workspace)
    res = run_checks(workspace, "cranfield-demo", truncation=False)
    assert res.to_json()["leakage"] == [] and not res.has_leakage
    assert res.labels["issues"] == []
    assert res.labels["distribution"]["validation"]["pairs"] == 790


def test_resplit_keeps_groups_together_and_removes_leaks(workspace, leaky):
    groups = query_groups(workspace, leaky, "sp-leaky", 0.8)
    g = groups.groups
    assert g["t1"] == g["v1"] and g["t2"] == g["v2"] and g["t3"] == g["v3"] and g["t4"] == g["t5"]
    assert g["t6"] != g["v6"] and g["t7"] != g["t8"]
    summary = resplit_grouped(workspace, "planted")
    assert summary.method == "grouped" and summary.split_id != "sp-leaky"
    with db.connect(workspace) as con:
        kept = con.execute("SELECT split_id, is_active FROM splits WHERE dataset_id = ? "
                           "ORDER BY split_id", [leaky]).fetchall()
        assert active_split_id(con, leaky) == summary.split_id
    assert ("sp-leaky", False) in kept and (summary.split_id, True) in kept
    assert find_leakage(workspace, leaky, summary.split_id).findings == []
    pairs = load_split_pairs(workspace, "planted")
    split_of = dict(zip(pairs["query_id"], pairs["split"], strict=True))
    assert split_of["t4"] == split_of["t5"] and split_of["t3"] == split_of["v3"]
    assert set(split_of.values()) == {"train", "validation"}


def test_evaluation_dataset_checked_against_training_split(workspace, tmp_path, leaky):
    ev = _ingest(workspace, tmp_path, [
        {"query_id": "e1", "query": "Flutter of panels in hypersonic flow.", "document": "x",
         "label": 1},
        {"query_id": "t8", "query": "a different question reusing an id", "document": "y",
         "label": 1},
        {"query_id": "e3", "query": "noise from jet engines at takeoff", "document": "z",
         "label": 1},  # equals a VALIDATION query, not a training one: not leakage
    ], "evalset")
    res = run_checks(workspace, "planted", eval_dataset="evalset", truncation=False)
    found = {(f["kind"], frozenset(m["query_id"] for m in f["queries"]))
             for f in res.leakage["findings"]}
    assert found == {("normalized", frozenset({"t7", "e1"})),
                     ("same_query_id", frozenset({"t8"}))}
    assert all(set(f["splits"]) == {"train", "eval"} for f in res.leakage["findings"])
    assert res.eval_dataset_id == ev
    with pytest.raises(ValueError, match="must differ"):
        run_checks(workspace, "planted", eval_dataset="planted", truncation=False)


def test_near_duplicates_match_the_all_pairs_baseline():
    from lib.checks.neardup import naive_near_duplicate_pairs

    rng = np.random.default_rng(3)
    vocab = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(3, 8))) for _ in range(400)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(3, 8))) for _ in range(600)]
    texts += [t + "s" for t in texts[:60]] + [t.replace(" ", "  x ", 1) for t in texts[60:90]]
    texts = sorted({normalize_text(t) for t in texts})
    ours = near_duplicate_pairs(texts, 0.7)
    naive = naive_near_duplicate_pairs(texts, 0.7)
    assert len(naive.pairs) > 50
    assert set(map(tuple, ours.pairs.tolist())) == set(map(tuple, naive.pairs.tolist()))
    order = np.lexsort(ours.pairs.T[::-1])
    norder = np.lexsort(naive.pairs.T[::-1])
    np.testing.assert_allclose(ours.similarity[order], naive.similarity[norder])


def test_conflicting_and_unevaluable_labels(workspace, tmp_path):
    rows = [
        {"query_id": "a", "query": "qa", "doc_id": "d1", "document": "doc one", "label": 2},
        {"query_id": "a", "query": "qa", "doc_id": "d2", "document": "doc two", "label": 0},
        {"query_id": "b", "query": "qb", "doc_id": "d1", "document": "doc one", "label": 0},
        {"query_id": "b", "query": "qb", "doc_id": "d3", "document": "doc three", "label": 0},
        {"query_id": "a", "query": "qa", "doc_id": "d1", "document": "doc one", "label": 0},
        {"query_id": "c", "query": "qc", "doc_id": "d1", "document": "doc one", "label": 1},
        {"query_id": "c", "query": "qc", "doc_id": "d2", "document": "doc two", "label": 3},
        {"query_id": "e", "query": "qe", "doc_id": "d3", "document": "doc three", "label": 1},
        {"query_id": "f", "query": "qf", "doc_id": "d1", "document": "doc one", "label": 0},
        {"query_id": "f", "query": "qf", "doc_id": "d2", "document": "doc two", "label": 1},
    ]
    ds = _ingest(workspace, tmp_path, rows, "labels")
    _force_split(workspace, ds, {"a": "train", "f": "train", "b": "validation",
                                 "c": "validation", "e": "validation"}, "sp-labels")
    out = check_labels(workspace, ds, "sp-labels")
    issues = {(i["kind"], i["split"]): i for i in out["issues"]}
    conflict = issues[("conflicting_labels", None)]
    assert conflict["count"] == 1
    example = conflict["examples"][0]
    assert example["labels"] == [0, 2] and example["lines"] == [1, 5]
    none = issues[("no_positive", "validation")]
    assert none["count"] == 1 and none["of_queries"] == 3 and "EXCLUDED" in none["message"]
    assert [e["query_id"] for e in none["examples"]] == ["b"]
    only = issues[("only_positive", "validation")]
    assert sorted(e["query_id"] for e in only["examples"]) == ["c", "e"]
    single = issues[("single_candidate", "validation")]
    assert [e["query_id"] for e in single["examples"]] == ["e"]
    assert ("no_positive", "train") not in issues  # a and f both have a positive
    assert out["distribution"]["validation"]["labels"] == {"0": 2, "1": 2, "3": 1}
    assert out["distribution"]["train"]["labels"] == {"0": 3, "1": 1, "2": 1}
    skew = [i["message"] for i in out["issues"] if i["kind"] == "skew"]
    assert any("3" in m and "train never shows" in m for m in skew)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


def test_truncation_counts_exact_on_constructed_lengths(tok):
    # "the" is one token, "q" one token, 3 special tokens: total = 1 + n + 3
    docs = {10: 1, 60: 0, 61: 1, 100: 0}  # n words -> label
    pairs = [("q", " ".join(["the"] * n)) for n in docs]
    total = pair_token_lengths(tok, pairs)
    assert total.tolist() == [14, 64, 65, 104]
    s = truncation_stats(total, np.array(list(docs.values())), max_length=64)
    assert (s["truncated"], s["relevant_pairs"], s["relevant_truncated"]) == (2, 2, 1)
    assert s["truncated_share"] == 0.5 and s["relevant_truncated_share"] == 0.5
    assert s["tokens_lost"]["total"] == 41 and s["tokens_lost"]["max"] == 40
    assert check_truncation(tok, pairs, 64, list(docs.values())) == s
    assert suggest_max_length(np.array([100] * 95 + [1000] * 5), 512) == 128
    assert suggest_max_length(np.array([600] * 100), 512) == 512


def test_pair_lengths_equal_the_tokenizers_own_pair_encoding(workspace, tok):
    load_demo(workspace)
    df = load_split_pairs(workspace, "cranfield-demo").iloc[::40]
    pairs = list(zip(df["query"], df["document"], strict=True))
    ours = pair_token_lengths(tok, pairs)
    theirs = [len(tok(q, d, truncation=False)["input_ids"]) for q, d in pairs]
    assert ours.tolist() == theirs


def test_dataset_truncation_per_split(workspace, tmp_path, tok):
    rows = [{"query_id": "a", "query": "q", "doc_id": f"a{n}", "document": " ".join(["the"] * n),
             "label": lab} for n, lab in ((10, 1), (61, 1), (100, 0))]
    rows += [{"query_id": "b", "query": "q q", "doc_id": f"b{n}",
              "document": " ".join(["the"] * n), "label": lab} for n, lab in ((59, 1), (60, 2))]
    ds = _ingest(workspace, tmp_path, rows, "lengths")
    _force_split(workspace, ds, {"a": "train", "b": "validation"}, "sp-len")
    out = dataset_truncation(workspace, ds, "sp-len", tok, max_length=64, limit=512)
    tr, va = out["splits"]["train"], out["splits"]["validation"]
    assert (tr["pairs"], tr["truncated"], tr["relevant_truncated"]) == (3, 2, 1)
    assert tr["tokens_lost"]["total"] == 1 + 40
    # validation: 2 + 59 + 3 = 64 fits; 2 + 60 + 3 = 65 loses one relevant token
    assert (va["truncated"], va["relevant_truncated"], va["tokens_lost"]["max"]) == (1, 1, 1)
    assert sum(sum(c) for c in out["histogram"]["counts"].values()) == 5
    assert out["examples"][0]["tokens_lost"] == 1 and out["examples"][0]["label"] >= 1
    assert out["suggested_max_length"] == 128


def test_memory_estimate_adds_up():
    est = estimate_training_memory(1000, hidden=64, layers=2, batch_size=2, max_length=8,
                                   precision="fp32", heads=1)
    # 72 B per token x layer x hidden unit at fp32 (SDPA), + 4 fp32 values per token x hidden
    assert est.parts["activations"] == 2 * (72 * 8 * 2 * 64) + 4 * 8 * 2 * 64 * 4 == 163840
    assert est.parts["weights"] == 4000 and est.parts["optimizer"] == 8000
    assert est.parts["cuda_context_and_fragmentation"] == 512 * 2**20 + int(0.1 * 179840)
    assert est.total_bytes == sum(est.parts.values())
    half = estimate_training_memory(1000, 64, 2, 2, 8, "bf16", heads=1)
    assert half.parts["activations"] == 2 * (48 * 8 * 2 * 64) + 4 * 8 * 2 * 64 * 2 == 106496
    assert half.parts["weights_16bit_copy"] == 2000
    eager = estimate_training_memory(1000, 64, 2, 2, 8, "fp32", heads=1, attention="eager")
    assert eager.parts["activations"] == 163840 + 2 * (5 * 1 * 8 * 8 * 2 * 4 // 2)
    bigger = estimate_training_memory(1000, 64, 2, 4, 8, "fp32", heads=1)
    assert bigger.parts["activations"] == 2 * est.parts["activations"]  # linear in batch
    with pytest.raises(ValueError):
        estimate_training_memory(1000, 64, 2, 2, 8, "int4")


def test_memory_check_warns_when_the_gpu_is_too_small(tiny_model):
    ok = memory_check(tiny_model, 8, 128, "fp32", free_bytes=80 * GIB)
    assert ok["fits"] is True and ok["params_source"] == "safetensors"
    tight = memory_check(tiny_model, 8, 128, "fp32", free_bytes=ok["total_bytes"] - 1)
    assert tight["fits"] is False and "run out of memory" in tight["message"]


def test_results_are_cached_per_model_and_max_length(workspace, leaky):
    first = run_checks(workspace, "planted", max_length=64)
    assert first.cached == {"leakage": False, "labels": False, "truncation": False}
    again = run_checks(workspace, "planted", max_length=64)
    assert again.cached == {"leakage": True, "labels": True, "truncation": True}
    assert again.to_json()["leakage"] == first.to_json()["leakage"]
    other = run_checks(workspace, "planted", max_length=128)
    assert other.cached == {"leakage": True, "labels": True, "truncation": False}
    loaded = load_cached_checks(workspace, "planted", max_length=64)
    assert loaded is not None and loaded.truncation["max_length"] == 64
    assert load_cached_checks(workspace, "planted", max_length=256) is None
    with pytest.raises(ValueError, match="exceeds the model's limit"):
        run_checks(workspace, "planted", max_length=4096)


def test_cli_check_json_contract_and_exit_codes(workspace, leaky, capsys):
    code = cli_main(["check", "planted", "--max-length", "128", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1
    assert {"leakage", "label_issues", "truncation"} <= set(out)
    assert {f["kind"] for f in out["leakage"]} == {"exact", "normalized", "near_duplicate"}
    for f in out["leakage"]:
        assert {"kind", "queries", "splits", "similarity", "pairs"} <= set(f)
        assert len(f["queries"]) == 2 and f["splits"] == ["train", "validation"]
    assert out["truncation"]["max_length"] == 128
    assert cli_main(["resplit", "planted", "--json"]) == 0
    resplit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resplit["method"] == "grouped"
    assert cli_main(["check", "planted", "--max-length", "128"]) == 0
    text = capsys.readouterr().out
    assert "LEAKAGE (0 findings" in text and "TRUNCATION at max length 128" in text


def test_word_sum_shortcut_equals_whole_text_tokenisation(workspace, tok, monkeypatch):
    """On the demo data the distinct-word path gives exactly the per-pair lengths of real
    tokenisation; a tokenizer it does not apply to falls back to whole texts, same numbers."""
    from lib.checks import truncation

    load_demo(workspace)
    with db.connect(workspace) as con:
        from lib.datasets import resolve_dataset

        ds = resolve_dataset(con, "cranfield-demo")
        sid = active_split_id(con, ds.dataset_id)
    assert truncation.word_additive(tok)
    fast = dataset_truncation(workspace, ds.dataset_id, sid, tok, max_length=256, limit=512)
    assert fast["counted_by"] == "distinct words"
    df = load_split_pairs(workspace, "cranfield-demo")
    total = pair_token_lengths(tok, list(zip(df["query"], df["document"], strict=True)))
    for sp in ("train", "validation"):
        m = (df["split"] == sp).to_numpy()
        assert fast["splits"][sp]["truncated"] == int((total[m] > 256).sum())
        assert fast["splits"][sp]["tokens_lost"]["total"] == int(np.maximum(total[m] - 256,
                                                                            0).sum())
        assert fast["splits"][sp]["length"]["max"] == int(total[m].max())
    monkeypatch.setattr(truncation, "word_additive", lambda _tok: False)
    slow = dataset_truncation(workspace, ds.dataset_id, sid, tok, max_length=256, limit=512)
    assert slow["counted_by"] == "distinct texts"
    assert slow["splits"] == fast["splits"] and slow["histogram"] == fast["histogram"]
