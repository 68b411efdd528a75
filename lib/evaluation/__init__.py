"""Evaluation: base vs fine-tuned (and BM25, a bi-encoder, external runs) on held-out queries.

`evaluate(ws, EvaluationSpec(...))` is the one entry point; the Evaluate page and the
`reranker-studio evaluate` command both call it, so they print the same numbers.
"""

from lib.evaluation.pipeline import (
    DEFAULT_METRICS,
    EvaluationResult,
    EvaluationSpec,
    evaluate,
    normalize_metrics,
)

__all__ = ["DEFAULT_METRICS", "EvaluationResult", "EvaluationSpec", "evaluate",
           "normalize_metrics"]
