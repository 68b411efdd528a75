"""Scoring (query, document) pairs with each kind of ranker, with progress, ETA and a score cache.

Cross-encoder and bi-encoder scores are cached in DuckDB keyed by (model fingerprint, max length,
window setting, hash of the exact query and document text), so a rerun, or an evaluation that
adds a model or queries, scores only what is new. Pairs are deduplicated by text and scored in
length-sorted chunks (little padding per batch); each chunk's scores are stored as soon as they
exist, so an interrupted evaluation keeps its work.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib import db
from lib.evaluation.rankers import (
    BIENCODER,
    BM25,
    CROSS_ENCODER,
    FUSION,
    RUN_FILE,
    Ranker,
    load_run_file,
)
from lib.models import ModelRef, model_fingerprint
from lib.workspace import Workspace

ProgressFn = Callable[[float, str], None]
DEFAULT_BATCH_SIZE = 64
CHUNK_BATCHES = 8  # pairs per chunk = batch size x this: progress and cache updates per chunk
PREFETCH_BATCHES = 8  # tokenised batches kept ready ahead of the model
FLUSH_SECONDS = 5.0  # scored pairs reach the cache at least this often (an interrupt keeps them)
_SEP = "\x1f"


@dataclass
class ScoreStats:
    """How one ranker's scores came about (shown in the UI and the report)."""

    ranker: str
    n_pairs: int
    n_unique: int = 0
    n_cached: int = 0
    n_scored: int = 0
    n_windows: int | None = None  # expanded (query, window) pairs when window scoring is on
    seconds: float = 0.0
    max_length: int | None = None
    windowing: str = "none"
    note: str | None = None
    fusion: dict | None = None  # a fusion ranker's FusionFit (weight, where chosen / reported)

    @property
    def pairs_per_s(self) -> float | None:
        return self.n_scored / self.seconds if self.n_scored and self.seconds > 0 else None

    def to_json(self) -> dict:
        out = asdict(self)
        out["pairs_per_s"] = round(self.pairs_per_s, 1) if self.pairs_per_s else None
        return out


def pair_hashes(queries, documents) -> list[str]:
    """sha1 of the exact text: scores depend on the text, not on ids."""
    return [
        hashlib.sha1(f"{q}{_SEP}{d}".encode()).hexdigest()
        for q, d in zip(queries, documents, strict=True)
    ]


def windowing_key(window_stride: int | None) -> str:
    return "none" if window_stride is None else f"maxp:{int(window_stride)}"


def precision_tag(model) -> str:
    """'bf16' where scoring runs under bf16 autocast (a GPU), else '' (fp32)."""
    from lib.training.tokenized import use_bf16

    return "bf16" if use_bf16(model) else ""


def cache_setting(windowing: str, precision: str) -> str:
    """The cache's setting column: bf16 scores differ from fp32 ones in the third decimal, so a
    workspace scored on a GPU never serves them to a CPU evaluation (or the reverse). fp32 keeps
    the plain windowing key, so existing caches stay valid."""
    return f"{windowing}+{precision}" if precision else windowing


# ---- the cache -----------------------------------------------------------------------------------


class ScoreCache:
    """Scores of one (model, max length, window setting) in the workspace database."""

    def __init__(self, ws: Workspace, model_fp: str, max_length: int, windowing: str):
        self.ws, self.model_fp, self.max_length, self.windowing = (
            ws, model_fp, int(max_length), windowing)

    def lookup(self, hashes: list[str]) -> dict[str, float]:
        if not hashes:
            return {}
        frame = pd.DataFrame({"pair_hash": hashes})
        with db.connect(self.ws) as con:
            con.register("wanted_hashes", frame)
            rows = con.execute(
                "SELECT c.pair_hash, c.score FROM score_cache c "
                "JOIN wanted_hashes w ON w.pair_hash = c.pair_hash "
                "WHERE c.model_fp = ? AND c.max_length = ? AND c.windowing = ?",
                [self.model_fp, self.max_length, self.windowing],
            ).fetchall()
            con.unregister("wanted_hashes")
        return dict(rows)

    def store(self, hashes: list[str], scores) -> None:
        if not hashes:
            return
        frame = pd.DataFrame({
            "model_fp": self.model_fp, "max_length": self.max_length,
            "windowing": self.windowing, "pair_hash": hashes,
            "score": np.asarray(scores, dtype=np.float64),
        })
        with db.connect(self.ws) as con:
            con.register("new_scores", frame)
            con.execute(
                "INSERT OR IGNORE INTO score_cache (model_fp, max_length, windowing, pair_hash, "
                "score) SELECT model_fp, max_length, windowing, pair_hash, score FROM new_scores"
            )
            con.unregister("new_scores")


def clear_cache(ws: Workspace, model_fp: str | None = None) -> int:
    """Drop cached scores (of one model, or all); returns the rows removed."""
    with db.connect(ws) as con:
        if model_fp is None:
            n = con.execute("SELECT count(*) FROM score_cache").fetchone()[0]
            con.execute("DELETE FROM score_cache")
        else:
            n = con.execute("SELECT count(*) FROM score_cache WHERE model_fp = ?",
                            [model_fp]).fetchone()[0]
            con.execute("DELETE FROM score_cache WHERE model_fp = ?", [model_fp])
    return int(n)


# ---- progress ------------------------------------------------------------------------------------


class _Eta:
    """Progress messages with rate and ETA, from the pairs scored since the start."""

    def __init__(self, label: str, total: int, progress: ProgressFn | None):
        self.label, self.total, self.progress = label, total, progress
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.progress:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (self.total - done) / rate if rate else None
        text = f"{self.label}: {done:,}/{self.total:,} new pairs"
        if rate:
            text += f", {rate:,.0f} pairs/s, ETA {_clock(eta)}"
        self.progress(done / self.total if self.total else 1.0, text)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


# ---- model loading -------------------------------------------------------------------------------

_MODELS: OrderedDict[tuple, object] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_KEEP_MODELS = 3


def cached_cross_encoder(ref: ModelRef, max_length: int | None = None, device: str | None = None,
                         head_seed: int | None = None):
    """Load once per process (page reruns and the playground reuse it); a few kept, LRU.

    `head_seed` seeds the random init of a missing classification head (the bundled default):
    with a run's seed, the head is exactly the one that run started from."""
    from lib.models import load_cross_encoder

    key = ("ce", ref.path, model_fingerprint(ref), max_length, device, head_seed)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        if head_seed is not None:
            from transformers import set_seed

            set_seed(head_seed)
        model = load_cross_encoder(ref, max_length=max_length, device=device)
        _MODELS[key] = model
        while len(_MODELS) > _KEEP_MODELS:
            _MODELS.popitem(last=False)
        return model


def cached_exported(path: str, fmt: str, max_length: int | None = None):
    """An ONNX/OpenVINO export (lib.export.ExportedCrossEncoder), loaded once per process."""
    from lib.export import FILE_NAMES, ExportedCrossEncoder

    graph = Path(path) / FILE_NAMES[fmt]
    st = graph.stat() if graph.is_file() else None
    key = ("export", path, fmt, st.st_mtime_ns if st else 0, max_length)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = ExportedCrossEncoder(path, fmt, max_length=max_length)
            while len(_MODELS) > _KEEP_MODELS:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return _MODELS[key]


def export_fingerprint(path: str, fmt: str) -> str:
    from lib.export import FILE_NAMES

    graph = Path(path) / FILE_NAMES[fmt]
    st = graph.stat() if graph.is_file() else None
    raw = f"{path}:{fmt}:{st.st_size if st else 0}:{st.st_mtime_ns if st else 0}"
    return f"export:{fmt}:" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def ranker_model(ranker: Ranker, max_length: int | None = None, device: str | None = None):
    """The loaded cross-encoder of a CROSS_ENCODER ranker: PyTorch, or its export."""
    if ranker.export_format:
        return cached_exported(str(ranker.path), ranker.export_format, max_length)
    seed = ranker.head_seed if ranker.untrained_head else None
    return cached_cross_encoder(ranker.model_ref, max_length=max_length, device=device,
                                head_seed=seed)


def release_models(kind: str | None = None) -> int:
    """Drop loaded models ('ce', 'bi' or all) from this process's cache, e.g. so a training
    worker does not keep a baseline's weights in GPU memory; returns how many were dropped."""
    with _MODELS_LOCK:
        keys = [k for k in _MODELS if kind is None or k[0] == kind]
        for k in keys:
            del _MODELS[k]
    return len(keys)


def cached_bi_encoder(ref: ModelRef, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    key = ("bi", ref.path, model_fingerprint(ref), device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = SentenceTransformer(
                ref.path, device=device, local_files_only=ref.kind != "hub")
            while len(_MODELS) > _KEEP_MODELS:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return _MODELS[key]


def effective_max_length(model) -> int:
    """The max length the model really truncates at (CrossEncoder.max_length or the encoder's)."""
    value = getattr(model, "max_seq_length", None)
    return int(value) if value else 512


# ---- cross-encoder -------------------------------------------------------------------------------


def _unique(queries: list[str], documents: list[str]):
    hashes = pair_hashes(queries, documents)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    return hashes, first


def score_cross_encoder(
    ws: Workspace | None,
    model,
    model_fp: str,
    queries: list[str],
    documents: list[str],
    *,
    window_stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    label: str = "cross-encoder",
    model_source: str | None = None,
    head_seed: int | None = None,
) -> tuple[np.ndarray, ScoreStats]:
    """Scores of every pair (max over windows when window_stride is set); cache used when ws.

    With a Ray cluster configured and at least RERANKER_STUDIO_RAY_SCORING_MIN_PAIRS pairs to
    score, a Ray Data job scores them with replicas loaded from `model_source` (the same
    score_pairs on each), and the scores land in the same cache."""
    t0 = time.perf_counter()
    max_length = effective_max_length(model)
    windowing = windowing_key(window_stride)
    stats = ScoreStats(label, len(queries), max_length=max_length, windowing=windowing)
    hashes, first = _unique(queries, documents)
    stats.n_unique = len(first)
    setting = cache_setting(windowing, precision_tag(model))
    cache = ScoreCache(ws, model_fp, max_length, setting) if ws is not None else None
    known = cache.lookup(list(first)) if cache else {}
    stats.n_cached = len(known)
    missing = [h for h in first if h not in known]
    # longest first, as CrossEncoder.predict orders its batches: little padding per batch
    missing.sort(key=lambda h: -(len(queries[first[h]]) + len(documents[first[h]])))
    eta = _Eta(f"scoring {label}", len(missing), progress)
    eta.update(0)
    pending: list[str] = []  # scored, not yet in the cache: written every few seconds
    last_flush = time.perf_counter()
    n_windows = 0

    def on_chunk(lo: int, scores: np.ndarray, n_work: int) -> None:
        nonlocal last_flush, pending, n_windows
        part = missing[lo:lo + len(scores)]
        known.update(zip(part, scores.tolist(), strict=True))
        pending += part
        n_windows += n_work
        if cache and time.perf_counter() - last_flush > FLUSH_SECONDS:
            cache.store(pending, [known[h] for h in pending])
            pending, last_flush = [], time.perf_counter()
        eta.update(lo + len(scores))

    pairs = [(queries[first[h]], documents[first[h]]) for h in missing]
    cluster = None
    if model_source is not None and pairs:
        from lib import ray_backend

        cluster = ray_backend.scoring_settings(ws, len(pairs))
    if cluster is not None:
        scores = ray_backend.score_on_cluster(
            ws, cluster, model_source, pairs, max_length=max_length, head_seed=head_seed,
            batch_size=batch_size, window_stride=window_stride)
        on_chunk(0, scores, len(pairs))
        stats.note = f"{len(pairs)} pairs scored by a Ray Data job on {cluster.address}"
    else:
        score_pairs(model, pairs, batch_size=batch_size, window_stride=window_stride,
                    max_length=max_length, on_chunk=on_chunk)
    if cache and pending:
        cache.store(pending, [known[h] for h in pending])
    stats.n_scored = len(missing)
    stats.n_windows = n_windows if window_stride is not None else None
    stats.seconds = time.perf_counter() - t0
    return np.array([known[h] for h in hashes], dtype=np.float64), stats


def _can_pipeline(model) -> bool:
    """The pieces of CrossEncoder.predict we drive ourselves (sentence-transformers >= 4)."""
    return (all(hasattr(model, a) for a in ("preprocess", "activation_fn", "device"))
            and getattr(model, "num_labels", 1) == 1)


def _forward(model, features) -> np.ndarray:
    """What CrossEncoder.predict does with one tokenised batch (bf16 autocast on a GPU)."""
    from lib.training.tokenized import forward_scores

    return forward_scores(model, features)


def _tokenized_batches(model, work: list, batch_size: int, prompt: str | None):
    """(features, positions in `work`) per batch: each pair tokenised once, the chunk sorted by
    token length, every batch padded to its longest pair (a multiple of 8), as in training."""
    from lib.training.tokenized import Unsupported, tokenize_pairs

    try:
        rows = tokenize_pairs(model, work, prompt=prompt)
    except Unsupported:
        for b in range(0, len(work), batch_size):
            yield model.preprocess(work[b:b + batch_size], prompt=prompt), list(
                range(b, min(b + batch_size, len(work))))
        return
    order = np.argsort(-rows.lengths, kind="stable")
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        yield rows.collate(idx), idx.tolist()


_TUNE_LOCK = threading.Lock()


class _CoreForTokenizer:
    """On a CPU, torch's kernels use every core and the tokenizer thread competes with them (a
    preempted torch thread stalls the whole kernel). After a warm-up chunk, one chunk runs with
    all n threads and the next with n - 1 (the tokenizer gets a core); whichever scored more
    tokens per second is kept for the rest. Big models (forward-bound) keep n; tiny ones gain.
    Restored at the end. One scorer at a time tunes: torch's thread count is process-wide."""

    MIN_CHUNKS = 20  # the trial chunk at n - 1 threads costs at most ~5% when it loses

    def __init__(self, model, pipelined: bool, n_chunks: int):
        import torch

        self.torch = torch
        on_cpu = getattr(getattr(model, "device", None), "type", "cpu") == "cpu"
        self.n = torch.get_num_threads()
        self.active = (pipelined and on_cpu and self.n > 1 and n_chunks >= self.MIN_CHUNKS
                       and _TUNE_LOCK.acquire(blocking=False))
        self.chunks = 0
        self.tokens = 0
        self.t = time.perf_counter()
        self.rate_full = 0.0
        self.reduced = False

    def batch(self, features) -> None:
        ids = features.get("input_ids") if hasattr(features, "get") else None
        self.tokens += int(ids.numel()) if ids is not None else 0

    def chunk_done(self) -> None:
        if not self.active or self.chunks > 2:
            return
        now = time.perf_counter()
        rate = self.tokens / max(now - self.t, 1e-9)
        self.t, self.tokens = now, 0
        self.chunks += 1
        if self.chunks == 2:  # chunk 1 (after the warm-up) ran with n threads: try n - 1
            self.rate_full = rate
            self.torch.set_num_threads(self.n - 1)
            self.reduced = True
        elif self.chunks == 3 and rate <= self.rate_full:
            self.torch.set_num_threads(self.n)
            self.reduced = False

    def close(self) -> None:
        if self.active:
            if self.reduced:
                self.torch.set_num_threads(self.n)
            _TUNE_LOCK.release()


def score_pairs(
    model,
    pairs: list[tuple[str, str]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    window_stride: int | None = None,
    max_length: int | None = None,
    on_chunk: Callable[[int, np.ndarray, int], None] | None = None,
) -> np.ndarray:
    """Scores of `pairs` in order, equal to CrossEncoder.predict's (max over windows if asked;
    bf16 on a GPU, so there equal within bf16 rounding). Pre-tokenised and length-sorted within
    each chunk, batches padded to a multiple of 8: the path the training evaluator uses.

    A background thread tokenises (and cuts windows) ahead while the model scores the current
    batch, so the tokenizer's time hides behind the forward pass (on a GPU; on a CPU where
    _CoreForTokenizer finds that freeing a core for it pays). Every CHUNK_BATCHES batches
    `on_chunk(first_index, scores, n_scored_inputs)` reports the pairs completed. Models
    without the needed API fall back to `predict`.
    """
    out = np.empty(len(pairs))
    if not pairs:
        return out
    pipelined = _can_pipeline(model)
    if pipelined:
        model.eval()
    chunk = max(1, batch_size * CHUNK_BATCHES)
    q: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    tuner = _CoreForTokenizer(model, pipelined, -(-len(pairs) // chunk))
    if pipelined:
        from lib.training.tokenized import predict_prompt

        prompt = predict_prompt(model)

    def produce() -> None:
        try:
            for lo in range(0, len(pairs), chunk):
                part = pairs[lo:lo + chunk]
                if window_stride is None:
                    work, source = part, list(range(len(part)))
                else:
                    from lib.windowing import window_pairs

                    work, source = window_pairs(model.tokenizer, part, int(max_length or 512),
                                                window_stride)
                if pipelined:
                    batches = ((feats, [source[i] for i in idx]) for feats, idx in
                               _tokenized_batches(model, work, batch_size, prompt))
                else:
                    batches = ((work[b:b + batch_size], source[b:b + batch_size])
                               for b in range(0, len(work), batch_size))
                for feats, src in batches:
                    if not put(("batch", feats, src)):
                        return
                if not put(("chunk", lo, len(part), len(work))):
                    return
            put(("end",))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", exc))

    worker = threading.Thread(target=produce, name="tokenize-ahead", daemon=True)
    worker.start()
    best = np.full(chunk, -np.inf)
    try:
        while True:
            item = q.get()
            if item[0] == "batch":
                _, feats, src = item
                if pipelined:
                    scores = _forward(model, feats)
                    tuner.batch(feats)
                else:
                    scores = np.asarray(model.predict(feats, batch_size=len(feats),
                                                      show_progress_bar=False), np.float64)
                np.maximum.at(best, np.asarray(src, dtype=np.int64), scores.reshape(-1))
            elif item[0] == "chunk":
                _, lo, n, n_work = item
                out[lo:lo + n] = best[:n]
                if on_chunk:
                    on_chunk(lo, out[lo:lo + n], n_work)
                best.fill(-np.inf)
                tuner.chunk_done()
            elif item[0] == "error":
                raise item[1]
            else:
                return out
    finally:
        stop.set()
        worker.join(timeout=5)
        tuner.close()


# ---- bi-encoder, BM25, run file ------------------------------------------------------------------


def score_bi_encoder(
    ws: Workspace | None, model, model_fp: str, queries: list[str], documents: list[str], *,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
    label: str = BIENCODER,
) -> tuple[np.ndarray, ScoreStats]:
    """Cosine similarity of normalised embeddings; each distinct text is embedded once."""
    t0 = time.perf_counter()
    max_length = effective_max_length(model)
    stats = ScoreStats(label, len(queries), max_length=max_length)
    hashes, first = _unique(queries, documents)
    stats.n_unique = len(first)
    cache = ScoreCache(ws, model_fp, max_length, "none") if ws is not None else None
    known = cache.lookup(list(first)) if cache else {}
    stats.n_cached = len(known)
    missing = [h for h in first if h not in known]
    if missing:
        wanted = {queries[first[h]] for h in missing} | {documents[first[h]] for h in missing}
        texts = sorted(wanted, key=len, reverse=True)
        eta = _Eta(f"embedding {label}", len(texts), progress)
        eta.update(0)
        index = {t: i for i, t in enumerate(texts)}
        emb = []
        chunk = max(1, batch_size * CHUNK_BATCHES)
        for start in range(0, len(texts), chunk):
            emb.append(model.encode(texts[start:start + chunk], batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False))
            eta.update(min(start + chunk, len(texts)))
        vectors = np.concatenate(emb).astype(np.float32)
        qi = np.array([index[queries[first[h]]] for h in missing])
        di = np.array([index[documents[first[h]]] for h in missing])
        scores = np.einsum("ij,ij->i", vectors[qi], vectors[di]).astype(np.float64)
        known.update(zip(missing, scores.tolist(), strict=True))
        if cache:
            cache.store(missing, scores)
    stats.n_scored = len(missing)
    stats.seconds = time.perf_counter() - t0
    return np.array([known[h] for h in hashes], dtype=np.float64), stats


def score_bm25(pairs: pd.DataFrame, label: str = BM25) -> tuple[np.ndarray, ScoreStats]:
    """BM25 of each candidate for its query; IDF and average length from the distinct candidate
    documents of the whole evaluation set (per-query candidate lists are too small for IDF)."""
    import bm25s

    t0 = time.perf_counter()
    docs = list(dict.fromkeys(pairs["document"]))
    doc_index = {d: i for i, d in enumerate(docs)}
    doc_tokens = bm25s.tokenize(docs, stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(doc_tokens, show_progress=False)
    queries = list(dict.fromkeys(pairs["query"]))
    q_tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    scores = np.zeros(len(pairs))
    q_col = pairs["query"].to_numpy()
    d_idx = np.array([doc_index[d] for d in pairs["document"]], dtype=np.int64)
    rows_of = pd.Series(np.arange(len(pairs))).groupby(q_col).indices
    for q, toks in zip(queries, q_tokens, strict=True):
        ids = retriever.get_tokens_ids(list(toks))
        if not ids:
            continue  # no query word occurs in any candidate: every candidate scores 0
        full = retriever.get_scores_from_ids(ids)
        rows = rows_of[q]
        scores[rows] = full[d_idx[rows]]
    stats = ScoreStats(label, len(pairs), n_unique=len(pairs), n_scored=len(pairs),
                       seconds=time.perf_counter() - t0,
                       note=f"IDF over the {len(docs):,} distinct candidate documents")
    return scores, stats


def score_run_file(path: str, pairs: pd.DataFrame, label: str) -> tuple[np.ndarray, ScoreStats]:
    """The run file's scores for the labelled candidates; candidates it lacks rank last."""
    t0 = time.perf_counter()
    run = load_run_file(path)
    key = pairs["query_id"].astype(str) + _SEP + pairs["doc_id"].astype(str)
    run_key = run["query_id"] + _SEP + run["doc_id"]
    lookup = pd.Series(run["score"].to_numpy(), index=run_key.to_numpy())
    found = key.map(lookup)
    covered_queries = set(run["query_id"]) & set(pairs["query_id"].astype(str))
    if not covered_queries:
        raise ValueError(
            f"run file {path}: none of its {run['query_id'].nunique():,} query ids is an "
            "evaluation query id (first few: "
            + ", ".join(map(str, run["query_id"].unique()[:3])) + ")"
        )
    missing = int(found.isna().sum())
    extra = int((~run_key.isin(set(key))).sum())
    scores = found.to_numpy(dtype=np.float64, na_value=np.nan)
    if missing:
        # below every score the run gave that query (or 0 when it gave none): ranks last
        q = pairs["query_id"].astype(str).to_numpy()
        floor = pd.Series(scores).groupby(q).transform("min").to_numpy()
        floor = np.where(np.isnan(floor), 0.0, floor - 1.0)
        scores = np.where(np.isnan(scores), floor, scores)
    notes = []
    if missing:
        notes.append(f"{missing:,} labelled candidates are not in the run file (ranked last)")
    if extra:
        notes.append(f"{extra:,} run entries are not labelled candidates (ignored)")
    stats = ScoreStats(label, len(pairs), n_unique=len(pairs), n_scored=len(pairs) - missing,
                       seconds=time.perf_counter() - t0, note="; ".join(notes) or None)
    return scores, stats


# ---- one entry point -----------------------------------------------------------------------------


def score_ranker(
    ws: Workspace | None,
    ranker: Ranker,
    pairs: pd.DataFrame,
    *,
    max_length: int | None = None,
    window_stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, ScoreStats]:
    """Scores of `pairs` (query_id, doc_id, query, document) by one ranker, in row order."""
    queries = pairs["query"].astype(str).tolist()
    documents = pairs["document"].astype(str).tolist()
    if ranker.kind == CROSS_ENCODER:
        ref = ranker.model_ref
        seed = ranker.head_seed if ranker.untrained_head else None
        model = ranker_model(ranker, max_length=max_length, device=device)
        fp = "ce:" + model_fingerprint(ref) + (f":head-seed-{seed}" if seed is not None else "")
        if ranker.export_format:
            fp = export_fingerprint(str(ranker.path), ranker.export_format)
        return score_cross_encoder(
            ws, model, fp, queries, documents,
            window_stride=window_stride, batch_size=batch_size, progress=progress,
            label=ranker.name,
            model_source=None if ranker.export_format else str(ref.path), head_seed=seed,
        )
    if ranker.kind == BIENCODER:
        ref = ranker.model_ref
        model = cached_bi_encoder(ref, device=device)
        return score_bi_encoder(ws, model, "bi:" + model_fingerprint(ref), queries, documents,
                                batch_size=batch_size, progress=progress, label=ranker.name)
    if ranker.kind == BM25:
        return score_bm25(pairs, label=ranker.name)
    if ranker.kind == RUN_FILE:
        return score_run_file(str(ranker.path), pairs, ranker.name)
    if ranker.kind == FUSION:  # no labelled split here: fixed / saved weight (see fusion_ranker)
        from lib.evaluation.fusion_ranker import score_fusion_plain

        return score_fusion_plain(ws, ranker, pairs, max_length=max_length,
                                  window_stride=window_stride, batch_size=batch_size,
                                  device=device, progress=progress)
    raise ValueError(f"unknown ranker kind {ranker.kind!r}")
