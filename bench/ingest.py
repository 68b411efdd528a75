"""Ingest benchmark: our validate+store vs `pandas.read_json(lines=True)` on the same file.

    python bench/ingest.py [--rows 1000000] [--keep]

Prints both timings and, as the LAST line, a JSON object with "ratio" (pandas / ours) and
"peak_rss_mb" (peak resident memory of our ingest, measured in a child process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "boundary layer flow pressure wing shock heat transfer supersonic laminar turbulent "
    "nozzle jet slender body lift drag mach number skin friction cylinder plate"
).split()


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """~500-byte rows, 10 per query, graded labels; returns the file size."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            q = i // 10
            doc = " ".join(rng.choices(WORDS, k=60))[:400]
            fh.write(
                json.dumps(
                    {
                        "query_id": f"q{q}",
                        "query": f"query {q} about {WORDS[q % len(WORDS)]} effects",
                        "doc_id": f"d{i}",
                        "document": doc,
                        "label": rng.randint(0, 4),
                    }
                )
                + "\n"
            )
    return path.stat().st_size


def _ours(path: str, ws_dir: str, out: mp.Queue) -> None:
    from lib.ingest import ingest_file
    from lib.workspace import resolve_workspace

    t0 = time.perf_counter()
    report = ingest_file(resolve_workspace(ws_dir), path)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put({"seconds": seconds, "accepted": report.accepted, "rss_mb": rss})


def _pandas(path: str, out: mp.Queue) -> None:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_json(path, lines=True)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put({"seconds": seconds, "rows": len(df), "rss_mb": rss})


def _in_child(target, *args) -> dict:
    """Each contender in a fresh process, so peak RSS is its own."""
    q: mp.Queue = mp.Queue()
    p = mp.get_context("fork").Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated file and workspace")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    path = tmp / "pairs.jsonl"
    t0 = time.perf_counter()
    size = generate(path, args.rows)
    print(f"generated {args.rows} rows, {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")

    pandas = _in_child(_pandas, str(path))
    print(f"pandas.read_json(lines=True): {pandas['seconds']:.2f} s, {pandas['rss_mb']:.0f} MB")
    ours = _in_child(_ours, str(path), str(tmp / "ws"))
    print(
        f"reranker-studio ingest (validate + store): {ours['seconds']:.2f} s, "
        f"{ours['rss_mb']:.0f} MB, accepted {ours['accepted']}"
    )
    assert ours["accepted"] == args.rows == pandas["rows"]
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)
    print(
        json.dumps(
            {
                "rows": args.rows,
                "file_mb": round(size / 1e6, 1),
                "ours_s": round(ours["seconds"], 2),
                "pandas_s": round(pandas["seconds"], 2),
                "ratio": round(pandas["seconds"] / ours["seconds"], 2),
                "rows_per_s": round(args.rows / ours["seconds"]),
                "peak_rss_mb": round(ours["rss_mb"]),
                "pandas_peak_rss_mb": round(pandas["rss_mb"]),
            }
        )
    )


if __name__ == "__main__":
    main()
