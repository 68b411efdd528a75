"""Run every data check on a dataset's active split, with caching, and the leakage fix.

`run_checks` is what the Checks page and `reranker-studio check` call; each section (leakage,
labels, truncation) is cached separately, keyed by what it depends on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from lib import db, split
from lib.checks import cache
from lib.checks.labels import check_labels
from lib.checks.leakage import find_leakage, query_groups
from lib.checks.memory import gpu_free_bytes, memory_check
from lib.checks.truncation import dataset_truncation, model_limit
from lib.datasets import Dataset, resolve_dataset
from lib.models import (
    DEFAULT_MODEL,
    ModelRef,
    load_tokenizer,
    model_fingerprint,
    model_max_length,
    resolve_model,
)
from lib.workspace import Workspace

DEFAULT_THRESHOLD = 0.8
DEFAULT_BATCH_SIZE = 16

Progress = Callable[[str, float], None]


@dataclass
class CheckResults:
    dataset_id: str
    dataset_name: str
    split_id: str
    threshold: float
    leakage: dict
    labels: dict
    truncation: dict | None = None
    memory: dict | None = None
    eval_dataset_id: str | None = None
    eval_dataset_name: str | None = None
    model: str | None = None
    model_label: str | None = None
    max_length: int | None = None
    cached: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def has_leakage(self) -> bool:
        return bool(self.leakage["findings"])

    def to_json(self) -> dict:
        """The CLI's `--json` contract: leakage, label_issues, truncation (plus context)."""
        return {
            "dataset": {"dataset_id": self.dataset_id, "name": self.dataset_name},
            "split_id": self.split_id,
            "eval_dataset": (None if self.eval_dataset_id is None else
                             {"dataset_id": self.eval_dataset_id, "name": self.eval_dataset_name}),
            "model": self.model,
            "max_length": self.max_length,
            "threshold": self.threshold,
            "leakage": self.leakage["findings"],
            "leakage_summary": self.leakage["summary"],
            "label_issues": self.labels["issues"],
            "label_distribution": self.labels["distribution"],
            "truncation": self.truncation or {},
            "memory": self.memory,
            "cached": self.cached,
            "seconds": self.seconds,
        }


@lru_cache(maxsize=8)
def _tokenizer(path: str, kind: str, spec: str):
    return load_tokenizer(ModelRef(spec, path, kind))


@dataclass(frozen=True)
class ModelInfo:
    ref: ModelRef
    fingerprint: str
    limit: int
    tokenizer: object


def model_info(model: str | None) -> ModelInfo:
    """The model's tokenizer and max length; a clear error when a hub id cannot be fetched."""
    ref = resolve_model(model or DEFAULT_MODEL)
    try:
        tok = _tokenizer(ref.path, ref.kind, ref.spec)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load the tokenizer of {ref.spec!r} ({exc.__class__.__name__}: {exc}). A hub "
            "id needs network access to the model hub; offline, give a local model directory or "
            "'default'."
        ) from exc
    return ModelInfo(ref, model_fingerprint(ref), model_limit(tok, model_max_length(ref)), tok)


def _resolve(ws: Workspace, dataset: str, eval_dataset: str | None
             ) -> tuple[Dataset, str, Dataset | None]:
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        sid = split.active_split_id(con, ds.dataset_id)
        ev = resolve_dataset(con, eval_dataset) if eval_dataset else None
    if sid is None:
        raise ValueError(f"dataset {ds.name!r} has no split yet: run `reranker-studio split`")
    if ev is not None and ev.dataset_id == ds.dataset_id:
        raise ValueError("the evaluation dataset must differ from the training dataset")
    return ds, sid, ev


def _sub(progress: Progress | None, lo: float, hi: float, prefix: str) -> Progress | None:
    if progress is None:
        return None
    return lambda text, frac: progress(f"{prefix}: {text}", lo + (hi - lo) * min(max(frac, 0), 1))


def run_checks(
    ws: Workspace,
    dataset: str,
    model: str | None = DEFAULT_MODEL,
    max_length: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    eval_dataset: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str | None = None,
    truncation: bool = True,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> CheckResults:
    """Leakage, label quality, truncation and a memory estimate for a dataset's active split."""
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    ds, sid, ev = _resolve(ws, dataset, eval_dataset)
    res = CheckResults(ds.dataset_id, ds.name, sid, threshold, {}, {},
                       eval_dataset_id=ev.dataset_id if ev else None,
                       eval_dataset_name=ev.name if ev else None)

    def section(name: str, key: str, compute: Callable[[], dict]) -> dict:
        hit = cache.get(ws, ds.dataset_id, sid, name, key) if use_cache else None
        res.cached[name] = hit is not None
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        out = compute()
        res.seconds[name] = round(time.perf_counter() - t0, 3)
        cache.put(ws, ds.dataset_id, sid, name, key, out, res.seconds[name])
        return out

    ev_id = ev.dataset_id if ev else ""
    res.leakage = section(
        "leakage", cache.params_key(threshold=threshold, eval=ev_id),
        lambda: find_leakage(ws, ds.dataset_id, sid, threshold, ev.dataset_id if ev else None,
                             _sub(progress, 0.0, 0.45, "leakage")).to_json(),
    )
    if progress:
        progress("labels: conflicts, unevaluable queries, distribution", 0.45)
    res.labels = section("labels", cache.params_key(), lambda: check_labels(ws, ds.dataset_id,
                                                                           sid))
    if truncation:
        info = model_info(model)
        length = int(max_length or info.limit)
        if length > info.limit:
            raise ValueError(f"max length {length} exceeds the model's limit of {info.limit} "
                             "tokens")
        res.model, res.model_label, res.max_length = info.ref.spec, info.ref.label, length
        res.truncation = section(
            "truncation", cache.params_key(model=info.fingerprint, max_length=length),
            lambda: dataset_truncation(ws, ds.dataset_id, sid, info.tokenizer, length, info.limit,
                                       _sub(progress, 0.55, 0.95, "truncation")),
        )
        res.truncation["model"] = info.ref.label
        if progress:
            progress("memory estimate", 0.95)
        free = gpu_free_bytes()
        prec = precision or ("bf16" if free is not None else "fp32")
        res.memory = (memory_check(info.ref.path, batch_size, length, prec, free, query_gpu=False)
                      if info.ref.kind != "hub" else
                      {"available": False, "message": "no memory estimate for a hub id before "
                       "it is downloaded"})
    cache.record_run(ws, {
        "dataset_id": ds.dataset_id, "split_id": sid, "eval_dataset_id": ev_id or None,
        "model_spec": res.model, "model_fp": None, "max_length": res.max_length,
        "threshold": threshold, "batch_size": batch_size, "precision": precision,
        "leak_findings": len(res.leakage["findings"]),
    })
    if progress:
        progress("done", 1.0)
    return res


def load_cached_checks(
    ws: Workspace,
    dataset: str,
    model: str | None = DEFAULT_MODEL,
    max_length: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    eval_dataset: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str | None = None,
) -> CheckResults | None:
    """The stored results for these settings, or None when any section was never computed."""
    ds, sid, ev = _resolve(ws, dataset, eval_dataset)
    ev_id = ev.dataset_id if ev else ""
    leak = cache.get(ws, ds.dataset_id, sid, "leakage",
                     cache.params_key(threshold=threshold, eval=ev_id))
    labels = cache.get(ws, ds.dataset_id, sid, "labels", cache.params_key())
    if leak is None or labels is None:
        return None
    info = model_info(model)
    length = int(max_length or info.limit)
    trunc = cache.get(ws, ds.dataset_id, sid, "truncation",
                      cache.params_key(model=info.fingerprint, max_length=length))
    if trunc is None:
        return None
    trunc["model"] = info.ref.label
    free = gpu_free_bytes()
    prec = precision or ("bf16" if free is not None else "fp32")
    memory = (memory_check(info.ref.path, batch_size, length, prec, free, query_gpu=False)
              if info.ref.kind != "hub" else None)
    return CheckResults(
        ds.dataset_id, ds.name, sid, threshold, leak, labels, trunc, memory,
        ev.dataset_id if ev else None, ev.name if ev else None, info.ref.spec, info.ref.label,
        length, {"leakage": True, "labels": True, "truncation": True}, {},
    )


def last_settings(ws: Workspace, dataset: str) -> dict | None:
    """The settings of the last check run on this dataset (the page's defaults)."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
    return cache.last_run(ws, ds.dataset_id)


def resplit_grouped(ws: Workspace, dataset: str, threshold: float = DEFAULT_THRESHOLD,
                    seed: int | None = None) -> split.SplitSummary:
    """A new active split in which exact, normalised and near-duplicate queries share a split.

    Fractions and seed come from the current active split, which is kept (results made on it stay
    explainable). Returns the new split's summary; its note says how many groups were joined.
    """
    ds, sid, _ = _resolve(ws, dataset, None)
    with db.connect(ws) as con:
        seed0, val, test = con.execute(
            "SELECT seed, val_frac, test_frac FROM splits WHERE split_id = ?", [sid]
        ).fetchone()
    groups = query_groups(ws, ds.dataset_id, sid, threshold)
    note = (f"leakage fix: {groups.n_groups} groups of duplicate or near-duplicate queries "
            f"(Jaccard >= {threshold}; largest {groups.largest} queries) kept in one split; "
            f"replaces {sid}")
    return split.make_split(ws, ds.dataset_id, val, test, seed0 if seed is None else seed,
                            groups=groups.groups, method="grouped", note=note)
