"""The cold-start recipe: what changes when the base model's reranker head is new.

A base without a trained sequence-classification head (the bundled all-MiniLM-L6-v2 is a sentence
embedding model) starts from a randomly initialised classifier. At the encoder's fine-tuning rate
(2e-5..5e-5) that head barely moves on a few thousand pairs, so the recipe gives it its own, higher
learning rate, weights the (usually rarer) positives by the label balance, and lets validation
NDCG@10 stop the run and pick the best checkpoint. A trained head (a real cross-encoder, or one of
our own saved runs) is left as the user configured it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lib.models import ModelRef
from lib.training.config import TrainConfig
from lib.training.distill import BIENCODER_TEACHER

AUTO_TEACHER = "auto"
DEFAULT_HEAD_LR = 1e-3
DEFAULT_PATIENCE = 3  # validations without a better NDCG@10
POS_WEIGHT_RANGE = (1.0, 10.0)
# parameter-name prefixes of a sequence-classification head across common architectures
HEAD_PREFIXES = ("classifier", "score", "pre_classifier")
HEAD_PATTERN = r"(^|\.)(" + "|".join(HEAD_PREFIXES) + r")\."
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header, without loading the weights."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return [k for k in header if k != "__metadata__"]


def _weight_keys(model_dir: Path) -> list[str] | None:
    for name in _WEIGHT_FILES:
        f = model_dir / name
        if not f.is_file():
            continue
        if name.endswith(".safetensors"):
            return _safetensors_keys(f)
        import torch

        return list(torch.load(f, map_location="cpu", weights_only=True).keys())
    return None


def _is_head_key(key: str) -> bool:
    parts = key.split(".")
    return any(p in HEAD_PREFIXES for p in parts[:-1])


def head_is_new(ref: ModelRef) -> bool:
    """True when the base's weights hold no classification head (it would start random).

    Local dirs are read from the weight file's tensor names; a hub id counts as trained when its
    config names a *ForSequenceClassification architecture (a real cross-encoder)."""
    path = Path(ref.path)
    if path.is_dir():
        keys = _weight_keys(path)
        if keys is not None:
            return not any(_is_head_key(k) for k in keys)
        cfg = path / "config.json"
        archs = json.loads(cfg.read_text()).get("architectures") if cfg.is_file() else None
        return not any("ForSequenceClassification" in a for a in archs or [])
    try:
        from transformers import AutoConfig

        archs = AutoConfig.from_pretrained(ref.path).architectures or []
    except Exception:  # noqa: BLE001 - unreachable hub: assume a new head, the safe side
        return True
    return not any("ForSequenceClassification" in a for a in archs)


def balance_pos_weight(labels, max_label: int = 1) -> float | None:
    """negatives / positives (label > 0) for BCE, clamped to 1..10; None without both kinds.

    Why: with few positives BCE learns to score everything low; weighting each positive by the
    imbalance makes both classes count equally in the loss."""
    values = [float(x) for x in labels]
    pos = sum(1 for x in values if x > 0)
    neg = len(values) - pos
    if pos == 0 or neg == 0:
        return None
    lo, hi = POS_WEIGHT_RANGE
    return round(min(hi, max(lo, neg / pos)), 3)


@dataclass
class Recipe:
    """What the run applies; shown in status.json, the progress log and the model card."""

    cold_start: bool
    reason: str
    head_learning_rate: float | None = None
    pos_weight: float | None = None
    early_stopping_patience: int | None = None
    distill_teacher: str | None = None
    label_head_learning_rate: float | None = None  # after distillation; None: head_learning_rate

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        first = f"distil {self.distill_teacher!r} first, then " if self.distill_teacher else ""
        last = ""
        if self.distill_teacher and self.label_head_learning_rate is not None:
            last = f"; on the labels, head learning rate {self.label_head_learning_rate:g}"
        if not self.cold_start:
            return f"{first}no cold-start recipe ({self.reason}){last}"
        return (f"{first}cold start ({self.reason}): head learning rate "
                f"{self.head_learning_rate:g}, pos_weight "
                f"{self.pos_weight if self.pos_weight is not None else 'none'}, early stopping "
                f"after {self.early_stopping_patience} validations without a better NDCG@10"
                f"{last}")


def resolve_teacher(teacher: str | None, cold_start: bool) -> str | None:
    """`auto` distils the zero-shot bi-encoder into a new head only (a trained cross-encoder
    already ranks better than the bi-encoder it would learn from). Opt-in, not a default: on the
    demo (bench/results/quality.log) it helped once (0.613 vs 0.578, all pairs, 128 tokens) and
    lost twice (0.529 vs 0.566 on 1,200 pairs; 0.557 at 256 tokens)."""
    if teacher is None or teacher.strip().lower() != AUTO_TEACHER:
        return teacher
    return BIENCODER_TEACHER if cold_start else None


def will_distil(cfg: TrainConfig, ref: ModelRef) -> bool:
    """Whether `plan` will give this config a teacher (`auto` distils into a new head only), so
    the app prepares distillation data (corpus retrieval) only for runs that use it."""
    if cfg.distill_teacher is None:
        return False
    return resolve_teacher(cfg.distill_teacher, _cold_start(cfg, ref)) is not None


def _cold_start(cfg: TrainConfig, ref: ModelRef) -> bool:
    """The cold-start recipe is on: forced, or `auto` with a base whose head is new."""
    return cfg.cold_start == "on" or (cfg.cold_start == "auto" and head_is_new(ref))


def plan(cfg: TrainConfig, ref: ModelRef, train_labels, max_label: int = 1) -> Recipe:
    """Decide the recipe from the config and the base checkpoint."""
    if not _cold_start(cfg, ref):
        reason = ("cold_start off" if cfg.cold_start == "off"
                  else "the base model has a trained reranker head")
        return Recipe(False, reason, pos_weight=cfg.pos_weight,
                      early_stopping_patience=cfg.early_stopping_patience,
                      distill_teacher=resolve_teacher(cfg.distill_teacher, False),
                      label_head_learning_rate=cfg.label_head_learning_rate)
    reason = "cold_start on" if cfg.cold_start == "on" else "the base model has no reranker head"
    pos_weight = cfg.pos_weight
    if pos_weight is None and not cfg.listwise:
        pos_weight = balance_pos_weight(train_labels, max_label)
    return Recipe(
        True, reason,
        head_learning_rate=cfg.head_learning_rate or DEFAULT_HEAD_LR,
        pos_weight=pos_weight,
        early_stopping_patience=cfg.early_stopping_patience or DEFAULT_PATIENCE,
        distill_teacher=resolve_teacher(cfg.distill_teacher, True),
        label_head_learning_rate=cfg.label_head_learning_rate,
    )


def head_parameter_names(model) -> list[str]:
    """Names (as model.named_parameters gives them) of the classification head's parameters."""
    return [n for n, _ in model.named_parameters() if _is_head_key(n)]


def learning_rate_mapping(recipe: Recipe) -> dict[str, float]:
    """sentence-transformers' `learning_rate_mapping` (parameter-name regex -> learning rate):
    the head gets its own rate under the cold-start recipe, nothing otherwise."""
    if not recipe.cold_start or recipe.head_learning_rate is None:
        return {}
    return {HEAD_PATTERN: recipe.head_learning_rate}


def label_learning_rate_mapping(recipe: Recipe) -> dict[str, float]:
    """The label phase's mapping: after distillation the head is no longer new, and
    `label_head_learning_rate` (when set) replaces the cold-start head rate."""
    if recipe.distill_teacher and recipe.label_head_learning_rate is not None:
        return {HEAD_PATTERN: recipe.label_head_learning_rate}
    return learning_rate_mapping(recipe)


def recipe_summary(recipe: dict[str, Any], distillation: dict[str, Any] | None = None) -> str:
    """One line for the Train page from status.json's `recipe` (and `distillation`) records."""
    known = {f.name for f in fields(Recipe)}  # a record from a newer version may hold more
    text = Recipe(**{k: v for k, v in recipe.items() if k in known}).summary()
    if distillation:
        parts = _distilled_parts(distillation)
        text += (f"; distilled {distillation.get('pairs')} pairs{parts} from "
                 f"{distillation.get('teacher')!r} (MSE against the teacher "
                 f"{distillation.get('mse_before')} -> {distillation.get('mse_after')})")
    return text


def _distilled_parts(d: dict[str, Any]) -> str:
    """Where the distilled pairs came from: the top corpus documents of training queries, and
    pseudo-queries (their corpus documents and sampled ones), counted apart."""
    corpus, pseudo = int(d.get("corpus_pairs") or 0), int(d.get("pseudo_pairs") or 0)
    parts = []
    if pseudo:  # a pseudo-query's pairs: its top corpus documents and its sampled documents
        pseudo_corpus = int(d.get("pseudo_corpus_pairs") or 0)
        corpus -= pseudo_corpus
        parts.append(f"{pseudo} for {d.get('pseudo_queries')} pseudo-queries")
    if corpus:
        parts.insert(0, f"{corpus} corpus documents of training queries")
    return f" ({', '.join(parts)})" if parts else ""
