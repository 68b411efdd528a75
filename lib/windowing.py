"""Score long documents as overlapping windows instead of silently truncating them.

A cross-encoder sees `[CLS] query [SEP] document [SEP]` cut at its max length, so whatever a long
document says after the cut never counts. Splitting the document into overlapping windows that each
fit next to the query, scoring every (query, window) pair and keeping the best score per document
(MaxP) lets the evidence anywhere in the document count.

Windows are cut at word starts (so re-tokenising a window gives the same tokens) and every window
is checked by re-tokenising it with the query; a window that still does not fit is shrunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_STRIDE = 64
# With a very long query, each window still gets at least this many document tokens; the model's
# own truncation then shortens the query (longest-first), as it would without windowing.
MIN_WINDOW_TOKENS = 32
_BATCH = 1024


@dataclass(frozen=True)
class _Encoded:
    n_tokens: int
    offsets: list[tuple[int, int]]
    word_starts: list[bool]


def _encode_documents(tokenizer, documents: Sequence[str]) -> list[_Encoded]:
    out: list[_Encoded] = []
    for i in range(0, len(documents), _BATCH):
        batch = list(documents[i : i + _BATCH])
        enc = tokenizer(
            batch, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
            verbose=False,
        )
        for j in range(len(batch)):
            offsets = [tuple(o) for o in enc["offset_mapping"][j]]
            words = enc.word_ids(j)
            starts = [k == 0 or words[k] is None or words[k] != words[k - 1]
                      for k in range(len(words))]
            out.append(_Encoded(len(offsets), offsets, starts))
    return out


def _count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens per text without special tokens (batched fast tokenizer)."""
    counts: list[int] = []
    for i in range(0, len(texts), _BATCH):
        enc = tokenizer(
            list(texts[i : i + _BATCH]), add_special_tokens=False, truncation=False,
            verbose=False,
        )
        counts.extend(len(ids) for ids in enc["input_ids"])
    return counts


def _pair_lengths(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[int]:
    """Tokens of each (query, text) pair with special tokens, as the model would see it uncut."""
    lengths: list[int] = []
    for i in range(0, len(pairs), _BATCH):
        chunk = pairs[i : i + _BATCH]
        enc = tokenizer(
            [q for q, _ in chunk], [d for _, d in chunk], truncation=False, verbose=False
        )
        lengths.extend(len(ids) for ids in enc["input_ids"])
    return lengths


def _budget(tokenizer, query_tokens: int, max_length: int) -> tuple[int, bool]:
    """Document tokens per window, and whether query + window is guaranteed to fit."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_length - special
    if room < 2:
        raise ValueError(f"max_length {max_length} leaves no room next to {special} special tokens")
    budget = room - query_tokens
    floor = max(1, min(MIN_WINDOW_TOKENS, room // 2))
    if budget >= floor:
        return budget, True
    return floor, False


def _spans(enc: _Encoded, budget: int, stride: int) -> list[tuple[int, int]]:
    """Token spans [start, end) of at most `budget` tokens, overlapping by about `stride`."""
    n = enc.n_tokens
    overlap = min(max(0, stride), budget // 2)
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + budget, n)
        if end < n:
            cut = end
            while cut > start and not enc.word_starts[cut]:
                cut -= 1
            if cut > start:
                end = cut  # else one word is longer than a window: cut inside it
        spans.append((start, end))
        if end >= n:
            return spans
        start = _next_start(enc, start, end, overlap)


def _next_start(enc: _Encoded, start: int, end: int, overlap: int) -> int:
    """A word start about `overlap` tokens before `end`, always after `start`."""
    target = max(end - overlap, start + 1)
    k = target
    while k > start and not enc.word_starts[k]:
        k -= 1
    if k > start:
        return k
    for k in range(target, end + 1):
        if k < enc.n_tokens and enc.word_starts[k]:
            return k
    return target


def _span_text(document: str, enc: _Encoded, span: tuple[int, int]) -> str:
    start, end = span
    return document[enc.offsets[start][0] : enc.offsets[end - 1][1]]


def window_pairs(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_length: int,
    stride: int = DEFAULT_STRIDE,
) -> tuple[list[tuple[str, str]], list[int]]:
    """Expand (query, document) pairs into (query, window) pairs.

    Returns the expanded pairs and, for each, the index of its source pair, so a caller scores
    them all and keeps the max score per source index. A pair that fits gives itself unchanged.
    """
    if not pairs:
        return [], []
    queries = sorted({q for q, _ in pairs})
    q_tokens = dict(zip(queries, _count_tokens(tokenizer, queries), strict=True))
    documents = sorted({d for _, d in pairs})
    d_tokens = dict(zip(documents, _count_tokens(tokenizer, documents), strict=True))
    special = tokenizer.num_special_tokens_to_add(pair=True)

    long_docs = sorted({d for q, d in pairs if q_tokens[q] + d_tokens[d] + special > max_length})
    encoded = dict(zip(long_docs, _encode_documents(tokenizer, long_docs), strict=True))

    out: list[tuple[str, str]] = []
    source: list[int] = []
    to_verify: list[int] = []  # positions in `out` whose fit was promised
    meta: dict[int, tuple[str, str, _Encoded, tuple[int, int]]] = {}
    for idx, (q, d) in enumerate(pairs):
        if d not in encoded or q_tokens[q] + d_tokens[d] + special <= max_length:
            out.append((q, d))
            source.append(idx)
            continue
        enc = encoded[d]
        budget, fits = _budget(tokenizer, q_tokens[q], max_length)
        for span in _spans(enc, budget, stride):
            if fits:
                to_verify.append(len(out))
                meta[len(out)] = (q, d, enc, span)
            out.append((q, _span_text(d, enc, span)))
            source.append(idx)

    lengths = _pair_lengths(tokenizer, [out[i] for i in to_verify])
    for pos, length in zip(to_verify, lengths, strict=True):
        if length > max_length:
            q, d, enc, span = meta[pos]
            out[pos] = (q, _shrink(tokenizer, q, d, enc, span, max_length))
    return out, source


def _shrink(tokenizer, query: str, document: str, enc: _Encoded, span: tuple[int, int],
            max_length: int) -> str:
    """Drop tokens from a window's end until query + window really fits (rare re-tokenising
    differences, e.g. normalisers that merge characters across the cut)."""
    start, end = span
    while end > start + 1:
        end -= 1
        text = _span_text(document, enc, (start, end))
        if _pair_lengths(tokenizer, [(query, text)])[0] <= max_length:
            return text
    return _span_text(document, enc, (start, start + 1))


def make_windows(
    tokenizer, query: str, document: str, max_length: int, stride: int = DEFAULT_STRIDE
) -> list[str]:
    """The document as overlapping windows (text) that each fit next to the query.

    `stride` is the overlap between consecutive windows in tokens (capped at half a window). A
    document that fits gives one window, the document itself.
    """
    expanded, _ = window_pairs(tokenizer, [(query, document)], max_length, stride)
    return [w for _, w in expanded]
