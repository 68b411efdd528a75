"""The `fuse:A+B` ranker: parsing, and an evaluation whose weight is chosen on validation and
reported on test (or cross-validated), equal to the fusion math done by hand."""

import json

import numpy as np
import pytest

from lib import split
from lib.bootstrap import load_demo
from lib.evaluation import EvaluationSpec, evaluate
from lib.evaluation.evalset import load_eval_set
from lib.evaluation.fusion import choose_weight, fuse
from lib.evaluation.rankers import FUSION, RankerSpecError, parse_ranker
from lib.evaluation.scoring import score_bm25
from lib.metrics import evaluate_rankings


def test_parse_fusion_specs(tmp_path):
    r = parse_ranker("fuse:bm25+biencoder@0.3")
    assert r.kind == FUSION and r.fusion_weight == 0.3
    assert [p.kind for p in r.parts] == ["bm25", "biencoder"]
    assert r.name == "fuse:bm25+biencoder@0.3"
    run = tmp_path / "a+b.jsonl"  # A keeps its own '+': B is split off at the last one
    run.write_text('{"query_id": "q", "doc_id": "d", "score": 1}\n')
    r = parse_ranker(f"fuse:run:{run}+bm25")
    assert r.parts[0].path == str(run.resolve()) and r.fusion_weight is None
    for bad, msg in (("fuse:bm25", "fuse:A\\+B"), ("fuse:bm25+bm25@1.5", "\\[0, 1\\]"),
                     ("fuse:fuse:bm25+bm25+bm25", "not fusions")):
        with pytest.raises(RankerSpecError, match=msg):
            parse_ranker(bad)


@pytest.fixture
def demo(workspace):
    """The demo with a split that has validation AND test queries."""
    load_demo(workspace)
    ds = "cranfield-demo"
    split.make_split(workspace, ds, val_frac=0.2, test_frac=0.2, seed=5)
    return workspace, ds


def _planted_run(path, pairs_by_split: dict):
    """A run file that is perfect on validation queries and exactly reversed on test ones."""
    with open(path, "w", encoding="utf-8") as fh:
        for name, pairs in pairs_by_split.items():
            sign = 1.0 if name == "validation" else -1.0
            for q, d, lab in zip(pairs["query_id"], pairs["doc_id"], pairs["label"], strict=True):
                fh.write(json.dumps({"query_id": q, "doc_id": d, "score": sign * lab}) + "\n")
    return path


def test_weight_is_chosen_on_validation_and_reported_on_test(demo, tmp_path):
    ws, ds = demo
    val, test = load_eval_set(ws, ds, "validation").pairs, load_eval_set(ws, ds, "test").pairs
    assert not set(val["query_id"]) & set(test["query_id"])
    run = _planted_run(tmp_path / "a.jsonl", {"validation": val, "test": test})
    res = evaluate(ws, EvaluationSpec(dataset=ds, model=f"fuse:run:{run}+bm25",
                                      baselines=["bm25"], split="test", save=False))
    fit = next(rk["stats"]["fusion"] for rk in res.rankers if rk["kind"] == FUSION)
    a_val = val["label"].to_numpy(float)
    expected_w = choose_weight(val, a_val, score_bm25(val)[0])[0]
    assert fit["weight"] == expected_w and expected_w > 0.5  # validation: trust A
    assert "validation" in fit["chosen_on"] and "test" in fit["reported_on"]
    fused = fuse(-test["label"].to_numpy(float), score_bm25(test)[0], test["query_id"],
                 expected_w)
    want = evaluate_rankings(test, fused, ("ndcg@10",)).means["ndcg@10"]
    assert res.means[res.model]["ndcg@10"] == pytest.approx(want)
    assert fit["estimate"] == pytest.approx(want)
    # choosing on test itself would have given a better (dishonest) figure
    a_test = -test["label"].to_numpy(float)
    in_sample = choose_weight(test, a_test, score_bm25(test)[0])[1]
    assert max(in_sample.values()) > want + 0.05
    assert "chosen on validation split" in res.to_json()["rankers"][0]["stats"]["note"]


def test_retrieve_then_rerank_chooses_the_weight_on_validation_corpus_candidates(demo, tmp_path):
    """The weight for a corpus evaluation is chosen on the validation queries' top-k from the
    same corpus and first stage, not on their labelled pairs (a different task: on a
    positives-only dataset those are all relevant)."""
    from lib import corpora
    from lib.evaluation.candidates import corpus_candidates

    ws, ds = demo
    corpora.corpus_from_dataset(ws, ds, name="demo-docs")
    val_l = load_eval_set(ws, ds, "validation")
    val_es = corpus_candidates(ws, val_l, "demo-docs", "bm25", 20)
    test_es = corpus_candidates(ws, load_eval_set(ws, ds, "test"), "demo-docs", "bm25", 20)
    val, test = val_es.pairs, test_es.pairs
    assert (~val["judged"]).sum() > 0
    assert len(val_es.missed) and len(test_es.missed)  # relevant documents BM25 did not fetch
    # A orders the judged pairs perfectly but puts every unjudged candidate above them: perfect
    # on labelled pairs, poor on the candidates a production reranker sees
    run = tmp_path / "a.jsonl"
    with open(run, "w", encoding="utf-8") as fh:
        for p in (val, test):
            for q, d, lab, j in zip(p["query_id"], p["doc_id"], p["label"], p["judged"],
                                    strict=True):
                fh.write(json.dumps({"query_id": q, "doc_id": d,
                                     "score": float(lab) if j else 10.0}) + "\n")
    res = evaluate(ws, EvaluationSpec(dataset=ds, model=f"fuse:run:{run}+bm25",
                                      baselines=["bm25"], split="test", corpus="demo-docs",
                                      first_stage="bm25", top_k=20, save=False))
    fit = res.rankers[0]["stats"]["fusion"]

    def a_scores(p):
        return np.where(p["judged"], p["label"].to_numpy(float), 10.0)

    expected_w = choose_weight(val, a_scores(val), score_bm25(val)[0],
                               extra_qrels=val_es.missed)[0]
    labelled = val_l.pairs
    w_on_labelled = choose_weight(labelled, labelled["label"].to_numpy(float),
                                  score_bm25(labelled)[0])[0]
    assert fit["weight"] == expected_w and expected_w < 0.5 < w_on_labelled
    assert "top-20 of corpus demo-docs by bm25" in fit["chosen_on"]
    assert fit["chosen_on"].startswith("validation") and "test" in fit["reported_on"]
    fused = fuse(a_scores(test), score_bm25(test)[0], test["query_id"], expected_w)
    # the fit's figure is the evaluation's own: missed relevant documents stay in the qrels
    want = evaluate_rankings(test, fused, ("ndcg@10",),
                             extra_qrels=test_es.missed).means["ndcg@10"]
    assert fit["estimate"] == pytest.approx(want)
    assert res.means[res.model]["ndcg@10"] == pytest.approx(want)


def test_without_a_test_split_the_weight_is_cross_validated(demo, tmp_path):
    ws, ds = demo
    val = load_eval_set(ws, ds, "validation").pairs
    run = _planted_run(tmp_path / "a.jsonl", {"validation": val})
    res = evaluate(ws, EvaluationSpec(dataset=ds, model=f"fuse:run:{run}+bm25",
                                      baselines=["bm25"], split="validation", save=False))
    fit = res.rankers[0]["stats"]["fusion"]
    assert "cross-validation" in fit["reported_on"] and len(fit["fold_weights"]) == 5
    fixed = evaluate(ws, EvaluationSpec(dataset=ds, model=f"fuse:run:{run}+bm25@0.2",
                                        baselines=["bm25"], split="validation", save=False))
    fused = fuse(val["label"].to_numpy(float), score_bm25(val)[0], val["query_id"], 0.2)
    want = evaluate_rankings(val, fused, ("ndcg@10",)).means["ndcg@10"]
    assert fixed.means[fixed.model]["ndcg@10"] == pytest.approx(want)
    assert fixed.rankers[0]["stats"]["fusion"]["chosen_on"].startswith("fixed")


def test_a_model_that_loses_to_bm25_gets_an_honest_verdict_everywhere(demo, tmp_path, capsys):
    from lib.cli import main

    ws, ds = demo
    val = load_eval_set(ws, ds, "validation").pairs
    test = load_eval_set(ws, ds, "test").pairs
    run = _planted_run(tmp_path / "a.jsonl", {"test": test, "x": val})  # reversed: loses
    rc = main(["evaluate", "--workspace", str(ws.root), "--model", f"run:{run}",
               "--baseline", "bm25", "--dataset", ds, "--split", "test"])
    assert rc == 0
    out = capsys.readouterr().out
    # a run file is not a reranker: no verdict about rerankers for it
    assert "Likely causes" not in out
    res = evaluate(ws, EvaluationSpec(dataset=ds, model=f"fuse:run:{run}+bm25@0.9",
                                      baselines=["bm25"], split="test"))
    honest = res.to_json()["honest_verdict"]
    assert honest["lost"] and "bm25" in honest["loses_to"]
    assert honest["next_steps"]
    assert not any("fuse:" in s for s in honest["next_steps"])  # it is a fusion already
    html = (ws.root / res.files["html"]).read_text(encoding="utf-8")
    assert "LOSES to BM25" in html and "Likely causes" in html
    # the Evaluate page renders the same verdict (plain text) and the fusion's provenance
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "pages" / "evaluate.py"
    at = AppTest.from_file(str(page), default_timeout=120)
    at.query_params["report"] = res.eval_id
    at.run()
    assert not at.exception
    assert any("loses to a first stage" in m.value for m in at.error)
    texts = [t.value for t in at.text]
    assert any("LOSES to BM25" in t and "Next to try" in t for t in texts)
    assert any(t.startswith(f"Fusion {res.model}: fusion weight 0.9") and "fixed by the user"
               in t for t in texts)
