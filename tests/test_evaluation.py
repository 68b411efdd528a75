"""Evaluation: metric values on hand-computed cases, exclusions, significance with known answers,
run files, BM25, the score cache, window scoring, sanity warnings, the report and the CLI."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from lib.evaluation import EvaluationSpec, evaluate, normalize_metrics
from lib.evaluation.compare import bootstrap_ci, compare_pair, randomization_test, student_test
from lib.evaluation.rankers import (
    RankerSpecError,
    RunFileError,
    load_run_file,
    parse_ranker,
    unique_names,
)
from lib.evaluation.scoring import score_bm25, score_cross_encoder
from lib.ingest import ingest_file

LOG2_3 = math.log2(3)

# q1: a(2) b(0) c(1); q2: d(1) e(0); q3: f(0) g(0) -> no relevant document: excluded
ROWS = [
    ("q1", "a", "wing lift at low speed", "lift of a slender wing at low speed", 2),
    ("q1", "b", "wing lift at low speed", "heat transfer in hypersonic flow", 0),
    ("q1", "c", "wing lift at low speed", "wing theory", 1),
    ("q2", "d", "boundary layer transition", "transition of the boundary layer on a plate", 1),
    ("q2", "e", "boundary layer transition", "<script>alert('x')</script> nozzle design", 0),
    ("q3", "f", "shock tubes", "an unrelated text", 0),
    ("q3", "g", "shock tubes", "another unrelated text", 0),
]


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def tiny_set(tmp_path, workspace):
    path = _write_jsonl(tmp_path / "eval.jsonl", [
        {"query_id": q, "doc_id": d, "query": qt, "document": dt, "label": lab}
        for q, d, qt, dt, lab in ROWS])
    return ingest_file(workspace, path).dataset_id


def _run_file(path, scores: dict):
    return _write_jsonl(path, [{"query_id": q, "doc_id": d, "score": s}
                               for (q, d), s in scores.items()])


# model: q1 ranks b, c, a; q2 ranks d, e.   baseline: q1 ranks a, c, b; q2 ranks e, d.
MODEL = {("q1", "a"): 0.1, ("q1", "b"): 0.9, ("q1", "c"): 0.5, ("q2", "d"): 2.0,
         ("q2", "e"): 1.0, ("q3", "f"): 1.0, ("q3", "g"): 0.0}
BASE = {("q1", "a"): 3.0, ("q1", "b"): 1.0, ("q1", "c"): 2.0, ("q2", "d"): 0.0,
        ("q2", "e"): 5.0, ("q3", "f"): 1.0, ("q3", "g"): 0.0}


def test_hand_computed_metrics_via_run_files(workspace, tiny_set, tmp_path):
    model = _run_file(tmp_path / "model.jsonl", MODEL)
    base = _run_file(tmp_path / "base.jsonl", BASE)
    r = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=[f"run:{base}"], split="all",
        metrics=["ndcg@10", "mrr@10", "p@1"], save=False))
    assert r.n_queries == 2 and r.n_excluded == 1 and r.excluded == ["q3"]
    pq = r.per_query.set_index("query_id")
    m, b = "run:model.jsonl", "run:base.jsonl"
    # q1, model order b(0) c(1) a(2): DCG = 1/log2(3) + 2/log2(4); IDCG = 2 + 1/log2(3)
    ndcg_q1 = (1 / LOG2_3 + 2 / 2) / (2 + 1 / LOG2_3)
    assert pq.at["q1", f"{m}|ndcg@10"] == pytest.approx(ndcg_q1, abs=1e-9)
    assert pq.at["q2", f"{m}|ndcg@10"] == pytest.approx(1.0)
    assert pq.at["q1", f"{m}|mrr@10"] == pytest.approx(0.5)
    # baseline: q1 ideal order (1.0); q2 e(0) d(1): DCG = 1/log2(3), IDCG = 1
    assert pq.at["q1", f"{b}|ndcg@10"] == pytest.approx(1.0)
    assert pq.at["q2", f"{b}|ndcg@10"] == pytest.approx(1 / LOG2_3)
    assert pq.at["q2", f"{b}|mrr@10"] == pytest.approx(0.5)
    assert r.means[m]["precision@1"] == pytest.approx(0.5)
    # the same numbers as ranx directly, over the queries that have a relevant document
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels = Qrels({"q1": {"a": 2, "c": 1}, "q2": {"d": 1}})
    for name, scores in ((m, MODEL), (b, BASE)):
        run = Run({q: {d: s for (qq, d), s in scores.items() if qq == q} for q in ("q1", "q2")},
                  name="x")
        want = ranx_evaluate(qrels, run, ["ndcg@10", "mrr@10"])
        assert r.means[name]["ndcg@10"] == pytest.approx(want["ndcg@10"])
        assert r.means[name]["mrr@10"] == pytest.approx(want["mrr@10"])
    c = r.comparisons[b]["ndcg@10"]
    assert (c.wins, c.ties, c.losses) == (1, 0, 1)
    assert c.delta == pytest.approx(((ndcg_q1 - 1) + (1 - 1 / LOG2_3)) / 2)
    # 2 queries: the exact randomisation test has 4 sign patterns; |mean| >= observed for 2 or 4
    assert c.p_value in (0.5, 1.0)
    out = r.to_json()
    assert set(out["comparison"]["ndcg@10"]) == {"delta", "ci_low", "ci_high", "p_value", "wins",
                                                 "ties", "losses"}
    assert out["n_queries"] == 2 and out["n_excluded"] == 1
    assert "2 (all pairs) queries; 1 excluded" in r.verdict


def test_relevance_threshold_binarises_and_excludes(workspace, tiny_set, tmp_path):
    model = _run_file(tmp_path / "model.jsonl", MODEL)
    base = _run_file(tmp_path / "base.jsonl", BASE)
    r = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=[f"run:{base}"], split="all",
        metrics=["mrr@10"], rel_threshold=2, save=False))
    # only q1 has a label >= 2 (doc a): model puts a third -> MRR 1/3; baseline first -> 1
    assert r.n_queries == 1 and r.n_excluded == 2
    assert r.means["run:model.jsonl"]["mrr@10"] == pytest.approx(1 / 3)
    assert r.means["run:base.jsonl"]["mrr@10"] == pytest.approx(1.0)


def test_randomization_test_known_answers():
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    # all five differences +0.1: only all-plus and all-minus reach |mean| = 0.1 -> 2 / 32
    assert randomization_test(a + 0.1, a) == pytest.approx(2 / 32)
    assert randomization_test(a, a) == 1.0
    # differences 1, 2, 3: patterns with |sum| >= 6 are +++ and --- -> 2 / 8
    assert randomization_test(np.array([1.0, 2, 3]), np.zeros(3)) == pytest.approx(0.25)
    # paired t: d = 1..5 -> t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426, df 4 -> p = 0.013236
    assert student_test(np.arange(1.0, 6.0), np.zeros(5)) == pytest.approx(0.013236, abs=1e-5)


def test_sampled_randomization_is_seeded_and_agrees_with_ranx():
    from ranx.statistical_tests import fisher_randomization_test

    rng = np.random.default_rng(0)
    base = rng.random(40)
    model = base + rng.normal(0.05, 0.2, 40)
    p1 = randomization_test(model, base, 10_000, seed=42)
    assert p1 == randomization_test(model, base, 10_000, seed=42)  # reproducible
    p_ranx, _ = fisher_randomization_test(model, base, 10_000, 0.05, 42)
    assert abs(p1 - p_ranx) < 0.03  # the same test; Monte Carlo error ~0.005 each


def test_bootstrap_ci_and_compare_pair():
    d = np.array([0.1, 0.2, 0.3, 0.0, 0.15, 0.25, 0.05, 0.1])
    lo, hi = bootstrap_ci(d, 5000, seed=1)
    assert lo < d.mean() < hi and lo > 0
    assert (lo, hi) == bootstrap_ci(d, 5000, seed=1)
    pq = pd.DataFrame({"query_id": list("abcdefgh"), "m|ndcg@10": 0.5 + d, "b|ndcg@10": 0.5})
    c = compare_pair(pq, "m", "b", "ndcg@10")
    assert (c.wins, c.ties, c.losses) == (7, 1, 0)
    assert c.rel_change == pytest.approx(d.mean() / 0.5)
    assert c.significant and c.p_value < 0.05


def test_metric_names_are_normalised_or_refused():
    assert normalize_metrics(["ndcg", "p@5", "R@100,mrr"]) == [
        "ndcg@10", "precision@5", "recall@100", "mrr@10"]
    with pytest.raises(ValueError, match="unknown metric 'nDCG@ten'"):
        normalize_metrics(["nDCG@ten"])


def test_run_file_errors_name_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"query_id": "q1", "doc_id": "a", "score": 1}\n'
                 '{"query_id": "q1", "doc_id": "b", "score": "high"}\n'
                 '\n'
                 '{"query_id": "q1", "doc_id": "a", "score": 2}\n'
                 'not json\n', encoding="utf-8")
    with pytest.raises(RunFileError) as err:
        load_run_file(p)
    msg = str(err.value)
    assert "bad.jsonl line 2: field score" in msg
    assert "line 4: field doc_id: (q1, a) already scored on line 1" in msg
    assert "line 5: invalid JSON" in msg


def test_run_file_missing_candidates_rank_last(workspace, tiny_set, tmp_path):
    partial = {k: v for k, v in MODEL.items() if k != ("q1", "b")}  # b was the model's top doc
    partial[("q9", "zz")] = 1.0  # not a candidate: ignored
    model = _run_file(tmp_path / "partial.jsonl", partial)
    r = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=["bm25"], split="all",
        metrics=["ndcg@10"], save=False))
    pq = r.per_query.set_index("query_id")
    # q1 now ranks c(1), a(2), b(0): DCG = 1 + 2/log2(3)
    want = (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
    assert pq.at["q1", "run:partial.jsonl|ndcg@10"] == pytest.approx(want)
    notes = [w.message for w in r.warnings if w.kind == "run_file_coverage"]
    assert notes and "1 labelled candidates are not in the run file" in notes[0]
    assert "1 run entries are not labelled candidates" in notes[0]


def test_parse_rankers(workspace, tiny_model, tmp_path):
    assert parse_ranker("BM25").kind == "bm25"
    assert parse_ranker("bi-encoder").kind == "biencoder"
    r = parse_ranker(str(tiny_model), workspace)
    assert r.kind == "cross-encoder" and r.model_kind == "local"
    assert parse_ranker("default").untrained_head
    assert parse_ranker("org/some-reranker").model_kind == "hub"
    with pytest.raises(RankerSpecError, match="does not exist"):
        parse_ranker("run:/nope/missing.jsonl")
    with pytest.raises(RankerSpecError, match="has no saved model"):
        parse_ranker("checkpoint:run-x", workspace)
    with pytest.raises(ValueError):
        parse_ranker("checkpoint:../../etc", workspace)
    names = [x.name for x in unique_names([parse_ranker("bm25"), parse_ranker("bm25")])]
    assert names == ["bm25", "bm25#2"]


def test_checkpoint_of_a_run_is_listed_with_its_config(workspace, tiny_model):
    import shutil

    from lib.evaluation.rankers import list_checkpoints

    run_dir = workspace.runs_dir / "run-a"
    shutil.copytree(tiny_model, run_dir / "model")
    (run_dir / "config.json").write_text(json.dumps({"base_model": "default", "epochs": 1,
                                                     "seed": 7}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished",
                                                     "best": {"ndcg@10": 0.61}}))
    (c,) = list_checkpoints(workspace)
    assert c.run_id == "run-a" and c.base_model == "default" and c.best_ndcg == 0.61
    r = parse_ranker("checkpoint:run-a", workspace)
    assert r.run_id == "run-a" and r.training["config"]["epochs"] == 1
    assert parse_ranker(str(run_dir / "model"), workspace).name == "checkpoint:run-a"
    # 'default' as its baseline gets the run's seed: its random head is the run's starting point
    from lib.evaluation.pipeline import align_base_heads

    aligned = align_base_heads([r, parse_ranker("default"), parse_ranker("bm25")])
    assert parse_ranker("default").head_seed == 12
    assert [x.head_seed for x in aligned] == [None, 7, None]


def test_bm25_prefers_the_lexical_match():
    pairs = pd.DataFrame({
        "query_id": ["q", "q", "q"], "doc_id": ["x", "y", "z"],
        "query": ["supersonic nozzle flow"] * 3,
        "document": ["wing theory at low speed", "flow in a supersonic nozzle", "heat transfer"],
    })
    scores, stats = score_bm25(pairs)
    assert scores.argmax() == 1 and scores[0] == 0 and stats.n_pairs == 3


def test_cache_scores_only_what_is_new(workspace, tiny_model):
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(tiny_model), local_files_only=True)
    qs = ["wing lift"] * 4
    ds = ["lift of wings", "heat transfer", "boundary layers", "lift of wings"]  # one duplicate
    s1, st1 = score_cross_encoder(workspace, model, "ce:test", qs, ds)
    assert (st1.n_unique, st1.n_cached, st1.n_scored) == (3, 0, 3)
    np.testing.assert_allclose(s1, model.predict(list(zip(qs, ds, strict=True))), rtol=1e-5)
    s2, st2 = score_cross_encoder(workspace, model, "ce:test", qs + ["new q"], ds + ["new d"])
    assert (st2.n_cached, st2.n_scored) == (3, 1)
    np.testing.assert_allclose(s2[:4], s1)
    # another max length or window setting is another cache entry
    _, st3 = score_cross_encoder(workspace, model, "ce:test", qs, ds, window_stride=16)
    assert st3.n_cached == 0 and st3.windowing == "maxp:16"


def test_bf16_scores_are_cached_apart_from_fp32(workspace, tiny_model, monkeypatch):
    """A GPU's bf16 scores must not answer a CPU (fp32) evaluation of the same pairs."""
    from sentence_transformers.cross_encoder import CrossEncoder

    from lib.evaluation import scoring

    model = CrossEncoder(str(tiny_model), local_files_only=True)
    qs, ds = ["wing lift"] * 2, ["lift of wings", "heat transfer"]
    monkeypatch.setattr(scoring, "precision_tag", lambda m: "bf16")  # as on a GPU
    _, gpu = score_cross_encoder(workspace, model, "ce:test", qs, ds)
    monkeypatch.setattr(scoring, "precision_tag", lambda m: "")  # fp32 on a CPU
    _, cpu = score_cross_encoder(workspace, model, "ce:test", qs, ds)
    assert (gpu.n_scored, cpu.n_cached, cpu.n_scored) == (2, 0, 2)
    _, again = score_cross_encoder(workspace, model, "ce:test", qs, ds)
    assert again.n_cached == 2
    assert scoring.cache_setting("none", "bf16") == "none+bf16"
    assert scoring.cache_setting("maxp:16", "") == "maxp:16"  # fp32 keeps the old key


def test_window_scoring_takes_the_best_window(workspace, tiny_model):
    from sentence_transformers.cross_encoder import CrossEncoder

    from lib.windowing import window_pairs

    model = CrossEncoder(str(tiny_model), local_files_only=True, max_length=32)
    doc = " ".join(f"word{i}" for i in range(120))
    scores, st = score_cross_encoder(None, model, "ce:w", ["a query"], [doc], window_stride=8)
    expanded, _ = window_pairs(model.tokenizer, [("a query", doc)], 32, 8)
    assert st.n_windows == len(expanded) > 3
    assert scores[0] == pytest.approx(float(np.max(model.predict(expanded))), rel=1e-5)


def test_report_escapes_documents_and_references_no_external_url(workspace, tiny_set, tmp_path):
    from plotly.offline import get_plotlyjs

    model = _run_file(tmp_path / "model.jsonl", MODEL)
    base = _run_file(tmp_path / "base.jsonl", BASE)
    r = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=[f"run:{base}"], split="all"))
    html = (workspace.root / r.files["html"]).read_text(encoding="utf-8")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html  # shown, escaped
    own = html.replace(get_plotlyjs(), "")
    assert len(own) < len(html) - 1_000_000  # plotly.js is embedded: the file opens offline
    assert not re.search(r"https?://", own), "no external URL outside the plotly.js bundle"
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", own, re.I)
    for key in ("csv", "json", "latex"):
        assert (workspace.root / r.files[key]).is_file()
    tex_text = (workspace.root / r.files["latex"]).read_text()
    assert "run:model.jsonl" in tex_text and "\\toprule" in tex_text
    csv = pd.read_csv(workspace.root / r.files["csv"], dtype={"query_id": str})
    assert list(csv["query_id"]) == ["q1", "q2"]


def test_saved_evaluation_reloads_identically(workspace, tiny_set, tmp_path):
    from lib.evaluation.store import list_evaluations, load_evaluation

    model = _run_file(tmp_path / "model.jsonl", MODEL)
    r = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=["bm25"], split="all"))
    listed = list_evaluations(workspace)
    assert list(listed["eval_id"]) == [r.eval_id]
    back = load_evaluation(workspace, r.eval_id)
    assert back.verdicts == r.verdicts and back.n_excluded == 1
    assert back.to_json()["metrics"] == r.to_json()["metrics"]
    pd.testing.assert_frame_equal(back.per_query, r.per_query)


def test_sanity_constant_scores_and_leakage(workspace, tmp_path):
    from lib import split as split_mod

    rows = []
    for i in range(6):
        sp = "train" if i < 4 else "validation"
        text = "what is wing lift" if i in (0, 4) else f"query number {i} about flow"
        for d in range(3):
            rows.append({"query_id": f"q{i}", "doc_id": f"d{d}", "query": text,
                         "document": f"document {d} about flow and lift {i}", "label": d % 2,
                         "split": sp})
    ds = ingest_file(workspace, _write_jsonl(tmp_path / "leak.jsonl", rows)).dataset_id
    split_mod.make_split(workspace, ds)
    const = _run_file(tmp_path / "const.jsonl", {(r["query_id"], r["doc_id"]): 1.0 for r in rows})
    r = evaluate(workspace, EvaluationSpec(dataset=ds, model=f"run:{const}", baselines=["bm25"],
                                           split="validation", save=False))
    kinds = {w.kind: w for w in r.warnings}
    assert "constant_scores" in kinds
    leak = kinds["leakage"]
    assert leak.details["count"] == 1 and leak.details["kinds"] == {"exact": 1}
    assert "1 of 2 evaluation queries also occur in this dataset's train split" in leak.message


def test_worse_than_base_warning():
    from lib.evaluation.compare import Comparison
    from lib.evaluation.rankers import Ranker
    from lib.evaluation.sanity import worse_than_base_warnings

    model = Ranker("cross-encoder", "checkpoint:r1", "checkpoint:r1", "/x", "local", "r1",
                   {"config": {"base_model": "org/base"}})
    base = Ranker("cross-encoder", "org/base", "org/base", "org/base", "hub")
    c = Comparison("checkpoint:r1", "org/base", "ndcg@10", 0.4, 0.5, -0.1, -0.2, -0.15, -0.05,
                   0.01, True, 2, 0, 8, 10, "fisher", 0.05)
    (w,) = worse_than_base_warnings(model, [base], {"org/base": {"ndcg@10": c}}, "ndcg@10")
    assert w.kind == "worse_than_base" and "below its base model org/base" in w.message
    c.delta = 0.1
    assert worse_than_base_warnings(model, [base], {"org/base": {"ndcg@10": c}}, "ndcg@10") == []


def test_cli_json_matches_the_library(workspace, tiny_set, tmp_path, capsys):
    from lib.cli import main

    model = _run_file(tmp_path / "model.jsonl", MODEL)
    base = _run_file(tmp_path / "base.jsonl", BASE)
    out_html = tmp_path / "out" / "report.html"
    rc = main(["evaluate", "--workspace", str(workspace.root), "--model", f"run:{model}",
               "--baseline", f"run:{base}", "--dataset", str(tmp_path / "eval.jsonl"),
               "--metric", "ndcg", "--metric", "mrr@10", "--report", str(out_html), "--json"])
    assert rc == 0
    cli = json.loads(capsys.readouterr().out)
    lib = evaluate(workspace, EvaluationSpec(
        dataset=tiny_set, model=f"run:{model}", baselines=[f"run:{base}"], split="all",
        metrics=["ndcg@10", "mrr@10"], save=False)).to_json()
    assert cli["metrics"] == lib["metrics"]
    assert cli["comparison"] == lib["comparison"]
    assert (cli["n_queries"], cli["n_excluded"]) == (2, 1)
    assert out_html.is_file() and out_html.stat().st_size > 1_000_000
    assert main(["reports", "--workspace", str(workspace.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["eval_id"] for x in listed] == [cli["eval_id"]]


def test_cli_reports_a_bad_metric(workspace, tiny_set, capsys):
    from lib.cli import main

    rc = main(["evaluate", "--workspace", str(workspace.root), "--model", "bm25",
               "--baseline", "bm25", "--dataset", tiny_set, "--metric", "ndgc@10"])
    assert rc == 2
    assert "unknown metric 'ndgc@10'" in capsys.readouterr().err


def test_base_and_fine_tuned_truncate_at_the_same_length(tiny_model):
    from lib.evaluation.pipeline import shared_max_length

    rankers = [parse_ranker(str(tiny_model)), parse_ranker("default"), parse_ranker("bm25")]
    spec = EvaluationSpec(dataset="x", model=str(tiny_model), baselines=["default", "bm25"])
    # the tiny model truncates at 128: the bundled base (512 positions) is scored at 128 too
    assert shared_max_length(rankers, spec) == {"tiny-ce": 128, "default": 128, "bm25": None}
    spec.max_length = 4096  # capped by each model's position limit
    assert shared_max_length(rankers, spec) == {"tiny-ce": 512, "default": 512, "bm25": None}


def test_ranx_warmup_runs_in_the_background(tmp_path):
    import time

    from lib.evaluation.warmup import warm_ranx_in_background, warmup_state

    state = warm_ranx_in_background(tmp_path / "numba")
    assert warmup_state() is state
    assert warm_ranx_in_background(tmp_path / "other") is state  # once per process
    deadline = time.time() + 180
    while not state.done and time.time() < deadline:
        time.sleep(0.2)
    assert state.done and state.error is None


def test_score_pairs_pipeline_matches_predict_and_falls_back(tiny_model):
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from lib.evaluation.scoring import score_pairs

    model = CrossEncoder(str(tiny_model), local_files_only=True)
    pairs = [(f"query {i % 7}", "word " * (i % 50) + f"doc {i}") for i in range(3000)]
    threads = torch.get_num_threads()
    seen = []
    ours = score_pairs(model, pairs, batch_size=16, on_chunk=lambda lo, s, n: seen.append(lo))
    np.testing.assert_allclose(ours, model.predict(pairs), rtol=1e-5, atol=1e-6)
    assert seen == list(range(0, 3000, 128))  # every chunk reported once, in order
    assert torch.get_num_threads() == threads  # the CPU thread trial is undone

    class PredictOnly:  # no preprocess/forward API: plain predict per batch
        def predict(self, batch, batch_size, show_progress_bar):
            return [float(len(d)) for _, d in batch]

    np.testing.assert_array_equal(score_pairs(PredictOnly(), pairs[:50], batch_size=8),
                                  [float(len(d)) for _, d in pairs[:50]])


def test_score_pairs_raises_the_tokenizer_threads_error(tiny_model):
    from sentence_transformers.cross_encoder import CrossEncoder

    from lib.evaluation.scoring import score_pairs

    model = CrossEncoder(str(tiny_model), local_files_only=True)
    real = model.preprocess
    calls = []

    def failing(batch, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("tokenizer broke")
        return real(batch, **kw)

    model.preprocess = failing
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        score_pairs(model, [("q", f"d {i}") for i in range(200)], batch_size=8)


def test_ranx_calls_from_two_threads_do_not_crash(tmp_path, monkeypatch):
    """The app's background warm-up and a user's evaluation used to compile numba at once."""
    import threading

    import numpy as np
    import pandas as pd

    from lib.evaluation.warmup import warm_ranx
    from lib.metrics import evaluate_rankings

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cold-cache"))  # force fresh compiles
    pairs = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["a", "b", "c"], "label": [1, 0, 2]})
    errors = []

    def work():
        try:
            warm_ranx()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    result = evaluate_rankings(pairs, np.array([0.1, 0.5, 0.9]), ("ndcg@10", "mrr@10"))
    for t in threads:
        t.join()
    assert not errors
    assert result.means["mrr@10"] == 1.0
