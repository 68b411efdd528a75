"""The journey's upload: a slice of the bundled Cranfield demo with planted faults.

Planted: two bad lines (invalid JSON, label out of range) and near-duplicate queries (an existing
query re-asked under a new id, lower-cased and reworded at the end) that the seeded 80/20 split
puts on both sides, so the Checks page has real leakage to show and fix.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "cranfield.jsonl"
N_QUERIES = 40
PAIRS_PER_QUERY = 8
LEAKED = 8  # queries re-asked under a new id; the split scatters some of the twins
BAD_LINES = {5: "not json at all", 11: None}  # physical line -> content (None: label 9)


def build(path: Path) -> dict:
    """Write the upload; returns what a user should then see (counts, leaked query ids)."""
    by_query: dict[str, list[dict]] = {}
    with open(DEMO, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            by_query.setdefault(row["query_id"], []).append(row)
    by_query = dict(list(by_query.items())[:N_QUERIES])
    rows: list[dict] = []
    for pairs in by_query.values():
        # keep every relevant pair and fill up with irrelevant ones: each query stays evaluable
        pairs = sorted(pairs, key=lambda r: -r["label"])[:PAIRS_PER_QUERY]
        rows.extend(pairs)
    twins = []
    for qid in list(by_query)[:LEAKED]:
        for r in [r for r in rows if r["query_id"] == qid]:
            words = r["query"].rstrip(" .?").split()
            twins.append({**r, "query_id": f"{qid}-again",
                          "query": " ".join(words[:-1] + [words[-1] + "s", "?"])})
    rows.extend(twins)
    lines = [json.dumps(r) for r in rows]
    for at, content in sorted(BAD_LINES.items()):
        bad = content if content is not None else json.dumps(
            {"query": "broken", "document": "x", "label": 9})
        lines.insert(at - 1, bad)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"lines": len(lines), "accepted": len(rows), "rejected": len(BAD_LINES),
            "queries": len(by_query) + LEAKED}
