"""Rebuild the bundled demo dataset ``data/cranfield.jsonl`` from the raw Cranfield files.

Usage: python data/build_cranfield.py [--source DIR] [--out FILE] [--negatives N]

The output is deterministic: rebuilding from the same raw files gives a byte-identical file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run straight from a checkout, no install needed

from lib.demo_data import build_cranfield_rows, write_jsonl  # noqa: E402

DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "cranfield"
DEFAULT_OUT = REPO_ROOT / "data" / "cranfield.jsonl"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the rows, write them and print the counts worth checking."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"directory with cran.all.1400, cran.qry, cranqrel (default: {DEFAULT_SOURCE})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output JSONL file (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--negatives",
        type=int,
        default=10,
        help="BM25 hard negatives (label 0) per query (default: 10)",
    )
    args = parser.parse_args(argv)

    if not args.source.is_dir():
        parser.error(f"source directory not found: {args.source}")

    start = time.perf_counter()
    rows = build_cranfield_rows(args.source, negatives_per_query=args.negatives)
    write_jsonl(rows, args.out)
    elapsed = time.perf_counter() - start

    labels = Counter(row["label"] for row in rows)
    queries = len({row["query_id"] for row in rows})
    docs = len({row["doc_id"] for row in rows})
    print(f"wrote {args.out} in {elapsed:.2f}s")
    print(f"queries: {queries}")
    print(f"pairs: {len(rows)} ({docs} distinct documents)")
    print("labels: " + ", ".join(f"{label}={labels[label]}" for label in sorted(labels)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
