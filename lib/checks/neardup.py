"""Near-duplicate texts by character-shingle Jaccard similarity, at scale.

All-pairs comparison is quadratic (200,000 queries = 2e10 pairs), so candidates come from MinHash
signatures with LSH banding (texts whose signatures agree on one band of rows), and every candidate
is then verified with its exact Jaccard similarity. Everything is numpy-vectorised; no Python object
is built per shingle. The band shape is chosen so a pair AT the threshold is missed with
probability under 1e-3 (pairs above it even less), and verified pairs are exact, so there are no
false positives.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

SHINGLE = 3
NUM_PERM = 128
MAX_MISS = 1e-3
_CHUNK_SHINGLES = 100_000
_CHUNK_PAIR_SHINGLES = 4_000_000
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_WS = re.compile(r"\s+")


class _Blanks(dict):
    """str.translate table: punctuation, separators and control characters become a space."""

    def __missing__(self, cp: int):
        value = " " if unicodedata.category(chr(cp))[0] in "PZC" else None
        self[cp] = value if value else cp
        return self[cp]


_BLANKS = _Blanks()


def normalize_text(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, spaces collapsed: 'What is AI?' -> 'what is ai'."""
    t = unicodedata.normalize("NFKC", text).casefold().translate(_BLANKS)
    return _WS.sub(" ", t).strip()


@dataclass
class Shingles:
    """Each text's set of distinct shingle ids, as CSR: ids[indptr[i]:indptr[i+1]] (sorted)."""

    indptr: np.ndarray
    ids: np.ndarray  # uint64, each < 2**bits: an exact encoding of the shingle
    bits: int = 32

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def shingle_sets(texts: list[str], k: int = SHINGLE) -> Shingles:
    """Character k-shingles of every text (texts shorter than k are padded to one shingle).

    Each shingle is encoded exactly: its k characters' ranks among the characters that occur,
    packed into `bits` bits. When text index and code fit one uint64 (always, unless the texts
    use thousands of distinct characters), one sort of (text, code) gives every text's distinct
    shingles; otherwise codes are first replaced by dense ids.
    """
    if not texts:
        return Shingles(np.zeros(1, np.int64), np.zeros(0, np.uint64))
    padded = [t if len(t) >= k else t + "\x01" * (k - len(t)) for t in texts]
    lengths = np.fromiter((len(t) for t in padded), np.int64, len(padded))
    cps = np.frombuffer("\x00".join(padded).encode("utf-32-le"), dtype=np.uint32)
    present = np.zeros(0x110000, np.uint32)
    present[cps] = 1
    rank = np.cumsum(present, dtype=np.uint32)  # 1..C for the C characters present
    char_bits = int(rank[-1]).bit_length()
    chars = rank[cps].astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    n_sh = lengths - k + 1
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(n_sh)[:-1]]), n_sh)
    pos += np.arange(int(n_sh.sum()))
    code = np.zeros(len(pos), np.uint64)
    for j in range(k):
        code = (code << np.uint64(char_bits)) | chars[pos + j]
    bits = k * char_bits
    owner_bits = int(len(padded)).bit_length()
    if bits + owner_bits > 64:  # very many distinct characters: dense ids first
        uniq = np.unique(code)
        code = np.searchsorted(uniq, code).astype(np.uint64)
        bits = max(1, int(len(uniq)).bit_length())
    owner = np.repeat(np.arange(len(padded), dtype=np.uint64), n_sh)
    keyed = np.sort((owner << np.uint64(bits)) | code)
    keyed = keyed[np.concatenate([[True], keyed[1:] != keyed[:-1]])]
    text_of = (keyed >> np.uint64(bits)).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(text_of, minlength=len(padded)))])
    mask = np.uint64((1 << bits) - 1)
    return Shingles(indptr.astype(np.int64), keyed & mask, bits)


def minhash_signatures(sh: Shingles, num_perm: int = NUM_PERM, seed: int = 1) -> np.ndarray:
    """(n_texts, num_perm) uint32 MinHash signatures, chunked.

    Each shingle id is mixed to a 32-bit hash x once; permutation j is x -> a_j * x + b_j
    (mod 2^32, a_j odd: a bijection), computed in uint32 to halve memory traffic.
    """
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 2**32, num_perm, dtype=np.uint64) | np.uint64(1)).astype(np.uint32)
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
    x = (_splitmix64(sh.ids.astype(np.uint64) + np.uint64(seed)) >> np.uint64(32)).astype(
        np.uint32)
    n = len(sh.indptr) - 1
    sig = np.empty((n, num_perm), np.uint32)
    i = 0
    while i < n:
        j = int(np.searchsorted(sh.indptr, sh.indptr[i] + _CHUNK_SHINGLES, side="right")) - 1
        j = max(j, i + 1)
        lo, hi = sh.indptr[i], sh.indptr[j]
        with np.errstate(over="ignore"):  # (num_perm, shingles): reduceat on the fast axis
            h = a[:, None] * x[None, lo:hi]
            h += b[:, None]
        sig[i:j] = np.minimum.reduceat(h, sh.indptr[i:j] - lo, axis=1).T
        i = j
    return sig


def band_shape(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still miss a pair
    at the threshold with probability <= MAX_MISS."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if (1 - threshold**rows) ** bands <= MAX_MISS:
            best = (bands, rows)
    return best


def _pairs_within_runs(order: np.ndarray, run_start: np.ndarray, run_len: np.ndarray):
    """All (i, j) pairs inside each run of `order` (runs of equal band keys), vectorised."""
    pos = np.arange(len(order))
    run_end = np.repeat(run_start + run_len, run_len)
    counts = run_end - pos - 1  # each member pairs with the members after it in its run
    total = int(counts.sum())
    if total == 0:
        return np.zeros((0, 2), np.int64)
    left = np.repeat(pos, counts)
    first = np.repeat(pos + 1 - (np.cumsum(counts) - counts), counts)
    right = first + np.arange(total)
    return np.stack([order[left], order[right]], axis=1)


def lsh_candidates(sig: np.ndarray, bands: int, rows: int, seed: int = 7) -> np.ndarray:
    """Pairs (i < j) that share at least one band, deduplicated."""
    n = sig.shape[0]
    rng = np.random.default_rng(seed)
    mult = rng.integers(1, 2**63, rows, dtype=np.uint64) | np.uint64(1)
    found = []
    for band in range(bands):
        block = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            key = _splitmix64((block * mult[None, :]).sum(axis=1, dtype=np.uint64))
        order = np.argsort(key, kind="stable")
        sk = key[order]
        boundary = np.flatnonzero(np.concatenate([[True], sk[1:] != sk[:-1]]))
        run_len = np.diff(np.concatenate([boundary, [n]]))
        pairs = _pairs_within_runs(order, boundary, run_len)
        if len(pairs):
            found.append(np.sort(pairs, axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return _unique_pairs(np.concatenate(found).astype(np.int64), n)


def _unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    code = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


def jaccard(sh: Shingles, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of each pair (vectorised, chunked)."""
    out = np.empty(len(pairs), np.float64)
    sizes = sh.sizes
    max_pairs = (1 << max(1, 64 - sh.bits)) - 1  # pair index and code share one uint64
    shift = np.uint64(sh.bits)
    start = 0
    while start < len(pairs):
        # take as many pairs as fit in the chunk's shingle budget (at least one)
        cost = np.cumsum(sizes[pairs[start:, 0]] + sizes[pairs[start:, 1]])
        take = max(1, int(np.searchsorted(cost, _CHUNK_PAIR_SHINGLES, side="right")))
        stop = start + min(take, max_pairs)
        chunk = pairs[start:stop]
        a, b = chunk[:, 0], chunk[:, 1]
        owner = np.concatenate([np.repeat(np.arange(len(chunk), dtype=np.uint64), sizes[a]),
                                np.repeat(np.arange(len(chunk), dtype=np.uint64), sizes[b])])
        ids = np.concatenate([_gather(sh, a), _gather(sh, b)])
        key = np.sort((owner << shift) | ids)
        dup = key[1:] == key[:-1]
        inter = np.bincount((key[1:][dup] >> shift).astype(np.int64), minlength=len(chunk))
        union = sizes[a] + sizes[b] - inter
        out[start:stop] = inter / union
        start = stop
    return out


def _gather(sh: Shingles, rows: np.ndarray) -> np.ndarray:
    """Concatenated shingle ids of the given rows (vectorised CSR row gather)."""
    lens = sh.sizes[rows]
    starts = np.repeat(sh.indptr[rows], lens)
    offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    return sh.ids[starts + offsets]


@dataclass
class NearDuplicates:
    pairs: np.ndarray  # (m, 2) int64, i < j, indices into the texts given
    similarity: np.ndarray  # exact Jaccard of each pair
    candidates: int  # LSH candidates verified


def near_duplicate_pairs(
    texts: list[str],
    threshold: float = 0.8,
    k: int = SHINGLE,
    num_perm: int = NUM_PERM,
    seed: int = 1,
) -> NearDuplicates:
    """Pairs of (distinct) texts whose k-shingle Jaccard similarity is >= threshold."""
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    if len(texts) < 2:
        return NearDuplicates(np.zeros((0, 2), np.int64), np.zeros(0), 0)
    sh = shingle_sets(texts, k)
    sig = minhash_signatures(sh, num_perm, seed)
    bands, rows = band_shape(threshold, num_perm)
    cand = lsh_candidates(sig, bands, rows, seed=seed + 6)
    sim = jaccard(sh, cand) if len(cand) else np.zeros(0)
    keep = sim >= threshold - 1e-12
    return NearDuplicates(cand[keep], sim[keep], len(cand))


def naive_near_duplicate_pairs(
    texts: list[str], threshold: float = 0.8, k: int = SHINGLE
) -> NearDuplicates:
    """The all-pairs baseline (exact, quadratic): for tests and the benchmark's comparison."""
    sets = []
    for t in texts:
        t = t if len(t) >= k else t + "\x01" * (k - len(t))
        sets.append(frozenset(t[i : i + k] for i in range(len(t) - k + 1)))
    found, sims = [], []
    for i in range(len(sets)):
        a, la = sets[i], len(sets[i])
        for j in range(i + 1, len(sets)):
            b = sets[j]
            inter = len(a & b)
            if inter and inter / (la + len(b) - inter) >= threshold - 1e-12:
                found.append((i, j))
                sims.append(inter / (la + len(b) - inter))
    pairs = np.array(found, np.int64).reshape(-1, 2)
    return NearDuplicates(pairs, np.array(sims), len(texts) * (len(texts) - 1) // 2)
