"""Playground: one query and a few documents, ranked by two (or more) rankers side by side."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lib.evaluation.rankers import RUN_FILE, Ranker, parse_ranker, unique_names
from lib.evaluation.scoring import ScoreStats, score_ranker
from lib.workspace import Workspace

MAX_DOCUMENTS = 200


@dataclass
class PlaygroundResult:
    rankers: list[Ranker]
    table: pd.DataFrame  # doc, document, then per ranker: '<name> rank', '<name> score'
    stats: dict[str, ScoreStats]


def split_documents(text: str) -> list[str]:
    """Documents typed in one box: separated by a blank line (a line with only '---' works too)."""
    blocks, current = [], []
    for line in text.splitlines():
        if not line.strip() or line.strip() == "---":
            if current:
                blocks.append(" ".join(current).strip())
                current = []
        else:
            current.append(line.strip())
    if current:
        blocks.append(" ".join(current).strip())
    return [b for b in blocks if b]


def rank_documents(
    ws: Workspace | None, query: str, documents: list[str], rankers: list[str],
    *, max_length: int | None = None, window_stride: int | None = None,
    allow_outside_workspace: bool = True,
) -> PlaygroundResult:
    """Score every document for the query with each ranker; rank 1 = best (ties by position).
    The app passes allow_outside_workspace=False: model folders must then lie in `ws`."""
    query = query.strip()
    docs = [d for d in (x.strip() for x in documents) if d]
    if not query:
        raise ValueError("type a query")
    if not docs:
        raise ValueError("give at least one document")
    if len(docs) > MAX_DOCUMENTS:
        raise ValueError(f"at most {MAX_DOCUMENTS} documents in the playground, got {len(docs)}")
    parsed = unique_names([parse_ranker(r, ws, allow_outside_workspace=allow_outside_workspace)
                          for r in rankers])
    if any(r.kind == RUN_FILE for r in parsed):
        raise ValueError("run files score fixed query/document ids; use them on Evaluate")
    pairs = pd.DataFrame({
        "query_id": "playground", "doc_id": [f"d{i + 1}" for i in range(len(docs))],
        "query": query, "document": docs, "label": 0,
    })
    table = pd.DataFrame({"doc": pairs["doc_id"], "document": docs})
    stats = {}
    for r in parsed:
        scores, st = score_ranker(ws, r, pairs, max_length=max_length,
                                  window_stride=window_stride)
        stats[r.name] = st
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        rank = [0] * len(docs)
        for pos, i in enumerate(order, start=1):
            rank[i] = pos
        table[f"{r.name} rank"] = rank
        table[f"{r.name} score"] = scores
    first = f"{parsed[0].name} rank"
    return PlaygroundResult(parsed, table.sort_values(first, ignore_index=True), stats)
