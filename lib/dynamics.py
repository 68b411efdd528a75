"""Training dynamics ("dataset cartography", Swayamdipta et al. 2020): how a normal training run
scores its own training pairs at each validation, and what that says about their labels.

Why: the out-of-fold finder trains k extra models; a run that is trained anyway can, at almost
no extra cost, score a sample of its training pairs each time it validates. Per pair:
- confidence = mean over validations of the probability the model gives the GIVEN label's side
  (sigmoid score for a relevant label, 1 - sigmoid for label 0; relevant = label >=
  `REL_THRESHOLD`, the rule of lib.metrics and the Checks);
- variability = the standard deviation of that probability across validations.
Pairs the model keeps giving the other side, steadily (low confidence, low variability), are
"hard to learn"; the paper finds mislabelled examples concentrated there. They are flags for a
person, not verdicts.

The training worker writes the files (`DynamicsRecorder`, run dir); the app only reads them.
With graded labels and BCE the training target of a grade g is g / max_label, so low grades
sit nearer 0.5 by design: their confidence is lower without being wrong (read the reason).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.checks.labels import REL_THRESHOLD

DYNAMICS = "dynamics.jsonl"  # run dir: one line per validation {"step", "epoch", "scores"}
DYNAMICS_PAIRS = "dynamics_pairs.jsonl"  # run dir: the recorded pairs, in the scores' order
MAX_CONFIDENCE = 0.5  # flag when the given label gets less than even odds on average ...
STRONG = 0.5  # strength from which a dynamics flag counts as strong (confidence <= 0.25, steady)


def sample_pairs(train: pd.DataFrame, max_pairs: int, seed: int) -> pd.DataFrame:
    """At most `max_pairs` training pairs as whole queries (seeded: a resume picks the same),
    so a flag's query context is complete."""
    from lib.training.jobs import subsample_queries

    return subsample_queries(train, max_pairs, seed).reset_index(drop=True)


class DynamicsRecorder:
    """Scores a fixed sample of training pairs at each validation and appends them to
    RUN_DIR/dynamics.jsonl (rank 0 only; the worker never opens the database)."""

    def __init__(self, run_dir: Path, train: pd.DataFrame, max_pairs: int, seed: int,
                 batch_size: int = 32):
        from lib.training.callbacks import PairScorer

        self.run_dir = run_dir
        self.pairs = sample_pairs(train, max_pairs, seed)
        self.scorer = PairScorer(self.pairs, batch_size)
        self.seconds = 0.0  # scoring time, kept out of the training throughput
        cols = [c for c in ("query_id", "doc_id", "line", "label") if c in self.pairs]
        tmp = run_dir / (DYNAMICS_PAIRS + ".partial")
        self.pairs[cols].to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, run_dir / DYNAMICS_PAIRS)

    def record(self, model, step: int, epoch: float | None) -> None:
        t0 = time.perf_counter()
        scores = np.asarray(self.scorer.score(model), dtype=float)
        act = getattr(model, "activation_fn", None)
        line = {"step": int(step), "epoch": None if epoch is None else round(float(epoch), 4),
                "activation": type(act).__name__ if act is not None else None,
                "scores": [round(float(x), 6) for x in scores]}
        with open(self.run_dir / DYNAMICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.seconds += time.perf_counter() - t0


# ---- reading and computing (the app side) -----------------------------------------------------
@dataclass
class Dynamics:
    pairs: pd.DataFrame  # query_id, doc_id, [line], label
    probs: np.ndarray  # (validations, pairs): probability of relevance
    steps: list[int]


def has_dynamics(run_dir: Path) -> bool:
    return (run_dir / DYNAMICS).is_file() and (run_dir / DYNAMICS_PAIRS).is_file()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def read_dynamics(run_dir: Path) -> Dynamics:
    """The recorded validations, one per step (a resumed run's repeated step: the last wins)."""
    path = run_dir / DYNAMICS
    if not has_dynamics(run_dir):
        raise FileNotFoundError(f"{path}: no training dynamics recorded in this run (set "
                                "dynamics_max_pairs > 0 in its config)")
    pairs = pd.read_json(run_dir / DYNAMICS_PAIRS, lines=True,
                         dtype={"query_id": str, "doc_id": str})
    by_step: dict[int, np.ndarray] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            scores = np.asarray(rec["scores"], dtype=float)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} line {n}: not a dynamics record ({exc})") from None
        if len(scores) != len(pairs):
            raise ValueError(f"{path} line {n}: {len(scores)} scores for {len(pairs)} pairs "
                             f"in {DYNAMICS_PAIRS}")
        # scores are what the model's activation gave: probabilities under a sigmoid
        by_step[step] = scores if rec.get("activation") == "Sigmoid" else _sigmoid(scores)
    steps = sorted(by_step)
    probs = np.vstack([by_step[s] for s in steps]) if steps else np.zeros((0, len(pairs)))
    return Dynamics(pairs, probs, steps)


def cartography(pairs: pd.DataFrame, probs: np.ndarray,
                rel_threshold: int = REL_THRESHOLD) -> pd.DataFrame:
    """Per pair: confidence (mean probability of the given label's side), variability (its
    population std across validations, as in the paper), correctness (share of validations
    where that side had more than even odds), relevance_prob (mean probability of relevance)."""
    if probs.shape[0] == 0:
        raise ValueError("no validation was recorded (a run records dynamics from its first "
                         "validation after step 0)")
    relevant = pairs["label"].to_numpy() >= rel_threshold
    given = np.where(relevant[None, :], probs, 1.0 - probs)
    return pairs.reset_index(drop=True).assign(
        confidence=given.mean(axis=0), variability=given.std(axis=0),
        correctness=(given > 0.5).mean(axis=0), relevance_prob=probs.mean(axis=0),
        validations=probs.shape[0])


def flag_dynamics(carto: pd.DataFrame, max_confidence: float = MAX_CONFIDENCE) -> pd.DataFrame:
    """Hard-to-learn pairs: confidence below `max_confidence` and variability at or below the
    median variability of the recorded pairs. strength = 2 (0.5 - confidence) (1 - 2 variability)
    (0..1; the std of a probability is at most 0.5): lower and steadier is stronger. Strongest
    first; NaN strength = not flagged."""
    out = carto.copy()
    median_var = float(out["variability"].median())
    hard = (out["confidence"] < max_confidence) & (out["variability"] <= median_var)
    strength = 2 * (0.5 - out["confidence"]) * (1 - 2 * out["variability"])
    out["strength"] = strength.where(hard & (strength > 0))
    out["reason"] = [
        (f"labelled {int(r.label)} ({'relevant' if r.label >= REL_THRESHOLD else 'not relevant'})"
         f" but over {int(r.validations)} validations of the run the model gave that label a "
         f"mean probability of {r.confidence:.2f} (variability {r.variability:.3f}, at or "
         f"below the median {median_var:.3f}): hard to learn, likely mislabelled")
        if not np.isnan(s) else None for r, s in zip(out.itertuples(), out["strength"],
                                                      strict=True)]
    return out.sort_values("strength", ascending=False, na_position="last", ignore_index=True)
