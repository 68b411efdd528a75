"""The cold-start recipe and the distillation phase, on the tiny model (CPU, seconds)."""

import json

import numpy as np
import pytest

from lib import corpora
from lib.bootstrap import load_demo
from lib.models import resolve_model
from lib.testing import train_in_process
from lib.training import jobs, runfiles
from lib.training import recipe as cold
from lib.training.config import build_config

TINY = {"max_length": 48, "learning_rate": 1e-3, "max_train_pairs": 120, "device": "cpu",
        "eval_batch_size": 64, "cpu_threads": 1}


@pytest.fixture(scope="module")
def headless(tmp_path_factory, tiny_model):
    """The tiny model saved as a bare encoder (BertModel): no classification head on disk."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("headless") / "enc"
    config = BertConfig.from_pretrained(tiny_model)
    config.architectures = ["BertModel"]
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_detects_a_new_head_from_the_checkpoint(tiny_model, headless):
    assert cold.head_is_new(resolve_model("default"))  # the bundled sentence-embedding model
    assert cold.head_is_new(resolve_model(str(headless)))
    assert not cold.head_is_new(resolve_model(str(tiny_model)))  # a saved cross-encoder


def test_pos_weight_comes_from_the_label_balance():
    assert cold.balance_pos_weight([0, 0, 0, 1]) == 3.0
    assert cold.balance_pos_weight([0, 2, 0, 1, 0, 0]) == 2.0  # any grade > 0 is a positive
    assert cold.balance_pos_weight([0] * 50 + [1]) == 10.0  # clamped
    assert cold.balance_pos_weight([1, 1, 0]) == 1.0  # never down-weights positives
    assert cold.balance_pos_weight([0, 0]) is None


def test_plan_applies_the_recipe_only_to_a_new_head(tiny_model, headless):
    labels = [0, 0, 0, 0, 1]
    auto = build_config({"cold_start": "auto"})
    fresh = cold.plan(auto, resolve_model(str(headless)), labels)
    assert fresh.cold_start and fresh.head_learning_rate == cold.DEFAULT_HEAD_LR
    assert fresh.pos_weight == 4.0 and fresh.early_stopping_patience == cold.DEFAULT_PATIENCE
    trained = cold.plan(auto, resolve_model(str(tiny_model)), labels)
    assert not trained.cold_start and trained.pos_weight is None
    assert cold.learning_rate_mapping(trained) == {}
    forced = cold.plan(build_config({"cold_start": "on", "pos_weight": 2.0,
                                     "head_learning_rate": 5e-4}),
                       resolve_model(str(tiny_model)), labels)
    assert forced.cold_start and forced.pos_weight == 2.0 and forced.head_learning_rate == 5e-4
    off = cold.plan(build_config({"cold_start": "off"}), resolve_model(str(headless)), labels)
    assert not off.cold_start


def test_auto_teacher_distils_the_biencoder_into_a_new_head_only(tiny_model, headless):
    labels = [0, 1]
    auto = build_config({"distill_teacher": "auto"})
    assert cold.plan(auto, resolve_model(str(headless)), labels).distill_teacher == "biencoder"
    assert cold.plan(auto, resolve_model(str(tiny_model)), labels).distill_teacher is None
    off = build_config({"distill_teacher": "auto", "cold_start": "off"})
    assert cold.plan(off, resolve_model(str(headless)), labels).distill_teacher is None
    chosen = build_config({"distill_teacher": "some/cross-encoder"})  # a user's choice stays
    assert cold.plan(chosen, resolve_model(str(tiny_model)), labels).distill_teacher == \
        "some/cross-encoder"
    none = cold.plan(build_config({}), resolve_model(str(headless)), labels)
    assert none.distill_teacher is None and "distil" not in none.summary()
    assert cold.plan(auto, resolve_model(str(headless)), labels).summary().startswith(
        "distil 'biencoder' first, then cold start")


def test_optimizer_has_the_head_rate_and_the_encoder_rate(tiny_model, tmp_path):
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    from lib.models import load_cross_encoder
    from lib.training.worker import build_loss, training_arguments

    cfg = build_config({**TINY, "cold_start": "on", "learning_rate": 3e-5})
    model = load_cross_encoder(resolve_model(str(tiny_model)), max_length=48, device="cpu")
    plan = cold.plan(cfg, resolve_model(str(tiny_model)), [0, 0, 1])
    args = training_arguments(cfg, tmp_path, "fp32", "cpu", False,
                              cold.learning_rate_mapping(plan))
    data = Dataset.from_dict({"query": ["q"], "document": ["d"], "label": [1.0]})
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data,
                                  eval_dataset=data, loss=build_loss(model, cfg, plan.pos_weight))
    optimizer = trainer.create_optimizer()
    head = {id(p) for n, p in model.named_parameters() if n in cold.head_parameter_names(model)}
    assert len(head) == 2  # classifier weight and bias
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[id(p)] = group["lr"]
    assert {rates[i] for i in head} == {1e-3}
    encoder = {rates[id(p)] for p in model.parameters() if id(p) not in head}
    assert encoder == {3e-5}
    assert float(trainer.loss.pos_weight) == 2.0  # 2 negatives : 1 positive


def test_after_distillation_the_label_phase_can_give_the_head_its_own_rate(tiny_model, headless,
                                                                          tmp_path):
    """Distillation trains the new head at the cold-start rate; the label phase that follows
    uses `label_head_learning_rate` for it when set, and nothing changes without a teacher."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    from lib.models import load_cross_encoder
    from lib.training.worker import training_arguments

    labels = [0, 0, 1]
    ref = resolve_model(str(headless))
    cfg = build_config({**TINY, "learning_rate": 3e-5, "distill_teacher": "biencoder",
                        "label_head_learning_rate": 2e-5})
    plan = cold.plan(cfg, ref, labels)
    assert cold.learning_rate_mapping(plan) == {cold.HEAD_PATTERN: cold.DEFAULT_HEAD_LR}
    assert cold.label_learning_rate_mapping(plan) == {cold.HEAD_PATTERN: 2e-5}
    assert plan.summary().endswith("; on the labels, head learning rate 2e-05")
    assert cold.recipe_summary(plan.to_json()) == plan.summary()  # status.json round trip
    assert cold.recipe_summary({**plan.to_json(), "later_field": 1}) == plan.summary()
    unset = cold.plan(build_config({**TINY, "distill_teacher": "biencoder"}), ref, labels)
    assert cold.label_learning_rate_mapping(unset) == cold.learning_rate_mapping(unset)
    no_teacher = cold.plan(build_config({**TINY, "label_head_learning_rate": 2e-5}), ref, labels)
    assert cold.label_learning_rate_mapping(no_teacher) == cold.learning_rate_mapping(no_teacher)

    model = load_cross_encoder(resolve_model(str(tiny_model)), max_length=48, device="cpu")
    args = training_arguments(cfg, tmp_path, "fp32", "cpu", False,
                              cold.label_learning_rate_mapping(plan))
    data = Dataset.from_dict({"query": ["q"], "document": ["d"], "label": [1.0]})
    optimizer = CrossEncoderTrainer(model=model, args=args, train_dataset=data,
                                    eval_dataset=data).create_optimizer()
    head = {id(p) for n, p in model.named_parameters() if n in cold.head_parameter_names(model)}
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {rates[i] for i in head} == {2e-5}
    assert {rates[id(p)] for p in model.parameters() if id(p) not in head} == {3e-5}


def test_distillation_run_lowers_its_loss_against_the_teacher(workspace, tiny_model, headless):
    """A whole worker run: cold start detected on a headless base, `auto` picks the bi-encoder
    teacher, its scores cached in the run dir, MSE against the teacher falls, then label
    fine-tuning."""
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(headless), "epochs": 1, "batch_size": 8,
                        "eval_steps": 50, "logging_steps": 2, "distill_teacher": "auto",
                        "distill_epochs": 10, "distill_docs_per_query": 5,
                        "distill_corpus": "demo-docs", "distill_corpus_top_k": 4,
                        "distill_pseudo_queries": 6})
    corpora.corpus_from_dataset(workspace, "cranfield-demo", "demo-docs")
    created = jobs.create_run(workspace, "cranfield-demo", cfg)
    result = train_in_process(created.run_dir)
    assert result["state"] == "finished"
    status = runfiles.read_status(created.run_dir)
    assert status["recipe"]["cold_start"] and status["recipe"]["head_learning_rate"] == 1e-3
    distilled = status["distillation"]
    assert distilled["mse_after"] < distilled["mse_before"] * 0.9
    records = runfiles.read_progress(created.run_dir)
    start = next(r for r in records if r["kind"] == "start")
    assert start["recipe"]["cold_start"] and start["distillation"] == distilled
    steps = [r for r in records if r["kind"] == "distill"]
    assert len(steps) >= 3
    # the teacher saw training queries and 6 pseudo-queries only, each with its candidates (none
    # for a pseudo-query), its top corpus documents (not labelled for it) and 5 sampled documents
    scores = [json.loads(line) for line in
              (created.run_dir / "distill" / "teacher_scores.jsonl").read_text().splitlines()]
    train_qids = {json.loads(line)["query_id"] for line in
                  (created.run_dir / "data" / "train.jsonl").read_text().splitlines()}
    pseudo = {s["query_id"] for s in scores} - train_qids
    assert {s["query_id"] for s in scores} >= train_qids and len(pseudo) == 6
    assert all(q.startswith("pseudo:") for q in pseudo)
    n_corpus = len((created.run_dir / "data" / "distill_corpus.jsonl").read_text().splitlines())
    assert 0 < distilled["corpus_pairs"] == n_corpus <= 4 * (len(train_qids) + 6)
    assert len(scores) == distilled["pairs"] == created.train_pairs + n_corpus + \
        5 * (len(train_qids) + 6)
    card = (created.run_dir / "model" / "README.md").read_text()
    assert "validation, after distilling, before the labels (step 0)" in card
    assert np.isfinite([s["teacher_score"] for s in scores]).all()
    assert any(r["kind"] == "train" for r in records)  # then the label phase ran
    shown = cold.recipe_summary(status["recipe"], distilled)  # the Train page's line
    assert "head learning rate 0.001" in shown and "from 'biencoder'" in shown
    pseudo_corpus = sum(1 for line in (created.run_dir / "data" / "distill_corpus.jsonl")
                        .read_text().splitlines()
                        if json.loads(line)["query_id"].startswith("pseudo:"))
    n_pseudo = sum(1 for s in scores if s["query_id"].startswith("pseudo:"))
    assert (distilled["pseudo_queries"], distilled["pseudo_pairs"]) == (6, n_pseudo)
    assert n_pseudo == pseudo_corpus + 5 * 6  # its top corpus documents and 5 sampled ones
    assert (f"({n_corpus - pseudo_corpus} corpus documents of training queries, "
            f"{n_pseudo} for 6 pseudo-queries)") in shown


def test_distillation_corpus_adds_top_documents_of_training_queries_only(workspace, tiny_model):
    """The launcher's corpus pairs: BM25's top-k for each training query, minus what is labelled
    for that query and minus every document labelled for a held-out query; never a validation
    query. An unknown corpus or a corpus without a teacher is refused before a run exists."""
    from lib.first_stage import get_retriever
    from lib.split import load_split_pairs
    from lib.training.config import ConfigError

    load_demo(workspace)
    corpora.corpus_from_dataset(workspace, "cranfield-demo", "demo-docs")
    cfg = build_config({**TINY, "base_model": str(tiny_model), "distill_teacher": "biencoder",
                        "distill_corpus": "demo-docs", "distill_corpus_top_k": 10})
    created = jobs.create_run(workspace, "cranfield-demo", cfg, enqueue=False)
    found = [json.loads(line) for line in
             (created.run_dir / "data" / "distill_corpus.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in
             (created.run_dir / "data" / "train.jsonl").read_text().splitlines()]
    pairs = load_split_pairs(workspace, "cranfield-demo")
    held = pairs[pairs["split"] != "train"]
    labelled = {(r["query_id"], r["doc_id"]) for r in train}
    assert found and {r["query_id"] for r in found} <= {r["query_id"] for r in train}
    assert not {r["query_id"] for r in found} & set(held["query_id"])
    assert not {(r["query_id"], r["doc_id"]) for r in found} & labelled
    assert not {r["doc_id"] for r in found} & set(held["doc_id"])
    assert not {r["document"] for r in found} & set(held["document"])
    meta = json.loads((created.run_dir / "data" / "meta.json").read_text())
    assert meta["distill_corpus"] == {"corpus": "demo-docs", "retriever": "bm25", "top_k": 10,
                                      "pairs": len(found), "pseudo_queries": 0,
                                      "pseudo_pairs": 0}
    # independently: one query's kept documents are exactly its BM25 top 10 minus the exclusions
    qid = found[0]["query_id"]
    query = next(r["query"] for r in train if r["query_id"] == qid)
    corpus = corpora.get_corpus(workspace, "demo-docs")
    pos, _ = get_retriever(workspace, corpus, "bm25").search([query], 10)
    top = corpora.docs_at(workspace, corpus, pos[0]).set_index("pos").loc[pos[0]]
    expect = [d for d, t in zip(top["doc_id"], top["text"], strict=True)
              if (qid, d) not in labelled and d not in set(held["doc_id"])
              and t not in set(held["document"])]
    assert [r["doc_id"] for r in found if r["query_id"] == qid] == expect
    assert [r["rank"] for r in found if r["query_id"] == qid] == sorted(
        r["rank"] for r in found if r["query_id"] == qid)

    # teacher 'auto' on a base with a trained head distils nothing: no corpus retrieval either;
    # with the cold-start recipe forced on, 'auto' distils the bi-encoder and the corpus is used
    for cold_start, used in (("auto", False), ("on", True)):
        run = jobs.create_run(workspace, "cranfield-demo", build_config(
            {**TINY, "base_model": str(tiny_model), "distill_teacher": "auto",
             "distill_corpus": "demo-docs", "distill_corpus_top_k": 10,
             "cold_start": cold_start}), enqueue=False)
        assert (run.run_dir / "data" / "distill_corpus.jsonl").is_file() == used
        meta = json.loads((run.run_dir / "data" / "meta.json").read_text())
        assert (meta["distill_corpus"] is not None) == used

    runs_before = set(workspace.runs_dir.iterdir())
    with pytest.raises(ConfigError, match="set distill_teacher too"):
        jobs.create_run(workspace, "cranfield-demo", build_config(
            {**TINY, "base_model": str(tiny_model), "distill_corpus": "demo-docs"}))
    with pytest.raises(LookupError, match="no corpus 'nope'"):
        jobs.create_run(workspace, "cranfield-demo", build_config(
            {**TINY, "base_model": str(tiny_model), "distill_teacher": "biencoder",
             "distill_corpus": "nope"}))
    assert set(workspace.runs_dir.iterdir()) == runs_before


def test_pseudo_queries_are_first_sentences_of_documents_no_held_out_query_judged(
        workspace, tiny_model):
    """distill_pseudo_queries: N corpus documents (seeded) become queries (their first sentence)
    with their BM25 top-k; a document labelled for a validation query is neither a source nor a
    candidate. Without a corpus the setting is refused before a run exists."""
    from lib.split import load_split_pairs
    from lib.training.config import ConfigError
    from lib.training.distill_corpus import first_sentence

    assert first_sentence("a wing in a slipstream . an experimental study of a wing") == \
        "a wing in a slipstream ."
    assert first_sentence("one two three", max_words=2) == "one two"
    load_demo(workspace)
    corpora.corpus_from_dataset(workspace, "cranfield-demo", "demo-docs")
    values = {**TINY, "base_model": str(tiny_model), "distill_teacher": "biencoder",
              "distill_corpus": "demo-docs", "distill_corpus_top_k": 5,
              "distill_pseudo_queries": 40}

    def made(seed):
        run = jobs.create_run(workspace, "cranfield-demo", build_config({**values, "seed": seed}),
                              enqueue=False)
        meta = json.loads((run.run_dir / "data" / "meta.json").read_text())["distill_corpus"]
        rows = [json.loads(x) for x in
                (run.run_dir / "data" / "distill_corpus.jsonl").read_text().splitlines()]
        return meta, [r for r in rows if r["query_id"].startswith("pseudo:")]

    meta, pseudo = made(3)
    pairs = load_split_pairs(workspace, "cranfield-demo")
    held = pairs[pairs["split"] != "train"]
    texts = dict(zip(pairs["doc_id"], pairs["document"], strict=False))
    sources = {r["query_id"].removeprefix("pseudo:") for r in pseudo}
    assert len(sources) == meta["pseudo_queries"] == 40 and meta["pseudo_pairs"] == len(pseudo)
    assert not sources & set(held["doc_id"]) and not {r["doc_id"] for r in pseudo} & set(
        held["doc_id"])
    for r in pseudo:
        assert r["query"] == first_sentence(texts[r["query_id"].removeprefix("pseudo:")])
    assert made(3)[1] == pseudo and made(4)[1] != pseudo  # seeded
    with pytest.raises(ConfigError, match="set distill_corpus too"):
        jobs.create_run(workspace, "cranfield-demo", build_config(
            {**values, "distill_corpus": None}))


def test_distillation_targets_are_standardised_within_each_query():
    from lib.training.distill import standardise

    # query b's cosines all sit 0.5 higher: per query, that offset is not a target
    raw = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    qids = ["a", "a", "a", "b", "b", "b"]
    z = np.sqrt(1.5)  # population std of (-1, 0, 1) is sqrt(2/3)
    np.testing.assert_allclose(standardise(raw, qids), [-z, 0, z, -z, 0, z], atol=1e-9)
    # without query ids: one global z-score, the offset stays in the targets
    glob = standardise(raw)
    assert glob[3] > glob[2] and abs(glob.mean()) < 1e-9


def test_a_distilled_model_that_scores_above_every_checkpoint_is_the_model_kept(
        workspace, tiny_model, headless, monkeypatch, capsys):
    """The trainer's best-checkpoint choice never sees step 0. When every checkpoint scores
    below the distilled start on validation, the model shipped is the distilled one. The tiny
    model learns too little to make that happen on purpose, so step 0's validation is given a
    perfect ranking (the labels as scores); the later validations score the real model."""
    from safetensors.numpy import load_file

    from lib.training.callbacks import RankingEvaluator

    real_score = RankingEvaluator.score
    calls = []

    def score(self, model):
        calls.append(1)
        if len(calls) == 1:
            return self.pairs["label"].to_numpy(dtype=float)
        return real_score(self, model)

    monkeypatch.setattr(RankingEvaluator, "score", score)
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(headless), "epochs": 1, "batch_size": 8,
                        "eval_steps": 5, "logging_steps": 5, "distill_teacher": "biencoder",
                        "distill_epochs": 1, "distill_docs_per_query": 2})
    created = jobs.create_run(workspace, "cranfield-demo", cfg)
    result = train_in_process(created.run_dir)
    assert result["state"] == "finished"
    evals = [r for r in runfiles.read_progress(created.run_dir) if r["kind"] == "eval"]
    start, later = evals[0], evals[1:]
    assert start["step"] == 0 and start["ndcg@10"] == pytest.approx(1.0) and len(later) >= 2
    assert max(e["ndcg@10"] for e in later) < 1.0
    assert result["best"]["step"] == 0 and result["best_checkpoint"] == 0
    assert result["best"]["ndcg@10"] == pytest.approx(1.0) and result["model_is_best"]
    shipped = load_file(created.run_dir / "model" / "model.safetensors")
    kept = load_file(created.run_dir / runfiles.START_MODEL / "model.safetensors")
    last = load_file(created.run_dir / f"checkpoint-{later[-1]['step']}" / "model.safetensors")
    assert shipped.keys() == kept.keys()
    assert all(np.array_equal(shipped[k], kept[k]) for k in kept)
    assert not all(np.array_equal(shipped[k], last[k]) for k in last)
    card = (created.run_dir / "model" / "README.md").read_text()
    assert "| validation, this model (step 0) | 1.0000 |" in card
    assert "above every checkpoint" in capsys.readouterr().out  # the worker's log line


def test_distillation_on_the_fast_path_trains_the_same_model_as_the_stock_path(
        tmp_path, tiny_model, headless):
    """Distillation now tokenises its pairs once (the label phase's fast path) instead of in
    every step, and keeps the stock sampler's batches: the distilled weights match the stock
    path's (pretokenize off), so the speed-up changes no number; the record says which path
    ran."""
    import pandas as pd
    import torch
    from transformers import set_seed

    from lib.demo_data import DEMO_DATASET_PATH
    from lib.models import load_cross_encoder
    from lib.training.distill import run_distillation

    rows = pd.read_json(DEMO_DATASET_PATH, lines=True, dtype={"query_id": str, "doc_id": str})
    train = rows[rows["query_id"].isin(sorted(rows["query_id"].unique())[:6])]
    got, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker would (TINY's cpu_threads); restored below
    try:
        for pretokenize in (False, True):
            cfg = build_config({**TINY, "batch_size": 8, "distill_epochs": 8, "logging_steps": 2,
                                "distill_docs_per_query": 2, "pretokenize": pretokenize})
            set_seed(cfg.seed)
            model = load_cross_encoder(resolve_model(str(headless)), max_length=48, device="cpu")
            run_dir = tmp_path / f"pretokenize-{pretokenize}"
            record = run_distillation(model, train, cfg, run_dir, teacher=str(tiny_model),
                                      device="cpu", precision="fp32", log=lambda _msg: None)
            got[pretokenize] = record, {k: v.detach().clone()
                                        for k, v in model.model.state_dict().items()}
    finally:
        torch.set_num_threads(threads)
    (stock, stock_w), (fast, fast_w) = got[False], got[True]
    assert fast["batching"]["pretokenized"] and not stock["batching"]["pretokenized"]
    assert not fast["batching"]["length_bucketing"]  # the stock batches, even though the config
    assert build_config({}).length_bucketing          # buckets the label phase's
    assert (run_dir / "distill" / "tokens").is_dir()  # tokenised once, cached in the run
    assert stock["mse_after"] < stock["mse_before"]  # it trained
    assert fast["mse_after"] == pytest.approx(stock["mse_after"], abs=1e-4)
    for name, w in stock_w.items():
        torch.testing.assert_close(fast_w[name], w, rtol=1e-3, atol=1e-4)
