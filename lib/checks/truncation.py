"""Truncation: how many (query, document) pairs exceed the model's max length, and by how much.

A cross-encoder silently cuts `[CLS] query [SEP] document [SEP]` at max_length, so the end of a
long document never counts, in training or in evaluation. Lengths come from the selected model's
own (fast) tokenizer; each distinct query and document is tokenised once, in batches, and a pair's
length is query + document + the tokenizer's special tokens for a pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from lib import db
from lib.split import SPLITS
from lib.windowing import DEFAULT_STRIDE, MIN_WINDOW_TOKENS
from lib.workspace import Workspace

STANDARD_LENGTHS = (64, 128, 192, 256, 320, 384, 448, 512, 768, 1024, 2048, 4096, 8192)
CHOICES = (128, 256, 384, 512)
COVERAGE = 0.95
REL_THRESHOLD = 1
HIST_BINS = 60
EXAMPLES = 10
_BATCH = 2048
SAMPLE_CHECK = 256  # documents re-tokenised whole to confirm the word-sum shortcut

Progress = Callable[[str, float], None]


def model_limit(tokenizer, config_positions: int | None = None) -> int:
    """The longest input the model takes: the tokenizer's limit and the position table's."""
    values = [v for v in (getattr(tokenizer, "model_max_length", None), config_positions)
              if isinstance(v, int) and 0 < v < 1_000_000]
    return min(values) if values else 512


def count_tokens(tokenizer, texts: Sequence[str], progress: Progress | None = None,
                 label: str = "texts") -> np.ndarray:
    """Tokens of each text without special tokens (batched fast tokenizer, no truncation)."""
    out = np.empty(len(texts), np.int64)
    for i in range(0, len(texts), _BATCH):
        enc = tokenizer(list(texts[i : i + _BATCH]), add_special_tokens=False, truncation=False,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)
        out[i : i + _BATCH] = [len(ids) for ids in enc["input_ids"]]
        if progress:
            progress(f"tokenising {len(texts):,} {label}", min(1.0, (i + _BATCH) / len(texts)))
    return out


def pair_token_lengths(tokenizer, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Total tokens of each (query, document) pair including special tokens, uncut."""
    queries = sorted({q for q, _ in pairs})
    docs = sorted({d for _, d in pairs})
    qn = dict(zip(queries, count_tokens(tokenizer, queries), strict=True))
    dn = dict(zip(docs, count_tokens(tokenizer, docs), strict=True))
    special = tokenizer.num_special_tokens_to_add(pair=True)
    return np.array([qn[q] + dn[d] + special for q, d in pairs], np.int64)


def check_truncation(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int,
                     labels: Sequence[int] | None = None) -> dict:
    """Truncation of a list of (query, document) pairs at max_length (for config warnings):
    truncated pairs, tokens lost, relevant pairs truncated (when labels are given)."""
    total = pair_token_lengths(tokenizer, pairs)
    labs = np.asarray(labels if labels is not None else np.zeros(len(total), np.int64))
    return truncation_stats(total, labs, max_length)


def windows_needed(query_tokens: np.ndarray, doc_tokens: np.ndarray, special: int,
                   max_length: int, stride: int = DEFAULT_STRIDE) -> np.ndarray:
    """Model calls per pair when long documents are scored as windows (lib.windowing)."""
    room = max_length - special
    floor = max(1, min(MIN_WINDOW_TOKENS, room // 2))
    budget = np.maximum(room - query_tokens, floor)
    overlap = np.minimum(stride, budget // 2)
    extra = np.ceil(np.maximum(doc_tokens - budget, 0) / (budget - overlap)).astype(np.int64)
    return 1 + extra


def truncation_stats(total: np.ndarray, labels: np.ndarray, max_length: int) -> dict:
    """Truncated pairs, tokens lost and relevant pairs truncated, for one group of pairs."""
    total = np.asarray(total, np.int64)
    labels = np.asarray(labels)
    lost = np.maximum(total - max_length, 0)
    cut = lost > 0
    rel = labels >= REL_THRESHOLD
    n, n_rel = len(total), int(rel.sum())
    lost_cut = lost[cut]
    return {
        "pairs": n,
        "truncated": int(cut.sum()),
        "truncated_share": round(float(cut.mean()), 4) if n else 0.0,
        "relevant_pairs": n_rel,
        "relevant_truncated": int((cut & rel).sum()),
        "relevant_truncated_share": round(float((cut & rel).sum() / n_rel), 4) if n_rel else 0.0,
        "tokens_lost": {
            "total": int(lost.sum()),
            "mean": round(float(lost_cut.mean()), 1) if len(lost_cut) else 0.0,
            "p50": _pct(lost_cut, 50), "p90": _pct(lost_cut, 90),
            "max": int(lost_cut.max()) if len(lost_cut) else 0,
        },
        "length": {"p50": _pct(total, 50), "p95": _pct(total, 95),
                   "max": int(total.max()) if n else 0},
    }


def _pct(a: np.ndarray, q: float) -> int:
    return int(math.ceil(np.percentile(a, q))) if len(a) else 0


def suggest_max_length(total: np.ndarray, limit: int, coverage: float = COVERAGE) -> int:
    """The shortest standard max length (<= the model's limit) that fits `coverage` of pairs."""
    if len(total) == 0:
        return min(CHOICES[0], limit)
    total = np.asarray(total)
    k = max(1, math.ceil(coverage * len(total) - 1e-9))  # the k shortest pairs must fit
    need = int(np.partition(total, k - 1)[k - 1])
    for length in STANDARD_LENGTHS:
        if length >= need and length <= limit:
            return length
    return limit


def coverage_table(total: np.ndarray, limit: int) -> dict[str, float]:
    """Share of pairs that fit at each standard length the model allows."""
    total = np.asarray(total)
    lengths = [x for x in STANDARD_LENGTHS if x <= limit]
    if limit not in lengths:
        lengths.append(limit)
    return {str(x): round(float((total <= x).mean()), 4) if len(total) else 1.0 for x in lengths}


def histogram(values_by_split: dict[str, np.ndarray], max_length: int,
              bins: int = HIST_BINS) -> dict:
    """Shared bins for all splits; the last bin also holds everything longer (overflow)."""
    every = np.concatenate([v for v in values_by_split.values()]) if values_by_split else []
    top = max(int(np.percentile(every, 99)) if len(every) else 0, int(max_length * 1.25), 8)
    width = _nice_width(top / bins)
    edges = np.arange(0, width * math.ceil(top / width) + 1, width)
    counts = {sp: np.histogram(np.minimum(v, edges[-1] - 1), edges)[0].tolist()
              for sp, v in values_by_split.items()}
    return {"bin_width": int(width), "edges": edges.tolist(), "counts": counts,
            "overflow_from": int(edges[-2])}


def word_additive(tokenizer) -> bool:
    """True when a text's token count is the sum of its space-separated chunks' counts.

    Holds for WordPiece tokenizers whose pre-tokenizer splits on whitespace (BERT, MiniLM,
    ELECTRA...): a space never becomes a token and nothing merges across it. Then each distinct
    word is tokenised once instead of every document (~30x faster on 1M documents).
    """
    from tokenizers import models, normalizers, pre_tokenizers

    bt = getattr(tokenizer, "backend_tokenizer", None)
    if bt is None or not isinstance(bt.model, models.WordPiece):
        return False
    if not isinstance(bt.pre_tokenizer, (pre_tokenizers.BertPreTokenizer,
                                         pre_tokenizers.Whitespace,
                                         pre_tokenizers.WhitespaceSplit)):
        return False
    local = (normalizers.BertNormalizer, normalizers.Lowercase, normalizers.StripAccents,
             normalizers.NFD, normalizers.NFKD, normalizers.NFC, normalizers.NFKC)
    if bt.normalizer is not None and not isinstance(bt.normalizer, local):
        return False
    return not any(" " in t for t in tokenizer.get_added_vocab())


_PAIRS_OF_SPLIT = (
    "FROM pairs p JOIN split_assignments a ON a.split_id = $sid AND a.query_id = p.query_id "
    "WHERE p.dataset_id = $ds"
)


def _load_by_words(con, params: dict, arr: dict, tokenizer,
                   progress: Progress | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-pair query and document tokens as sums over distinct words (see word_additive);
    None when a sample of whole documents disagrees (then whole texts are tokenised)."""
    words = [r[0] for r in con.execute(
        "SELECT unnest(string_split(query, ' ')) AS w FROM pairs WHERE dataset_id = $ds "
        "UNION SELECT unnest(string_split(document, ' ')) FROM pairs WHERE dataset_id = $ds",
        {"ds": params["ds"]}).fetchall()]
    counts = count_tokens(tokenizer, words, progress, "distinct words")
    con.register("word_tokens", pd.DataFrame({"w": words, "n": counts}))
    out = []
    for column in ("query", "document"):
        got = con.execute(
            f"SELECT u.line, sum(wt.n)::BIGINT AS n FROM (SELECT p.line, "
            f"unnest(string_split(p.{column}, ' ')) AS w {_PAIRS_OF_SPLIT}) u "
            "JOIN word_tokens wt ON wt.w = u.w GROUP BY u.line", params,
        ).fetchnumpy()
        tok = np.zeros(len(arr["line"]), np.int64)
        tok[np.searchsorted(arr["line"], np.asarray(got["line"]))] = np.asarray(got["n"])
        out.append(tok)
    con.unregister("word_tokens")
    sample = con.execute(
        f"SELECT * FROM (SELECT p.line, p.document {_PAIRS_OF_SPLIT}) "
        f"USING SAMPLE reservoir({SAMPLE_CHECK} ROWS) REPEATABLE (7) "
        f"UNION SELECT * FROM (SELECT p.line, p.document {_PAIRS_OF_SPLIT} "
        "ORDER BY length(p.document) DESC LIMIT 16)", params,
    ).fetchall()
    direct = count_tokens(tokenizer, [d for _, d in sample])
    at = np.searchsorted(arr["line"], [line for line, _ in sample])
    if not np.array_equal(out[1][at], direct):
        return None
    return out[0], out[1]


def _load(ws: Workspace, dataset_id: str, split_id: str, tokenizer,
          progress: Progress | None) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Per pair (by line): query tokens, document tokens, label and split code."""
    params = {"ds": dataset_id, "sid": split_id}
    cases = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SPLITS))
    with db.connect(ws) as con:
        arr = con.execute(
            f"SELECT p.line, p.label, CASE a.split {cases} END AS split {_PAIRS_OF_SPLIT} "
            "ORDER BY p.line", params,
        ).fetchnumpy()
        arr = {k: np.asarray(v) for k, v in arr.items()}
        n_q, n_d = con.execute(
            f"SELECT count(DISTINCT p.query), count(DISTINCT hash(p.document)) {_PAIRS_OF_SPLIT}",
            params,
        ).fetchone()
        info = {"distinct_queries": int(n_q), "distinct_documents": int(n_d)}
        if word_additive(tokenizer):
            got = _load_by_words(con, params, arr, tokenizer, progress)
            if got is not None:
                return got[0], got[1], arr, {**info, "counted_by": "distinct words"}
        # any tokenizer: each distinct query and document tokenised whole
        texts = {}
        for column in ("query", "document"):
            con.execute(
                f"CREATE TEMP TABLE t_{column} AS SELECT {column} AS text, "
                f"(row_number() OVER () - 1)::BIGINT AS i FROM (SELECT DISTINCT p.{column} "
                f"{_PAIRS_OF_SPLIT})", params)
            texts[column] = [r[0] for r in con.execute(
                f"SELECT text FROM t_{column} ORDER BY i").fetchall()]
        idx = con.execute(
            "SELECT tq.i AS qi, td.i AS di FROM (SELECT p.line, p.query, p.document "
            f"{_PAIRS_OF_SPLIT}) p JOIN t_query tq ON tq.text = p.query "
            "JOIN t_document td ON td.text = p.document ORDER BY p.line", params,
        ).fetchnumpy()
    qn = count_tokens(tokenizer, texts["query"], progress, "queries")
    dn = count_tokens(tokenizer, texts["document"], progress, "documents")
    return (qn[np.asarray(idx["qi"])], dn[np.asarray(idx["di"])], arr,
            {**info, "counted_by": "distinct texts"})


def dataset_truncation(
    ws: Workspace,
    dataset_id: str,
    split_id: str,
    tokenizer,
    max_length: int,
    limit: int,
    progress: Progress | None = None,
    stride: int = DEFAULT_STRIDE,
) -> dict:
    """Truncation per split of a dataset at `max_length`, with a suggestion and examples."""
    if progress:
        progress("loading texts", 0.0)
    q_tok, d_tok, arr, info = _load(ws, dataset_id, split_id, tokenizer, progress)
    special = tokenizer.num_special_tokens_to_add(pair=True)
    total = q_tok + d_tok + special
    labels, split_code = arr["label"], arr["split"]
    windows = windows_needed(q_tok, d_tok, special, max_length, stride)

    per_split, by_split_total, by_split_lost = {}, {}, {}
    for i, sp in enumerate(SPLITS):
        m = split_code == i
        if not m.any():
            continue
        per_split[sp] = truncation_stats(total[m], labels[m], max_length)
        per_split[sp]["model_calls_with_windows"] = int(windows[m].sum())
        by_split_total[sp] = total[m]
        lost = total[m] - max_length
        by_split_lost[sp] = lost[lost > 0]
    overall = truncation_stats(total, labels, max_length)
    overall["model_calls_with_windows"] = int(windows.sum())
    suggested = suggest_max_length(total, limit)
    return {
        "max_length": int(max_length),
        "model_limit": int(limit),
        "special_tokens": int(special),
        "stride": int(stride),
        **info,
        "overall": overall,
        "splits": per_split,
        "suggested_max_length": int(suggested),
        "coverage": coverage_table(total, limit),
        "histogram": histogram(by_split_total, max_length),
        "lost_histogram": _lost_histogram(by_split_lost),
        "examples": _examples(ws, dataset_id, arr, total, max_length),
        "remedy": _remedy(overall, suggested, max_length, limit),
    }


def _nice_width(raw: float) -> int:
    """A bin width of 1, 2, 4, 8, 16... tokens, so bins line up with the standard lengths."""
    width = 1
    while width < raw:
        width *= 2
    return width


def _lost_histogram(lost_by_split: dict[str, np.ndarray], bins: int = 30) -> dict:
    every = np.concatenate(list(lost_by_split.values())) if lost_by_split else np.zeros(0)
    if len(every) == 0:
        return {"bin_width": 1, "edges": [0, 1], "counts": {}}
    top = max(int(np.percentile(every, 99)), 1)
    width = _nice_width(top / bins)
    edges = np.arange(0, width * math.ceil(top / width) + 1, width)
    counts = {sp: np.histogram(np.minimum(v, edges[-1] - 1), edges)[0].tolist()
              for sp, v in lost_by_split.items()}
    return {"bin_width": int(width), "edges": edges.tolist(), "counts": counts}


def _examples(ws: Workspace, dataset_id: str, arr: dict, total: np.ndarray,
              max_length: int) -> list[dict]:
    """The most-cut pairs, relevant ones first: what the model never reads."""
    lost = total - max_length
    cut = np.flatnonzero(lost > 0)
    if len(cut) == 0:
        return []
    rel = arr["label"][cut] >= REL_THRESHOLD
    order = cut[np.lexsort((-lost[cut], ~rel))][:EXAMPLES]
    lines = [int(x) for x in arr["line"][order]]
    info = {int(k): (k, total[i], lost[i], SPLITS[arr["split"][i]])
            for k, i in zip(arr["line"][order], order, strict=True)}
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT line, query_id, doc_id, left(query, 200), "
            "right(document, 200), label FROM pairs WHERE dataset_id = ? AND line IN "
            f"({', '.join('?' * len(lines))})", [dataset_id, *lines],
        ).fetchall()
    out = []
    for line, qid, did, query, tail, label in rows:
        _, tot, lo, sp = info[int(line)]
        out.append({"line": int(line), "split": sp, "query_id": qid, "doc_id": did,
                    "label": int(label), "tokens": int(tot), "tokens_lost": int(lo),
                    "query": query, "document_end_never_read": tail})
    out.sort(key=lambda r: (r["label"] < REL_THRESHOLD, -r["tokens_lost"]))
    return out


def _remedy(overall: dict, suggested: int, max_length: int, limit: int) -> str:
    if overall["truncated"] == 0:
        return f"Every pair fits in {max_length} tokens: nothing is cut."
    parts = []
    if suggested > max_length:
        parts.append(f"Raise max length to {suggested} (covers {COVERAGE:.0%} of pairs; longer "
                     "inputs cost more memory and time, roughly linearly to quadratically).")
    elif suggested < max_length:
        parts.append(f"{suggested} tokens already cover {COVERAGE:.0%} of pairs: a shorter max "
                     "length trains faster.")
    if overall["length"]["p95"] > limit or overall["truncated"]:
        parts.append(
            "Score long documents as overlapping windows (lib.windowing: each window fits next to "
            "the query, the best window's score counts): "
            f"{overall['model_calls_with_windows']:,} model calls instead of {overall['pairs']:,}."
        )
    return " ".join(parts)
