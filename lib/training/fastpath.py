"""The worker's fast training path: pre-tokenised rows, length-bucketed batches, any CE loss.

Why each piece:
- `LengthBucketBatchSampler`: random batches of mixed lengths are mostly padding at long max
  lengths; grouping similar lengths (seeded, shuffled within equal-length buckets, then the
  batches shuffled) removes it without ordering the epoch by length.
- `PretokenizedCollator`: pads token tensors (to a multiple of 8) in the data loader, so the loss
  never tokenises on the main thread; the texts travel along for the loss's own bookkeeping.
- `PretokenizedLoss`: wraps ANY sentence-transformers cross-encoder loss (BCE, LambdaLoss,
  ListNetLoss, MSELoss, MarginMSELoss, ...). While the wrapped loss runs, `model.preprocess`
  answers from the batch's tensors (looked up by the pair's text), so the loss computes exactly
  what it computes on the stock path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.training.tokenized import (
    PAD_MULTIPLE,
    TokenRows,
    Unsupported,
    cached_tokenize,
    padding_share,
)

TOKENS_DIR = "tokens"
FEATURES_KEY = "_features"  # last key of a batch: compute_loss hands values over in order
LABEL_COLUMNS = ("label", "labels", "score", "scores")


# ---- rows of the dataset -> pairs ---------------------------------------------------------------


def row_pairs(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The (query, document) pairs a CE loss forms from one dataset row: the first column is the
    query, every other non-label column a document or a list of documents."""
    cols = [k for k in row if k not in LABEL_COLUMNS and k != "dataset_name"]
    query = row[cols[0]]
    out: list[tuple[str, str]] = []
    for c in cols[1:]:
        docs = row[c]
        out.extend((query, d) for d in ([docs] if isinstance(docs, str) else docs))
    return out


@dataclass
class PairStore:
    """Every pair of the dataset, tokenised once; which pairs each row holds; text -> pair."""

    rows: TokenRows
    row_starts: np.ndarray  # row r owns pairs row_starts[r]:row_starts[r+1]
    lookup: dict[tuple[str, str], int]
    from_cache: bool = False

    @property
    def row_lengths(self) -> np.ndarray:
        """A row's token length for bucketing: its longest pair."""
        lens = self.rows.lengths
        return np.array([int(lens[a:b].max()) if b > a else 0
                         for a, b in zip(self.row_starts[:-1], self.row_starts[1:], strict=True)])


def build_store(model, dataset, cache_dir: Path | None, prompt: str | None = None) -> PairStore:
    pairs: list[tuple[str, str]] = []
    row_starts = [0]
    for row in dataset:
        pairs.extend(row_pairs(row))
        row_starts.append(len(pairs))
    rows, cached = cached_tokenize(model, pairs, cache_dir, prompt=prompt, name="train")
    lookup: dict[tuple[str, str], int] = {}
    for i, p in enumerate(pairs):
        lookup.setdefault(p, i)
    return PairStore(rows, np.asarray(row_starts, dtype=np.int64), lookup, cached)


# ---- batches -------------------------------------------------------------------------------------


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """Seeded batches of similar length: a random permutation, stably sorted by length bucket
    (rows of one bucket stay in random order), cut into batches, batches shuffled. Same seed and
    epoch, same batches: a resume skips exactly the batches already trained on."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 drop_last: bool = False, bucket_width: int = PAD_MULTIPLE, world_size: int = 1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        # Under DDP the batches are dealt out round-robin to the ranks: a short last batch, or a
        # count not divisible by the world size, gives ranks different work and the gradient
        # all-reduce waits forever. So then: full batches only, as many for every rank.
        self.world_size = max(1, int(world_size))
        self.drop_last = drop_last or self.world_size > 1
        self.bucket_width = max(1, int(bucket_width))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        perm = rng.permutation(len(self.lengths))
        buckets = -(-self.lengths[perm] // self.bucket_width)
        ordered = perm[np.argsort(buckets, kind="stable")]
        out = [ordered[i:i + self.batch_size].tolist()
               for i in range(0, len(ordered), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        out = [out[i] for i in rng.permutation(len(out))]
        return out[:len(out) - len(out) % self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        n = len(self.lengths)
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return full - full % self.world_size


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


class PretokenizedCollator:
    """The stock collator's batch (texts and labels) plus padded token tensors of its pairs."""

    valid_label_columns = list(LABEL_COLUMNS)

    def __init__(self, store: PairStore, multiple: int = PAD_MULTIPLE):
        self.store = store
        self.multiple = multiple

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        cols = list(features[0].keys())
        if "dataset_name" in cols:
            cols.remove("dataset_name")
            batch["dataset_name"] = features[0]["dataset_name"]
        for name in LABEL_COLUMNS:  # as CrossEncoderDataCollator does
            if name in cols:
                labels = [row[name] for row in features]
                if isinstance(labels[0], torch.Tensor):
                    batch["label"] = torch.stack(labels) if labels[0].ndim == 0 else labels
                elif isinstance(labels[0], (list, tuple)):
                    batch["label"] = [torch.tensor(x) for x in labels]
                else:
                    batch["label"] = torch.tensor(labels)
                cols.remove(name)
                break
        for c in cols:
            batch[c] = [row[c] for row in features]
        pairs = [p for row in features for p in row_pairs(row)]
        ids = [self.store.lookup[p] for p in pairs]
        feats = self.store.rows.collate(ids, self.multiple)
        feats["_pairs"] = pairs
        batch[FEATURES_KEY] = feats
        return batch


# ---- the loss ------------------------------------------------------------------------------------


class PretokenizedLoss(nn.Module):
    """Feeds pre-tokenised tensors to any sentence-transformers cross-encoder loss.

    Called with the stock inputs plus the collator's features (last); while the wrapped loss
    runs, the model's `preprocess` returns the rows of those tensors for the pairs it is asked
    (the whole batch in one go for pointwise losses; slices for listwise mini-batches)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.inner = loss

    @property
    def model(self):
        return self.inner.model

    def get_config_dict(self) -> dict[str, Any]:
        get = getattr(self.inner, "get_config_dict", None)
        return get() if get else {}

    @property
    def citation(self) -> str | None:
        return getattr(self.inner, "citation", None)

    def forward(self, inputs: list, labels, prompt: str | None = None, task: str | None = None):
        feats = inputs[-1]
        if not isinstance(feats, dict) or "input_ids" not in feats:
            return self.inner(inputs, labels, prompt=prompt, task=task)  # a stock batch
        model = self.inner.model
        pairs = feats["_pairs"]
        device = next(model.parameters()).device
        tensors = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                   for k, v in feats.items() if k != "_pairs"}
        position = {p: i for i, p in enumerate(pairs)}
        n = len(pairs)

        def preprocess(batch, prompt=None, **_kw):
            idx = [position[tuple(p)] for p in batch]
            if idx == list(range(n)):
                return tensors
            sel = torch.as_tensor(idx, device=device)
            out = {k: v.index_select(0, sel) if isinstance(v, torch.Tensor) else v
                   for k, v in tensors.items()}
            return _trim(out)

        missing = object()
        before = model.__dict__.get("preprocess", missing)
        model.__dict__["preprocess"] = preprocess
        try:
            return self.inner(inputs[:-1], labels, prompt=prompt, task=task)
        finally:
            if before is missing:
                model.__dict__.pop("preprocess", None)
            else:
                model.__dict__["preprocess"] = before


def _trim(feats: dict[str, Any], multiple: int = PAD_MULTIPLE) -> dict[str, Any]:
    """Drop padding columns no row of this slice needs (kept to a multiple of 8)."""
    mask = feats.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] == 0:
        return feats
    if bool(mask[:, 0].all()):  # right padding: keep the longest row's width
        width = int(mask.sum(1).max())
        width = min(mask.shape[1], -(-width // multiple) * multiple)
        return {k: v[:, :width] if isinstance(v, torch.Tensor) and v.ndim == 2 else v
                for k, v in feats.items()}
    return feats


# ---- the trainer ---------------------------------------------------------------------------------


def make_trainer_class():
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    class FastCrossEncoderTrainer(CrossEncoderTrainer):
        """CrossEncoderTrainer whose train batches come from our length-bucketed sampler."""

        bucket_sampler: LengthBucketBatchSampler | None = None

        def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None,
                              generator=None, seed=0):
            if self.bucket_sampler is not None and dataset is self.train_dataset:
                return self.bucket_sampler
            return super().get_batch_sampler(dataset, batch_size, drop_last, valid_label_columns,
                                              generator, seed)

    return FastCrossEncoderTrainer


@dataclass
class FastPath:
    """What the worker needs from the fast path: the store, the sampler, padding shares."""

    store: PairStore | None
    sampler: LengthBucketBatchSampler | None
    info: dict[str, Any]

    def trainer(self, *, model, args, train_dataset, loss, evaluator, callbacks):
        """A trainer on the fast path (or the stock one when pre-tokenising is off)."""
        if self.store is None:
            from sentence_transformers.cross_encoder import CrossEncoderTrainer

            return CrossEncoderTrainer(model=model, args=args, train_dataset=train_dataset,
                                       loss=loss, evaluator=evaluator, callbacks=callbacks)
        cls = make_trainer_class()
        cls.bucket_sampler = self.sampler
        return cls(model=model, args=args, train_dataset=train_dataset,
                   loss=PretokenizedLoss(loss), evaluator=evaluator, callbacks=callbacks,
                   data_collator=PretokenizedCollator(self.store))


def prepare(model, dataset, run_dir: Path, *, batch_size: int, seed: int, pretokenize: bool,
            bucketing: bool, log=print, world_size: int = 1) -> FastPath:
    """Tokenise the training rows once (cached in RUN_DIR/tokens), build the sampler and
    measure the padding share of our batches against random ones."""
    if not pretokenize:
        return FastPath(None, None, {"pretokenized": False, "length_bucketing": False})
    try:
        store = build_store(model, dataset, run_dir / TOKENS_DIR)
    except Unsupported as exc:
        log(f"pre-tokenising is not possible with this model ({exc}): stock path")
        return FastPath(None, None, {"pretokenized": False, "length_bucketing": False})
    lengths = store.row_lengths
    pair_lens = store.rows.lengths
    sampler = (LengthBucketBatchSampler(lengths, batch_size, seed=seed, world_size=world_size)
               if bucketing else None)
    ours = sampler.batches(0) if sampler else random_batches(len(lengths), batch_size, seed)

    def pair_batches(batches):
        return [[p for r in b for p in range(store.row_starts[r], store.row_starts[r + 1])]
                for b in batches]

    share = padding_share(pair_lens, pair_batches(ours), PAD_MULTIPLE)
    share_random = padding_share(pair_lens, pair_batches(
        random_batches(len(lengths), batch_size, seed)))
    info = {"pretokenized": True, "length_bucketing": bool(bucketing),
            "tokens_cached": store.from_cache, "padding_share": round(share, 4),
            "padding_share_random": round(share_random, 4),
            "mean_pair_tokens": round(float(pair_lens.mean()), 1) if len(pair_lens) else 0.0}
    log(f"{len(pair_lens)} pairs {'read from the token cache' if store.from_cache else 'tokenised'}"
        f"; padding {share:.1%} of batch tokens (random batches: {share_random:.1%})")
    return FastPath(store, sampler, info)

