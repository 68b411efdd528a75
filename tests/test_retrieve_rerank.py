"""Retrieve-then-rerank evaluation: top-k from a corpus, unjudged = not relevant, judged@10,
and the first stage's recall@k (judged relevant documents it missed still count)."""

import json
import math

import pytest

from lib import corpora
from lib.cli import main
from lib.evaluation import EvaluationSpec, evaluate
from lib.ingest import ingest_file

CORPUS = [
    ("d1", "boundary layer transition on a flat plate"),
    ("d2", "boundary layer heating"),
    ("d3", "heat transfer in hypersonic flow"),
    ("d4", "thermal loads on reentry vehicles"),
    ("u1", "boundary layer transition boundary layer transition experiments"),
    ("u2", "hypersonic heat transfer heat transfer measurements"),
]
JUDGED = [  # q1: d1 relevant, d2 not; q2: d3 and d4 relevant (d4 shares no word with q2)
    ("q1", "boundary layer transition", "d1", 2), ("q1", "boundary layer transition", "d2", 0),
    ("q2", "heat transfer hypersonic", "d3", 1), ("q2", "heat transfer hypersonic", "d4", 1),
]
# the model under test puts the UNJUDGED document first for both queries
RUN = [("q1", "u1", 3.0), ("q1", "d1", 2.0), ("q1", "d2", 1.0),
       ("q2", "u2", 3.0), ("q2", "d3", 2.0), ("q2", "d1", 1.0)]


@pytest.fixture
def setup(workspace, tmp_path):
    text = dict(CORPUS)
    data = tmp_path / "judged.jsonl"
    data.write_text("\n".join(json.dumps({"query_id": q, "query": qt, "doc_id": d,
                                          "document": text[d], "label": lab})
                              for q, qt, d, lab in JUDGED) + "\n")
    ingest_file(workspace, data, "judged")
    cpath = tmp_path / "corpus.jsonl"
    cpath.write_text("\n".join(json.dumps({"doc_id": d, "text": t}) for d, t in CORPUS) + "\n")
    corpora.add_corpus(workspace, cpath, "aero")
    run = tmp_path / "run.jsonl"
    run.write_text("\n".join(json.dumps({"query_id": q, "doc_id": d, "score": s})
                             for q, d, s in RUN) + "\n")
    return run


@pytest.mark.parametrize("first_stage", ["bm25", "run"])
def test_unjudged_count_as_not_relevant(workspace, setup, first_stage):
    spec = EvaluationSpec(
        dataset="judged", model=f"run:{setup}", baselines=["bm25"], split="all",
        metrics=["mrr@10", "ndcg@10"], corpus="aero", top_k=3, save=False,
        first_stage="bm25" if first_stage == "bm25" else f"run:{setup}")
    r = evaluate(workspace, spec)
    fs = r.first_stage
    assert fs["recall@3"] == pytest.approx(0.75)  # q1 1/1, q2 1/2 (d4 never retrieved)
    assert (fs["relevant_judged"], fs["relevant_retrieved"]) == (3, 2)
    per_q = r.per_query.set_index("query_id")
    model = r.model
    # u1/u2 rank first but nobody judged them: not relevant, so the relevant doc is at rank 2
    assert per_q.loc["q1", f"{model}|mrr@10"] == pytest.approx(0.5)
    assert per_q.loc["q2", f"{model}|mrr@10"] == pytest.approx(0.5)
    # q2's missed relevant d4 stays in the ideal ranking: NDCG 0.631/1.631, not 1.0 or 0.631
    ideal = 1 + 1 / math.log2(3)
    assert per_q.loc["q2", f"{model}|ndcg@10"] == pytest.approx((1 / math.log2(3)) / ideal)
    # top 10 of 3 candidates: q1 judged d1, d2 of {u1, d1, d2}; q2 only d3 of {u2, d3, d1}
    assert r.means[model]["judged@10"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert r.means["bm25"]["judged@10"] == pytest.approx(0.5)
    assert "unjudged documents count as not relevant" in r.candidates
    assert r.to_json()["first_stage"]["top_k"] == 3


def test_cli_evaluate_with_corpus(workspace, setup, capsys):
    assert main(["evaluate", "--model", f"run:{setup}", "--baseline", "bm25", "--dataset",
                 "judged", "--split", "all", "--metric", "mrr@10", "--corpus", "aero",
                 "--first-stage", "bm25", "--top-k", "3", "--workspace", str(workspace.root),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["first_stage"]["recall@3"] == pytest.approx(0.75)
    assert out["metrics"]["bm25"]["judged@10"] == pytest.approx(0.5)
    from lib.evaluation.store import load_evaluation

    again = load_evaluation(workspace, out["eval_id"])
    assert again.first_stage["corpus"] == "aero"
    html = (workspace.root / out["files"]["html"]).read_text()
    assert "Judged@10" in html and "First stage" in html
