"""The fast path: pre-tokenised pairs equal CrossEncoder's own tokens, losses equal the stock
path's, length buckets cut padding, pre-tokenised scoring equals predict."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.training import fastpath, tokenized
from lib.training.config import LOSSES, build_config
from lib.training.worker import build_loss, build_train_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    df = pd.read_json(ROOT / "data" / "cranfield.jsonl", lines=True,
                      dtype={"query_id": str, "doc_id": str})
    return df[df["query_id"].isin(df["query_id"].unique()[:6])].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(tiny_model):
    from sentence_transformers.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    m = CrossEncoder(str(tiny_model), max_length=48)  # short: truncation happens
    m.eval()  # no dropout: stock and pre-tokenised forwards must match exactly
    return m


def _pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(df["query"], df["document"], strict=True))


@pytest.mark.parametrize("prompt", [None, "Rank: "])
def test_token_ids_equal_model_preprocess(model, demo, prompt):
    pairs = _pairs(demo)[:40]
    rows = tokenized.tokenize_pairs(model, pairs, prompt=prompt, chunk=7)
    assert len(rows) == len(pairs)
    for i, pair in enumerate(pairs):
        ref = model.preprocess([pair], prompt=prompt)
        assert rows.pair(i) == ref["input_ids"][0].tolist()
        assert rows.types[rows.starts[i]:rows.starts[i + 1]].tolist() == \
            ref["token_type_ids"][0].tolist()
    assert rows.lengths.max() == 48  # truncated to the model's max length, as preprocess does
    batch = rows.collate([0, 5, 9])
    assert batch["input_ids"].shape[1] % 8 == 0
    ref = model.preprocess([pairs[0], pairs[5], pairs[9]], prompt=prompt)
    width = ref["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:, :width], ref["input_ids"])
    assert torch.equal(batch["attention_mask"][:, :width], ref["attention_mask"])
    assert not batch["attention_mask"][:, width:].any()


def test_tokens_are_cached_in_the_run_dir(model, demo, tmp_path):
    pairs = _pairs(demo)[:30]
    first, cached = tokenized.cached_tokenize(model, pairs, tmp_path / "tokens")
    assert not cached and len(list((tmp_path / "tokens").glob("train-*.npz"))) == 1
    again, cached = tokenized.cached_tokenize(model, pairs, tmp_path / "tokens")
    assert cached and np.array_equal(again.ids, first.ids)
    assert np.array_equal(again.starts, first.starts)
    _, cached = tokenized.cached_tokenize(model, pairs[:-1], tmp_path / "tokens")
    assert not cached  # other text: tokenised again


def test_length_buckets_are_seeded_complete_and_cut_padding():
    lengths = np.random.default_rng(0).integers(20, 512, size=1000)
    sampler = fastpath.LengthBucketBatchSampler(lengths, 16, seed=3)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler) == 63
    assert batches == fastpath.LengthBucketBatchSampler(lengths, 16, seed=3).batches()
    sampler.set_epoch(1)
    assert sampler.batches() != batches  # a new order every epoch
    ours = tokenized.padding_share(lengths, batches, 8)
    rand = tokenized.padding_share(lengths, fastpath.random_batches(1000, 16, 3))
    assert ours < 0.03 and rand > 0.3
    # not sorted through the epoch: consecutive batches jump around in length
    means = [lengths[b].mean() for b in batches[:20]]
    assert not (np.all(np.diff(means) >= 0) or np.all(np.diff(means) <= 0))


def test_ddp_ranks_get_as_many_full_batches_each():
    """Under DDP the batches are dealt round-robin to the ranks: a short last batch or an odd
    count gives ranks different work and the all-reduce hangs (seen with Ray Train, 2 workers)."""
    lengths = np.random.default_rng(1).integers(20, 300, size=1003)
    single = fastpath.LengthBucketBatchSampler(lengths, 16, seed=5).batches()
    assert len(single) == 63 and min(len(b) for b in single) == 1003 - 62 * 16  # kept alone
    for world in (2, 3, 4):
        sampler = fastpath.LengthBucketBatchSampler(lengths, 16, seed=5, world_size=world)
        batches = sampler.batches()
        assert len(batches) == len(sampler) == 62 - 62 % world
        assert {len(b) for b in batches} == {16}
        shards = [batches[r::world] for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # every rank the same number of steps
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))  # nothing twice; only the remainder is left out
        assert len(seen) >= 1003 - 16 * world


def _loss_pair(model, loss_name: str, dataset, store):
    cfg = build_config({"loss": loss_name})
    stock = build_loss(model, cfg)
    return stock, fastpath.PretokenizedLoss(stock)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_every_loss_equals_the_stock_path(model, demo, loss_name, tmp_path):
    cfg = build_config({"loss": loss_name})
    dataset = build_train_dataset(demo, cfg, max_label=4)
    store = fastpath.build_store(model, dataset, tmp_path)
    collate = fastpath.PretokenizedCollator(store)
    stock = build_loss(model, cfg)
    wrapped = fastpath.PretokenizedLoss(stock)
    rows = [dataset[i] for i in range(min(len(dataset), 8 if cfg.listwise else 16))]
    batch = collate(rows)
    labels = batch.pop("label")
    inputs = list(batch.values())
    assert inputs[-1]["input_ids"].shape[1] % 8 == 0
    ours = wrapped(inputs, labels)
    ref = stock(inputs[:-1], labels)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    ours.backward()  # gradients flow through the pre-tokenised path
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    assert "preprocess" not in model.__dict__  # the stock preprocess is back


def test_float_label_losses_plug_in(model, demo, tmp_path):
    """Distillation losses (MSE on teacher scores, MarginMSE on (query, pos, neg)) work too."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import losses

    teacher = np.linspace(-3, 3, len(demo)).tolist()
    ds = Dataset.from_dict({"query": list(demo["query"]), "document": list(demo["document"]),
                            "score": teacher})
    half = len(demo) // 2
    triples = Dataset.from_dict({"query": list(demo["query"][:half]),
                                 "positive": list(demo["document"][:half]),
                                 "negative": list(demo["document"][half:2 * half]),
                                 "score": teacher[:half]})
    for data, loss in ((ds, losses.MSELoss(model)), (triples, losses.MarginMSELoss(model))):
        store = fastpath.build_store(model, data, tmp_path / type(loss).__name__)
        batch = fastpath.PretokenizedCollator(store)([data[i] for i in range(12)])
        labels = batch.pop("label")
        inputs = list(batch.values())
        ours = fastpath.PretokenizedLoss(loss)(inputs, labels)
        assert ours.item() == pytest.approx(loss(inputs[:-1], labels).item(), rel=1e-5)


def test_pretokenized_scoring_equals_predict(model, demo):
    from lib.training.callbacks import RankingEvaluator

    pairs = _pairs(demo)
    ref = model.predict(pairs, batch_size=16, show_progress_bar=False)
    rows = tokenized.tokenize_pairs(model, pairs, prompt=tokenized.predict_prompt(model))
    np.testing.assert_allclose(tokenized.score_rows(model, rows, batch_size=16), ref, atol=1e-5)
    evaluator = RankingEvaluator(demo, batch_size=16)
    np.testing.assert_allclose(evaluator.score(model), ref, atol=1e-5)
    evaluator(model)
    assert evaluator.last_pairs_per_s > 0 and evaluator.last.n_queries == 6
