"""Hard-negative mining for a dataset's training queries against a corpus.

Positives-only data teaches a cross-encoder nothing; mined negatives from a first-stage
retriever's top ranks are the standard fix. Mined negatives can be false negatives, so every
mined row keeps where it came from (retriever, rank, score, the positive's score, guard score) for
the Review page. The result is a NEW dataset version with the same query-level split; the parent
dataset is never changed, validation and test queries are never mined, and a document the user
labelled for a query (same doc_id or same text) is never mined for that query.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from lib import db
from lib.corpora import Corpus, docs_at, resolve_corpus
from lib.datasets import resolve_dataset
from lib.first_stage import ProgressFn, get_retriever
from lib.split import _split_id, active_split_id
from lib.workspace import Workspace, safe_name

GuardFn = Callable[[list[str], list[str]], np.ndarray]
SAMPLING = ("top", "random")


@dataclass(frozen=True)
class MineOptions:
    corpus: str
    retriever: str = "bm25"  # 'bm25' | 'biencoder' | 'biencoder:MODEL'
    negatives: int = 5  # per query
    range_min: int = 0  # skip this many top ranks (likely unjudged positives)
    range_max: int = 50  # look no deeper than this rank
    margin: float | None = 0.05  # relative: keep score <= positive - margin * |positive|
    guard: str | None = None  # cross-encoder ranker spec (false-negative guard)
    max_score: float | None = None  # guard score at or above which a candidate is dropped
    sampling: str = "top"  # take the best-ranked survivors, or a random sample of them
    random_share: float = 0.0  # share of the negatives drawn at random from the whole corpus
    seed: int = 13
    name: str | None = None  # new dataset name (default: <parent>-mined[-N])

    def validated(self) -> MineOptions:
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError(f"need 0 <= range-min < range-max, got {self.range_min} and "
                             f"{self.range_max}")
        if self.margin is not None and not 0 <= self.margin < 1:
            raise ValueError(f"margin is relative (0 <= margin < 1), got {self.margin}")
        if (self.guard is None) != (self.max_score is None):
            raise ValueError("the false-negative guard needs both --guard MODEL and "
                             "--max-score S")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}")
        if not 0 <= self.random_share <= 1:
            raise ValueError(f"random share must be in [0, 1], got {self.random_share}")
        return self

    def params(self) -> dict:
        out = asdict(self)
        out.pop("name")
        return out


@dataclass
class MineReport:
    dataset_id: str  # the new version
    name: str
    parent_id: str
    corpus_id: str
    queries: int  # training queries mined for
    mined: int
    skipped_labelled: int
    dropped_by_margin: int
    dropped_by_guard: int
    queries_short: int  # got fewer negatives than asked
    queries_without_positive: int
    random_negatives: int
    seconds: float
    options: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def text_hash(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).lower().encode()).hexdigest()


def make_guard(ws: Workspace, spec: str) -> GuardFn:
    """A cross-encoder (any ranker spec the evaluation accepts) as a (query, doc) scorer."""
    from lib.evaluation.rankers import parse_ranker
    from lib.evaluation.scoring import score_ranker

    ranker = parse_ranker(spec, ws)

    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        if not queries:
            return np.zeros(0)
        pairs = pd.DataFrame({"query_id": queries, "doc_id": docs, "query": queries,
                              "document": docs})
        return score_ranker(ws, ranker, pairs)[0]

    return score


def _train_pairs(con, dataset_id: str, split_id: str) -> pd.DataFrame:
    return con.execute(
        "SELECT p.query_id, p.doc_id, p.query, p.document, p.label, a.split FROM pairs p "
        "JOIN split_assignments a ON a.query_id = p.query_id AND a.split_id = ? "
        "WHERE p.dataset_id = ?", [split_id, dataset_id]).df()


def mine(
    ws: Workspace, dataset: str, options: MineOptions, *,
    guard_fn: GuardFn | None = None, progress: ProgressFn | None = None,
) -> MineReport:
    """Mine negatives for the active split's training queries into a new dataset version."""
    t0 = time.perf_counter()
    opt = options.validated()
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        corpus = resolve_corpus(con, opt.corpus)
        sid = active_split_id(con, ds.dataset_id)
        if sid is None:
            raise ValueError(f"dataset {ds.name!r} has no split: run `reranker-studio split` "
                             "first (only training queries are mined)")
        pairs = _train_pairs(con, ds.dataset_id, sid)
    train = pairs[pairs["split"] == "train"]
    if train.empty:
        raise ValueError(f"dataset {ds.name!r} has no training queries in its active split")
    if guard_fn is None and opt.guard:
        guard_fn = make_guard(ws, opt.guard)
    retriever = get_retriever(ws, corpus, opt.retriever, progress)
    picked, stats = _pick_negatives(ws, corpus, retriever, train, opt, guard_fn, progress)
    report = _store_version(ws, ds, corpus, sid, picked, opt, stats)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _pick_negatives(ws, corpus: Corpus, retriever, train: pd.DataFrame, opt: MineOptions,
                    guard_fn: GuardFn | None, progress) -> tuple[pd.DataFrame, dict]:
    stats = dict(skipped_labelled=0, dropped_by_margin=0, dropped_by_guard=0, queries_short=0,
                 queries_without_positive=0, random_negatives=0)
    labelled_ids = train.groupby("query_id")["doc_id"].agg(set).to_dict()
    labelled_txt = train.groupby("query_id")["document"].agg(
        lambda s: {text_hash(t) for t in s}).to_dict()
    pos = train[train["label"] > 0]
    qtext = train.groupby("query_id")["query"].first()
    with_pos = sorted(pos["query_id"].unique())
    stats["queries_without_positive"] = int(qtext.index.nunique() - len(with_pos))
    queries = [qtext[q] for q in with_pos]
    # the strongest positive's retriever score: candidates must stay a margin below it. (The
    # weakest would drop nearly everything where positives rank low, e.g. Cranfield with BM25:
    # 5,433 of 6,750 candidates gone, 112 of 135 queries short.)
    pos_scores = retriever.score_pairs(pos["query"].tolist(), pos["document"].tolist())
    strongest = pd.Series(pos_scores, index=pos["query_id"].to_numpy()).groupby(level=0).max()
    top_pos, top_sc = retriever.search(queries, opt.range_max, progress)
    lo = min(opt.range_min, top_pos.shape[1])
    window = top_pos[:, lo:]
    docs = docs_at(ws, corpus, window.ravel())
    positions = docs["pos"].tolist()
    id_of = dict(zip(positions, docs["doc_id"].tolist(), strict=True))
    text_of = dict(zip(positions, docs["text"].tolist(), strict=True))
    hash_of = {p: text_hash(t) for p, t in text_of.items()}
    del docs
    rows: list[dict] = []
    for i, q in enumerate(with_pos):
        pscore = float(strongest[q])
        for j, p in enumerate(window[i].tolist()):
            doc_id, text = id_of[p], text_of[p]
            if doc_id in labelled_ids[q] or hash_of[p] in labelled_txt[q]:
                stats["skipped_labelled"] += 1
                continue
            score = float(top_sc[i, lo + j])
            if opt.margin is not None and score > pscore - opt.margin * abs(pscore):
                stats["dropped_by_margin"] += 1
                continue
            rows.append(dict(query_id=q, query=queries[i], doc_id=doc_id, document=text,
                             rank=lo + j + 1, score=score, positive_score=pscore,
                             guard_score=None, sampled=opt.sampling))
    cand = pd.DataFrame(rows, columns=["query_id", "query", "doc_id", "document", "rank",
                                       "score", "positive_score", "guard_score", "sampled"])
    if guard_fn is not None and len(cand):
        cand["guard_score"] = np.asarray(
            guard_fn(cand["query"].tolist(), cand["document"].tolist()), dtype=np.float64)
        drop = cand["guard_score"] >= float(opt.max_score)  # type: ignore[arg-type]
        stats["dropped_by_guard"] = int(drop.sum())
        cand = cand[~drop]
    n_random = int(round(opt.negatives * opt.random_share))
    n_ret = opt.negatives - n_random
    rng = np.random.default_rng(opt.seed)
    chosen = []
    for _q, group in cand.groupby("query_id", sort=True):
        if opt.sampling == "top" or len(group) <= n_ret:
            chosen.append(group.head(n_ret))
        else:
            take = np.sort(rng.choice(len(group), size=n_ret, replace=False))
            chosen.append(group.iloc[take])
    picked = pd.concat(chosen) if chosen else cand.iloc[:0]
    picked = picked.assign(retriever=retriever.name)
    if n_random:
        rnd = _random_negatives(ws, corpus, with_pos, queries, n_random, labelled_ids,
                                labelled_txt, top_pos, rng)
        stats["random_negatives"] = len(rnd)
        picked = pd.concat([picked, rnd], ignore_index=True)
    per_q = picked.groupby("query_id").size().reindex(with_pos, fill_value=0)
    stats["queries_short"] = int((per_q < opt.negatives).sum())
    stats["queries"] = len(with_pos)
    return picked.reset_index(drop=True), stats


def _random_negatives(ws, corpus: Corpus, qids: list[str], queries: list[str], n: int,
                      labelled_ids: dict, labelled_txt: dict, top_pos: np.ndarray,
                      rng: np.random.Generator) -> pd.DataFrame:
    """Uniform corpus documents outside the query's retrieved window and its labelled ones."""
    draws = rng.integers(0, corpus.n_docs, size=(len(qids), n * 3 + 5))
    docs = docs_at(ws, corpus, draws.ravel())
    id_of = dict(zip(docs["pos"].tolist(), docs["doc_id"].tolist(), strict=True))
    text_of = dict(zip(docs["pos"].tolist(), docs["text"].tolist(), strict=True))
    rows = []
    for i, q in enumerate(qids):
        seen = set(top_pos[i].tolist())
        got = 0
        for p in draws[i].tolist():
            if got == n:
                break
            if p in seen:
                continue
            seen.add(p)
            doc_id, text = id_of[p], text_of[p]
            if doc_id in labelled_ids[q] or text_hash(text) in labelled_txt[q]:
                continue
            rows.append(dict(query_id=q, query=queries[i], doc_id=doc_id, document=text,
                             rank=None, score=None, positive_score=None, guard_score=None,
                             sampled="random-corpus", retriever="random"))
            got += 1
    return pd.DataFrame(rows)


def _version_name(con, parent: str, name: str | None, suffix: str = "mined") -> str:
    """The user's name for a new version, else <parent>-<suffix>[-N]."""
    taken = {r[0] for r in con.execute("SELECT name FROM datasets").fetchall()}
    if name:
        chosen = safe_name(name)
        if chosen in taken:
            raise ValueError(f"a dataset named {chosen!r} already exists; choose another name")
        return chosen
    base = safe_name(f"{parent}-{suffix}"[:120])
    chosen, i = base, 2
    while chosen in taken:
        chosen, i = f"{base}-{i}", i + 1
    return chosen


def copy_split(con, split_id: str, new_dataset_id: str, note: str) -> str:
    """The same query-level split, active, for a new version (inside the caller's
    transaction): a version never moves a query between train and validation."""
    assignment = dict(con.execute(
        "SELECT query_id, split FROM split_assignments WHERE split_id = ?",
        [split_id]).fetchall())
    split_row = con.execute("SELECT seed, train_frac, val_frac, test_frac, method FROM splits"
                            " WHERE split_id = ?", [split_id]).fetchone()
    new_split = _split_id(new_dataset_id, assignment)
    con.execute(
        "INSERT INTO splits (split_id, dataset_id, seed, train_frac, val_frac, test_frac,"
        " method, note, is_active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, true)",
        [new_split, new_dataset_id, *split_row, note])
    con.execute("INSERT INTO split_assignments SELECT ?, query_id, split FROM "
                "split_assignments WHERE split_id = ?", [new_split, split_id])
    return new_split


def _store_version(ws: Workspace, ds, corpus: Corpus, split_id: str, picked: pd.DataFrame,
                   opt: MineOptions, stats: dict) -> MineReport:
    params = opt.params()
    key = json.dumps([ds.dataset_id, corpus.corpus_id, params], sort_keys=True, default=str)
    new_id = "ds-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    with db.connect(ws) as con:
        existing = con.execute("SELECT name FROM datasets WHERE dataset_id = ?",
                               [new_id]).fetchone()
        if existing:
            raise ValueError(f"dataset {ds.name!r} was already mined with these settings: "
                             f"dataset {existing[0]!r} ({new_id})")
        name = _version_name(con, ds.name, opt.name)
        max_line = con.execute("SELECT coalesce(max(line), 0) FROM pairs WHERE dataset_id = ?",
                               [ds.dataset_id]).fetchone()[0]
        mined = picked.assign(line=np.arange(max_line + 1, max_line + 1 + len(picked)))
        with db.transaction(con):
            con.execute("INSERT INTO pairs SELECT ?, line, query_id, doc_id, query, document, "
                        "label, split_hint FROM pairs WHERE dataset_id = ?",
                        [new_id, ds.dataset_id])
            con.register("mined_df", mined)
            con.execute("INSERT INTO pairs SELECT ?, line, query_id, doc_id, query, document, 0, "
                        "NULL FROM mined_df", [new_id])
            con.execute(
                "INSERT INTO mined_pairs SELECT ?, query_id, doc_id, line, retriever, rank, score,"
                " positive_score, guard_score, sampled, 'pending', NULL FROM mined_df", [new_id])
            con.unregister("mined_df")
            n_pairs, n_q, n_docs = con.execute(
                "SELECT count(*), count(DISTINCT query_id), count(DISTINCT doc_id) FROM pairs "
                "WHERE dataset_id = ?", [new_id]).fetchone()
            con.execute(
                "INSERT INTO datasets SELECT ?, ?, ?, ?, current_timestamp, ?, ?, 0, 0, 0, "
                "label_scale, max_label, ?, ?, field_map FROM datasets WHERE dataset_id = ?",
                [new_id, name, f"mined from {ds.name} with corpus {corpus.name}",
                 "mined:" + new_id, n_pairs, n_pairs, n_q, n_docs, ds.dataset_id])
            copy_split(con, split_id, new_id, f"copied from {split_id} of {ds.name}")
            report = MineReport(
                dataset_id=new_id, name=name, parent_id=ds.dataset_id,
                corpus_id=corpus.corpus_id, queries=stats["queries"], mined=len(mined),
                skipped_labelled=stats["skipped_labelled"],
                dropped_by_margin=stats["dropped_by_margin"],
                dropped_by_guard=stats["dropped_by_guard"],
                queries_short=stats["queries_short"],
                queries_without_positive=stats["queries_without_positive"],
                random_negatives=stats["random_negatives"], seconds=0.0, options=params)
            con.execute("INSERT INTO dataset_versions VALUES (?, ?, ?, 'mined', ?, ?, "
                        "current_timestamp)",
                        [new_id, ds.dataset_id, corpus.corpus_id, json.dumps(params),
                         json.dumps(report.to_json(), default=str)])
    return report
