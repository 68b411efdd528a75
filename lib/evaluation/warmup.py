"""ranx compiles its metrics with numba on first use (~27 s cold). The app warms that cache in a
background thread at start, so no click pays it; the cache lives in the workspace and survives
restarts (after the first start, warming takes about a second)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lib.metrics import configure_numba_cache


@dataclass
class WarmupState:
    started: float
    finished: float | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started


_state: WarmupState | None = None
_lock = threading.Lock()


def warm_ranx(metrics: tuple[str, ...] | None = None) -> None:
    """Evaluate a toy ranking with every default metric (binary and graded) and compare two."""
    import numpy as np
    import pandas as pd

    from lib.evaluation.compare import compare_pair
    from lib.evaluation.pipeline import DEFAULT_METRICS
    from lib.metrics import evaluate_rankings

    metrics = tuple(metrics or DEFAULT_METRICS)
    pairs = pd.DataFrame({
        "query_id": ["q1"] * 3 + ["q2"] * 3, "doc_id": ["a", "b", "c"] * 2,
        "label": [2, 0, 1, 0, 1, 0],
    })
    a = evaluate_rankings(pairs, np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.1]), metrics, name="a")
    b = evaluate_rankings(pairs, np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.1]), metrics, 2, name="b")
    pq = a.per_query.rename(columns={m: f"a|{m}" for m in metrics}).merge(
        b.per_query.rename(columns={m: f"b|{m}" for m in metrics}), on="query_id")
    compare_pair(pq, "a", "b", metrics[0], stat_test="student", n_bootstrap=10)


def warm_ranx_in_background(cache_dir: str | Path) -> WarmupState:
    """Start (once per process) a daemon thread that fills the numba cache under `cache_dir`."""
    global _state
    with _lock:
        if _state is not None:
            return _state
        configure_numba_cache(cache_dir)
        state = WarmupState(time.time())
        _state = state

    def run() -> None:
        try:
            warm_ranx()
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs time later
            state.error = f"{type(exc).__name__}: {exc}"
        state.finished = time.time()

    threading.Thread(target=run, name="ranx-warmup", daemon=True).start()
    return state


def warmup_state() -> WarmupState | None:
    return _state
