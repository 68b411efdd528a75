"""The bar to beat: a run's BM25 / bi-encoder figures equal an independent evaluation of the same
rankers on exactly the run's validation pairs, and reach --json, the DB, the card and the page."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from lib import cli, db
from lib.bootstrap import load_demo
from lib.evaluation.rankers import BIENCODER, Ranker, parse_ranker
from lib.evaluation.scoring import score_ranker
from lib.evaluation.verdicts import build_verdict
from lib.metrics import evaluate_rankings
from lib.testing import build_tiny_bi_encoder
from lib.training import baselines, jobs, runfiles
from lib.training.worker import load_pairs
from lib.workspace import ENV_VAR, resolve_workspace

TINY = {"max_length": 48, "learning_rate": 1e-3, "max_train_pairs": 120, "device": "cpu",
        "eval_batch_size": 64, "cpu_threads": 1, "epochs": 1, "batch_size": 8,
        "eval_steps": 10, "logging_steps": 5}


@pytest.fixture(scope="module")
def bar_run(tmp_path_factory, tiny_model):
    """One CLI `train --json` run of the tiny model whose bar uses a tiny bi-encoder."""
    tmp = tmp_path_factory.mktemp("bar")
    bi = build_tiny_bi_encoder(tmp / "tiny-bi")
    ws = resolve_workspace(tmp / "ws")
    load_demo(ws)
    argv = ["train", "--workspace", str(ws.root), "--dataset", "cranfield-demo", "--json",
            "--set", f"base_model={tiny_model}"]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(baselines.BIENCODER_ENV, str(bi))
        with contextlib.redirect_stdout(out):
            rc = cli.main(argv)
    return ws, rc, json.loads(out.getvalue().strip().splitlines()[-1]), bi


def test_bar_equals_an_independent_evaluation_on_the_same_pairs(bar_run):
    ws, rc, result, bi = bar_run
    assert rc == 0, result
    run_dir = jobs.run_dir_of(ws, result["run_id"])
    val = load_pairs(run_dir / runfiles.DATA / "validation.jsonl")  # what the trainer validated
    expected = {}
    for name, ranker in (("bm25", parse_ranker("bm25")),
                         ("biencoder", Ranker(BIENCODER, str(bi), "bi", path=str(bi),
                                              model_kind="local"))):
        scores, _ = score_ranker(None, ranker, val)
        expected[name] = evaluate_rankings(val, scores, ("ndcg@10", "mrr@10")).means
    got = result["baselines"]
    assert set(got) == {"bm25", "biencoder"}
    for name in got:
        for m in ("ndcg@10", "mrr@10"):
            assert got[name][m] == pytest.approx(expected[name][m], abs=1e-6)
    best = result["best"]["ndcg@10"]
    assert result["beats"] == {k: best > v["ndcg@10"] for k, v in got.items()}
    assert result["beat_summary"].startswith(f"Best validation NDCG@10 {best:.4f}")
    # cached in the run dir, measured on exactly those pairs
    cached = baselines.read_baselines(run_dir)
    assert cached["n_pairs"] == len(val) and cached["n_queries"] == result["validation_queries"]
    # ingested into the runs table
    with db.connect(ws) as con:
        row = con.execute("SELECT bm25_ndcg10, bm25_mrr10, biencoder_ndcg10, biencoder_mrr10 "
                          "FROM runs WHERE run_id = ?", [result["run_id"]]).fetchone()
    assert row == pytest.approx((got["bm25"]["ndcg@10"], got["bm25"]["mrr@10"],
                                 got["biencoder"]["ndcg@10"], got["biencoder"]["mrr@10"]))
    # the model card
    card = (run_dir / "model" / "README.md").read_text(encoding="utf-8")
    assert "The bar to beat" in card and f"{got['bm25']['ndcg@10']:.4f}" in card
    record = json.loads(card.split("```json")[-1].split("```")[0])
    assert record == {"baselines": got, "beats": result["beats"]}


def test_cached_bar_is_reused_only_for_the_same_pairs(bar_run, monkeypatch):
    ws, _, result, bi = bar_run
    run_dir = jobs.run_dir_of(ws, result["run_id"])
    val = load_pairs(run_dir / runfiles.DATA / "validation.jsonl")
    monkeypatch.setenv(baselines.BIENCODER_ENV, str(bi))
    calls = []
    monkeypatch.setattr(baselines, "compute_baselines",
                        lambda pairs, device=None: calls.append(len(pairs)) or {"x": 1})
    baselines.baselines_for_run(run_dir, val)
    assert calls == []  # same pairs, same models: the cached file
    baselines.baselines_for_run(run_dir, val.iloc[:-1])
    assert calls == [len(val) - 1]


def test_train_page_draws_the_bar_and_says_whether_it_was_beaten(bar_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    ws, _, result, _ = bar_run
    monkeypatch.setenv(ENV_VAR, str(ws.root))
    page = Path(__file__).resolve().parents[1] / "pages" / "train.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"NDCG@10 BM25", "NDCG@10 bi-encoder"} <= set(table.columns)
    texts = " ".join(x.value for x in [*at.error, *at.success])
    beaten = result["beats"]
    if all(beaten.values()):
        assert "beats" in texts
    else:
        assert "LOSES to" in texts
        assert any("Next to try" in t.value for t in at.text)


def test_verdict_names_causes_and_next_steps():
    v = build_verdict("checkpoint:r1", 0.55, {"bm25": 0.77, "biencoder": 0.82},
                      untrained_head=True, start_value=0.54, train_pairs=2449,
                      train_queries=300, epochs=1,
                      check_findings=["at max length 256, 30% of relevant pairs are truncated"])
    assert v.lost and set(v.loses_to) == {"bm25", "biencoder"}
    text = v.as_text()
    assert "LOSES to BM25 (0.7700) and the zero-shot bi-encoder (0.8200)" in text
    for cause in ("no trained reranker head", "barely moved", "2,449 pairs", "truncated"):
        assert cause in text
    for step in ("fuse:checkpoint:r1+biencoder", "distillation", "more epochs", "max length"):
        assert step in text
    won = build_verdict("m", 0.9, {"bm25": 0.77, "biencoder": None})
    assert not won.lost and won.causes == [] and "beats BM25" in won.headline
    assert build_verdict("m", None, {"bm25": 0.7}) is None
    assert build_verdict("m", 0.5, {}) is None


def test_a_run_that_beats_the_bar_says_its_figure_was_chosen_on_those_queries(workspace):
    """A run's best validation NDCG@10 is picked on the queries it is compared on and is not
    significance-tested: the Train page's win says so and points to the paired test."""
    from lib.training.baselines import run_verdict

    run_dir = workspace.runs_dir / "run-x"
    run_dir.mkdir(parents=True)
    bar = {"bm25": {"ndcg@10": 0.40, "mrr@10": 0.6}, "biencoder": {"ndcg@10": 0.61, "mrr@10": 0.7}}
    won = run_verdict(workspace, run_dir, {"baselines": bar,
                                           "best": {"ndcg@10": 0.63, "n_queries": 45}})
    assert not won.lost and "beats BM25 (0.4000) and the zero-shot bi-encoder" in won.headline
    assert "chosen on these same queries" in won.headline and "Evaluate" in won.headline
    lost = run_verdict(workspace, run_dir, {"baselines": bar,
                                            "best": {"ndcg@10": 0.58, "n_queries": 45}})
    assert lost.lost and "chosen on these same queries" not in lost.headline


def test_fusion_of_a_checkpoint_is_saved_with_the_model_and_served(bar_run):
    from lib.evaluation import EvaluationSpec, evaluate
    from lib.evaluation.playground import rank_documents

    ws, _, result, _ = bar_run
    spec = f"fuse:checkpoint:{result['run_id']}+bm25"
    res = evaluate(ws, EvaluationSpec(dataset="cranfield-demo", model=spec,
                                      baselines=["bm25"], split="validation", save=True))
    fit = res.rankers[0]["stats"]["fusion"]
    saved = json.loads((Path(result["model_path"]) / "fusion.json").read_text())
    stage = saved["first_stages"]["bm25"]
    assert stage["weight"] == fit["weight"] and stage["normalisation"] == "zscore"
    assert "cross-validation" in stage["reported_on"]
    honest = res.to_json()["honest_verdict"]
    assert honest is not None and set(honest["loses_to"]) | set(honest["beats"]) == {"bm25"}
    html = (ws.root / res.files["html"]).read_text(encoding="utf-8")
    assert f"Fusion {spec}" in html and "chosen on" in html
    play = rank_documents(ws, "lift of a wing", ["wing lift theory", "heat transfer"],
                          [spec, "bm25"])
    assert f"weight {fit['weight']:g}" in play.stats[play.rankers[0].name].note
    assert "saved weight" in play.stats[play.rankers[0].name].note
