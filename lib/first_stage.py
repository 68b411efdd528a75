"""First-stage retrieval over a corpus: a BM25 index and bi-encoder embeddings, cached on disk.

Both are built once per corpus (and per model for embeddings) under
`cache/corpora/<corpus_id>/`, written to a temporary folder and renamed into place, so an
interrupted build is never mistaken for a finished one. Corpus ids are content hashes, so a
changed corpus is a new id and gets new indexes; the embedding folder is named by the model's
fingerprint, so new weights mean new embeddings.

BM25 is built here rather than by `bm25s.BM25.index` because that keeps every document's token
list in Python lists (gigabytes at 1M documents); we keep token ids in numpy arrays batch by
batch and build the same Lucene-variant score matrix (k1=1.5, b=0.75, bm25s's tokenizer with
English stop words), so the scores equal what bm25s computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.corpora import Corpus, index_dir, iter_texts
from lib.workspace import Workspace

K1, B = 1.5, 0.75
BM25_VERSION = "bm25-v1"
SEARCH_CHUNK = 200_000
ProgressFn = Callable[[int, int], None]


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.lexsort((part, -scores[part]))]  # by score, ties by position
    return order, scores[order]


# ---- BM25 --------------------------------------------------------------------------------------


@dataclass
class Bm25Index:
    """CSC score matrix (terms x documents), as bm25s stores it; arrays memory-mapped."""

    vocab: dict[str, int]
    idf: np.ndarray
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    n_docs: int
    avgdl: float
    name: str = "bm25"

    def _ids(self, tokens: list[str]) -> list[int]:
        return sorted({self.vocab[t] for t in tokens if t in self.vocab})

    def scores(self, tokens: list[str]) -> np.ndarray:
        out = np.zeros(self.n_docs, dtype=np.float32)
        for t in self._ids(tokens):
            lo, hi = self.indptr[t], self.indptr[t + 1]
            out[self.indices[lo:hi]] += self.data[lo:hi]
        return out

    def search(self, queries: list[str], k: int,
               progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k positions and scores per query (rows sorted best first)."""
        k = min(k, self.n_docs)
        pos = np.empty((len(queries), k), dtype=np.int64)
        sc = np.empty((len(queries), k), dtype=np.float32)
        for i, toks in enumerate(tokenize(queries) if queries else []):
            pos[i], sc[i] = _top_k(self.scores(toks), k)
            if progress and (i % 200 == 0 or i == len(queries) - 1):
                progress(i + 1, len(queries))
        return pos, sc

    def score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        """BM25 of any (query, text) pair with this corpus's statistics (text need not be in it)."""
        out = np.zeros(len(queries), dtype=np.float64)
        q_toks, d_toks = tokenize(queries), tokenize(texts)
        for i, (q, d) in enumerate(zip(q_toks, d_toks, strict=True)):
            counts: dict[str, int] = {}
            for t in d:
                counts[t] = counts.get(t, 0) + 1
            norm = K1 * (1 - B + B * len(d) / self.avgdl)
            out[i] = sum(float(self.idf[self.vocab[t]]) * counts[t] / (norm + counts[t])
                         for t in set(q) if t in counts and t in self.vocab)
        return out


def build_bm25(ws: Workspace, corpus: Corpus, progress: ProgressFn | None = None) -> Path:
    """Tokenise the corpus batch by batch into numpy arrays and write the score matrix."""
    final = index_dir(ws, corpus) / BM25_VERSION
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vocab: dict[str, int] = {}
    docs_parts, terms_parts, tf_parts, lens = [], [], [], []
    done = 0
    for texts in iter_texts(ws, corpus):
        toks = tokenize(texts)
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in toks]
        n_tok = np.fromiter((len(d) for d in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for d in ids for t in d), dtype=np.int64, count=int(n_tok.sum()))
        doc = np.repeat(np.arange(done, done + len(ids), dtype=np.int64), n_tok)
        keys, tf = np.unique((doc << 32) | flat, return_counts=True)
        docs_parts.append((keys >> 32).astype(np.int32))
        terms_parts.append((keys & 0xFFFFFFFF).astype(np.int32))
        tf_parts.append(tf.astype(np.float32))
        lens.append(n_tok.astype(np.float32))
        done += len(ids)
        if progress:
            progress(done, corpus.n_docs)
    docs = np.concatenate(docs_parts) if docs_parts else np.zeros(0, np.int32)
    terms = np.concatenate(terms_parts) if terms_parts else np.zeros(0, np.int32)
    tf = np.concatenate(tf_parts) if tf_parts else np.zeros(0, np.float32)
    del docs_parts, terms_parts, tf_parts
    doc_len = np.concatenate(lens) if lens else np.zeros(0, np.float32)
    n_docs, n_vocab = len(doc_len), len(vocab)
    avgdl = float(doc_len.mean()) if n_docs and doc_len.mean() > 0 else 1.0
    df = np.bincount(terms, minlength=n_vocab)
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    tf /= K1 * (1 - B + B * doc_len[docs] / avgdl) + tf
    tf *= idf[terms]
    order = np.argsort(terms, kind="stable")
    np.save(tmp / "data.npy", tf[order])
    del tf
    np.save(tmp / "indices.npy", docs[order])
    del docs, order
    np.save(tmp / "indptr.npy", np.concatenate([[0], np.cumsum(df)]).astype(np.int64))
    np.save(tmp / "idf.npy", idf)
    (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps({
        "corpus_id": corpus.corpus_id, "content_hash": corpus.content_hash, "n_docs": n_docs,
        "avgdl": avgdl, "k1": K1, "b": B, "vocab": n_vocab, "built_at": time.time()}))
    _publish(tmp, final)
    return final


def load_bm25(ws: Workspace, corpus: Corpus, progress: ProgressFn | None = None) -> Bm25Index:
    """The corpus's BM25 index, built first when missing (or built for other content)."""
    folder = index_dir(ws, corpus) / BM25_VERSION
    meta = _read_meta(folder)
    if meta is None or meta.get("content_hash") != corpus.content_hash:
        build_bm25(ws, corpus, progress)
        meta = _read_meta(folder)
        assert meta is not None
    return Bm25Index(
        vocab=json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
        idf=np.load(folder / "idf.npy"),
        data=np.load(folder / "data.npy", mmap_mode="r"),
        indices=np.load(folder / "indices.npy", mmap_mode="r"),
        indptr=np.load(folder / "indptr.npy"),
        n_docs=int(meta["n_docs"]), avgdl=float(meta["avgdl"]))


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


# ---- bi-encoder --------------------------------------------------------------------------------


@dataclass
class EmbeddingIndex:
    """Normalised document embeddings (memory-mapped) and the model that made them."""

    model: object
    emb: np.ndarray
    name: str

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False
                                 ).astype(np.float32)

    def search(self, queries: list[str], k: int,
               progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.emb)
        k = min(k, n)
        q = self.encode(queries) if queries else np.zeros((0, self.emb.shape[1]), np.float32)
        best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_p = np.zeros((len(queries), 0), dtype=np.int64)
        for lo in range(0, n, SEARCH_CHUNK):
            s = q @ np.asarray(self.emb[lo:lo + SEARCH_CHUNK]).T
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
            best_p = np.concatenate([best_p, part + lo], axis=1)
            if best_s.shape[1] > k:
                keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(best_s, keep, 1)
                best_p = np.take_along_axis(best_p, keep, 1)
            if progress:
                progress(min(lo + SEARCH_CHUNK, n), n)
        order = np.lexsort((best_p, -best_s), axis=1) if len(queries) else best_p
        return np.take_along_axis(best_p, order, 1), np.take_along_axis(best_s, order, 1)

    def score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if not queries:
            return np.zeros(0)
        uq, ut = sorted(set(queries)), sorted(set(texts))
        qe, te = self.encode(uq), self.encode(ut)
        qi = {t: i for i, t in enumerate(uq)}
        ti = {t: i for i, t in enumerate(ut)}
        return np.einsum("ij,ij->i", qe[[qi[q] for q in queries]],
                         te[[ti[t] for t in texts]]).astype(np.float64)


def load_embeddings(ws: Workspace, corpus: Corpus, model_spec: str = "default",
                    progress: ProgressFn | None = None, batch_size: int = 64) -> EmbeddingIndex:
    """Corpus embeddings for a sentence-transformers model, computed once and cached."""
    from lib.evaluation.scoring import cached_bi_encoder
    from lib.models import model_fingerprint, resolve_model

    ref = resolve_model(model_spec)
    fp = model_fingerprint(ref)
    folder = index_dir(ws, corpus) / ("bi-" + hashlib.sha1(fp.encode()).hexdigest()[:12])
    model = cached_bi_encoder(ref)
    name = "biencoder" if ref.kind == "default" else f"biencoder:{ref.spec}"
    meta = _read_meta(folder)
    if meta is None or meta.get("content_hash") != corpus.content_hash:
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        dim_fn = (getattr(model, "get_embedding_dimension", None)
                  or model.get_sentence_embedding_dimension)  # renamed in newer versions
        dim = dim_fn()
        emb = np.lib.format.open_memmap(tmp / "emb.npy", mode="w+", dtype=np.float32,
                                        shape=(corpus.n_docs, dim))
        idx = EmbeddingIndex(model, emb, name)
        done = 0
        for texts in iter_texts(ws, corpus, batch=4096):
            emb[done:done + len(texts)] = idx.encode(texts, batch_size)
            done += len(texts)
            if progress:
                progress(done, corpus.n_docs)
        emb.flush()
        del emb
        (tmp / "meta.json").write_text(json.dumps({
            "corpus_id": corpus.corpus_id, "content_hash": corpus.content_hash,
            "model": ref.spec, "model_fp": fp, "dim": dim, "built_at": time.time()}))
        _publish(tmp, folder)
    return EmbeddingIndex(model, np.load(folder / "emb.npy", mmap_mode="r"), name)


def get_retriever(ws: Workspace, corpus: Corpus, spec: str,
                  progress: ProgressFn | None = None) -> Bm25Index | EmbeddingIndex:
    """'bm25', 'biencoder' (bundled all-MiniLM-L6-v2) or 'biencoder:MODEL'."""
    s = spec.strip()
    if s.lower() in {"bm25", "bm-25"}:
        return load_bm25(ws, corpus, progress)
    low = s.lower()
    if low in {"biencoder", "bi-encoder"}:
        return load_embeddings(ws, corpus, "default", progress)
    if low.startswith(("biencoder:", "bi-encoder:")):
        return load_embeddings(ws, corpus, s.split(":", 1)[1], progress)
    raise ValueError(f"first-stage retriever {spec!r}: expected bm25, biencoder or "
                     "biencoder:MODEL (a sentence-transformers model id or path)")
