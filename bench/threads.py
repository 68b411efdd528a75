"""Training throughput vs torch threads on a shared CPU: torch's default (one per core) against
one thread and the worker's auto choice (lib.training.threads), with 0, 1 and 3 busy processes
started by this script to play the other jobs on the machine.

Each cell: all-MiniLM-L6 as a cross-encoder, batches of 16 demo pairs at 128 tokens, forward +
backward + AdamW step, median pairs/s over the timed steps. Same process, same batches, so the
ratios are the figures to read (the absolute ones depend on whatever else the box runs).

  nice -n 5 python bench/threads.py [--steps 6] [--busy 0,1,3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
LOG = ROOT / "bench" / "results" / "threads.log"


def _spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def _batches(tokenizer, n: int, batch: int, max_length: int):
    from lib.demo_data import DEMO_DATASET_PATH

    lines = Path(DEMO_DATASET_PATH).read_text().splitlines()[:n * batch]
    rows = [json.loads(line) for line in lines]
    out = []
    for i in range(n):
        chunk = rows[i * batch:(i + 1) * batch]
        enc = tokenizer([r["query"] for r in chunk], [r["document"] for r in chunk],
                        truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        out.append((enc, [float(r["label"] > 0) for r in chunk]))
    return out


def measure(model, batches, threads: int, steps: int) -> float:
    import torch

    torch.set_num_threads(threads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rates = []
    for i in range(steps + 1):
        enc, labels = batches[i % len(batches)]
        t0 = time.perf_counter()
        logits = model(**enc).logits.view(-1)
        loss = loss_fn(logits, torch.tensor(labels))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # the first step warms up
            rates.append(len(labels) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--busy", default="0,1,3")
    p.add_argument("--max-length", type=int, default=128)
    args = p.parse_args(argv)
    import torch

    from lib.models import load_cross_encoder, resolve_model
    from lib.training.threads import auto_threads, available_cores, other_busy_cores

    cores = available_cores()
    default = torch.get_num_threads()
    ce = load_cross_encoder(resolve_model("default"), max_length=args.max_length, device="cpu")
    model = ce.model.train()
    batches = _batches(ce.tokenizer, 4, 16, args.max_length)
    lines = [f"# bench/threads.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{cores} cores, torch default {default} threads, load avg at start "
             f"{os.getloadavg()[0]:.1f} (other jobs included)",
             "| busy procs added | load avg | default threads pairs/s | 1 thread pairs/s | "
             "auto (n) pairs/s | auto / default |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = []
    for busy in [int(b) for b in args.busy.split(",")]:
        procs = [mp.Process(target=_spin, daemon=True) for _ in range(busy)]
        for proc in procs:
            proc.start()
        time.sleep(5 if busy else 0)
        try:
            load = os.getloadavg()[0]
            auto = auto_threads(cores, other_busy_cores(1.0))
            r_default = measure(model, batches, default, args.steps)
            r_one = measure(model, batches, 1, args.steps)
            r_auto = r_one if auto == 1 else (r_default if auto == default
                                              else measure(model, batches, auto, args.steps))
        finally:
            for proc in procs:
                proc.terminate()
        row = {"busy": busy, "load": round(load, 1), "default": round(r_default, 2),
               "one": round(r_one, 2), "auto_threads": auto, "auto": round(r_auto, 2),
               "ratio": round(r_auto / r_default, 2)}
        rows.append(row)
        line = (f"| {busy} | {row['load']} | {row['default']} | {row['one']} | "
                f"{row['auto']} ({auto}) | {row['ratio']}x |")
        lines.append(line)
        print(line, flush=True)
    lines.append(json.dumps({"rows": rows, "cores": cores, "default_threads": default}))
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
