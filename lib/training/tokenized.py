"""Pre-tokenised (query, document) pairs: tokenise once, pad tensors to a multiple of 8 per batch.

Why: sentence-transformers tokenises inside the loss's forward on every step, and its batches are
random, so at max length 512 about half of every batch is padding. Here every pair is tokenised
once with the model's own `preprocess` (so tokenizer, truncation, max length and prompt are exactly
CrossEncoder's), padding is stripped, and batches are re-padded only to their own longest pair
(rounded up to a multiple of 8 for tensor cores). The same rows feed training (tokens cached in the
run directory), the validation evaluator and evaluation scoring.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PAD_MULTIPLE = 8
CHUNK = 512  # pairs per preprocess call while tokenising: bounds the padded tensor's size
TENSOR_KEYS = ("input_ids", "token_type_ids", "attention_mask")


class Unsupported(RuntimeError):
    """The model's preprocess returns something other than plain token tensors (e.g. flattened
    inputs for flash attention): callers fall back to the stock path."""


@dataclass
class TokenRows:
    """Unpadded token ids of N pairs, concatenated; pair i is ids[starts[i]:starts[i+1]]."""

    ids: np.ndarray
    starts: np.ndarray
    types: np.ndarray | None = None
    pad_id: int = 0
    pad_left: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # non-tensor keys, e.g. modality

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def pair(self, i: int) -> list[int]:
        return self.ids[self.starts[i]:self.starts[i + 1]].tolist()

    def collate(self, index: Sequence[int], multiple: int = PAD_MULTIPLE) -> dict[str, Any]:
        """Padded tensors of the pairs in `index`, as `model.preprocess` would give them but
        padded to the batch's longest pair rounded up to `multiple`."""
        import torch

        idx = np.asarray(index, dtype=np.int64)
        lens = self.lengths[idx]
        width = int(-(-int(lens.max()) // multiple) * multiple) if len(idx) else 0
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64) if self.types is not None else None
        for r, (i, n) in enumerate(zip(idx, lens, strict=True)):
            lo, hi = self.starts[i], self.starts[i + 1]
            cols = slice(width - n, width) if self.pad_left else slice(0, n)
            ids[r, cols] = self.ids[lo:hi]
            mask[r, cols] = 1
            if types is not None:
                types[r, cols] = self.types[lo:hi]
        out: dict[str, Any] = {"input_ids": torch.from_numpy(ids)}
        if types is not None:
            out["token_type_ids"] = torch.from_numpy(types)
        out["attention_mask"] = torch.from_numpy(mask)
        out.update(self.extras)
        return out

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Written beside, then renamed: a crash never leaves a half cache that a resume trusts."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")  # DDP ranks apart
        arrays = {"ids": self.ids, "starts": self.starts}
        if self.types is not None:
            arrays["types"] = self.types
        header = {**meta, "pad_id": self.pad_id, "pad_left": self.pad_left, "extras": self.extras}
        np.savez(tmp, meta=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple[TokenRows, dict[str, Any]]:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            rows = cls(ids=z["ids"], starts=z["starts"],
                       types=z["types"] if "types" in z.files else None,
                       pad_id=int(meta["pad_id"]), pad_left=bool(meta["pad_left"]),
                       extras=dict(meta.get("extras") or {}))
        return rows, meta


def tokenize_pairs(model, pairs: Sequence[tuple[str, str]], prompt: str | None = None,
                   chunk: int = CHUNK) -> TokenRows:
    """Each pair tokenised by `model.preprocess` itself, padding stripped (order kept)."""
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_left = getattr(tokenizer, "padding_side", "right") == "left"
    pieces_ids: list[np.ndarray] = []
    pieces_types: list[np.ndarray] = []
    lengths = np.zeros(len(pairs), dtype=np.int64)
    extras: dict[str, Any] = {}
    has_types = None
    # tokenised in length order (little padding per call), stored back in input order
    order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
    per_pair: list[tuple[np.ndarray, np.ndarray | None]] = [None] * len(pairs)  # type: ignore
    for lo in range(0, len(pairs), chunk):
        part = order[lo:lo + chunk]
        feats = model.preprocess([tuple(pairs[i]) for i in part], prompt=prompt)
        unknown = [k for k, v in feats.items() if hasattr(v, "shape") and k not in TENSOR_KEYS]
        if "input_ids" not in feats or "attention_mask" not in feats or unknown:
            raise Unsupported(f"preprocess returned {sorted(feats)}: not plain token tensors")
        extras.update({k: v for k, v in feats.items() if not hasattr(v, "shape")})
        mask = feats["attention_mask"].bool().numpy()
        ids = feats["input_ids"].numpy()
        types = feats["token_type_ids"].numpy() if "token_type_ids" in feats else None
        has_types = types is not None
        for r, i in enumerate(part):
            keep = mask[r]
            per_pair[i] = (ids[r][keep], types[r][keep] if types is not None else None)
            lengths[i] = int(keep.sum())
    for ids_i, types_i in per_pair:
        pieces_ids.append(ids_i)
        if has_types:
            pieces_types.append(types_i)
    starts = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    ids_all = np.concatenate(pieces_ids).astype(np.int32) if pieces_ids else np.zeros(0, np.int32)
    types_all = (np.concatenate(pieces_types).astype(np.int8) if has_types and pieces_types
                 else None)
    return TokenRows(ids_all, starts, types_all, int(pad_id), pad_left, extras)


def cache_key(model, texts_digest: str, prompt: str | None) -> str:
    """What decides the tokens: the tokenizer (name, vocabulary size), max length, prompt, data."""
    tok = model.tokenizer
    parts = [type(tok).__name__, str(getattr(tok, "name_or_path", "")), str(len(tok)),
             str(getattr(model, "max_seq_length", None)), repr(prompt), texts_digest]
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def digest_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha1()
    for q, d in pairs:
        h.update(q.encode())
        h.update(b"\x1f")
        h.update(d.encode())
        h.update(b"\x1e")
    return h.hexdigest()


def cached_tokenize(model, pairs: Sequence[tuple[str, str]], cache_dir: Path | None,
                    prompt: str | None = None, name: str = "train") -> tuple[TokenRows, bool]:
    """(rows, loaded_from_cache): tokens of `pairs`, read from `cache_dir` when this exact
    tokenizer, max length, prompt and text were tokenised before (a resume)."""
    key = cache_key(model, digest_pairs(pairs), prompt)
    path = cache_dir / f"{name}-{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            rows, _meta = TokenRows.load(path)
            if len(rows) == len(pairs):
                return rows, True
        except (OSError, ValueError, KeyError):
            pass  # unreadable: tokenise again and overwrite
    rows = tokenize_pairs(model, pairs, prompt=prompt)
    if path is not None:
        for old in cache_dir.glob(f"{name}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        rows.save(path, {"key": key, "pairs": len(pairs)})
    return rows, False


def padding_share(lengths: np.ndarray, batches: Sequence[Sequence[int]],
                  multiple: int = 1) -> float:
    """Share of padded token positions over these batches (each padded to its longest)."""
    real = padded = 0
    for b in batches:
        lens = lengths[np.asarray(b, dtype=np.int64)]
        if not len(lens):
            continue
        width = -(-int(lens.max()) // multiple) * multiple
        real += int(lens.sum())
        padded += width * len(lens)
    return 1.0 - real / padded if padded else 0.0


# ---- scoring -------------------------------------------------------------------------------------


def use_bf16(model) -> bool:
    """bf16 autocast for inference on GPUs that support it; never on CPU (several times slower)."""
    import torch

    dev = getattr(model, "device", None)
    return (getattr(dev, "type", "cpu") == "cuda" and torch.cuda.is_available()
            and torch.cuda.is_bf16_supported())


def forward_scores(model, features: dict[str, Any], bf16: bool | None = None) -> np.ndarray:
    """What CrossEncoder.predict does with one tokenised batch: forward, upcast, activation."""
    import contextlib

    import torch

    bf16 = use_bf16(model) if bf16 is None else bf16
    feats = {k: (v.to(model.device, non_blocking=True) if hasattr(v, "to") else v)
             for k, v in features.items()}
    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    with torch.inference_mode(), ctx:
        scores = model(feats)["scores"]
    if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
        scores = scores.float()
    if model.activation_fn is not None:
        scores = model.activation_fn(scores)
    if scores.ndim > 1:
        scores = scores.squeeze(-1)
    return scores.float().cpu().numpy().astype(np.float64)


def score_rows(model, rows: TokenRows, batch_size: int = 32) -> np.ndarray:
    """Scores of every pair in `rows` (input order), longest first, each batch padded to 8."""
    out = np.empty(len(rows))
    if not len(rows):
        return out
    was_training = model.training
    model.eval()
    try:
        order = np.argsort(-rows.lengths, kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            out[idx] = forward_scores(model, rows.collate(idx))
    finally:
        model.train(was_training)
    return out


def predict_prompt(model) -> str | None:
    """The prompt CrossEncoder.predict applies when none is given (its default prompt)."""
    resolve = getattr(model, "_resolve_prompt", None)
    try:
        return resolve(None, None) if resolve else None
    except Exception:  # noqa: BLE001 - an older API: predict used no default prompt either
        return None


def batching_caption(info: dict[str, Any] | None) -> str | None:
    """One line for the Train page: how much of each batch is padding, and why."""
    if not info:
        return None
    if not info.get("pretokenized"):
        return "Batches: stock path (tokenised every step, random batches)."
    share, rand = info.get("padding_share"), info.get("padding_share_random")
    how = "length-bucketed" if info.get("length_bucketing") else "random"
    text = f"Batches: {how}, padding {share:.1%} of batch tokens"
    if info.get("length_bucketing") and rand is not None:
        text += f" (random batches would be {rand:.1%})"
    cached = "read from the run's token cache" if info.get("tokens_cached") else "tokenised once"
    return text + f"; pairs {cached}, mean {info.get('mean_pair_tokens')} tokens."
