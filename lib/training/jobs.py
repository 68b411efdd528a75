"""Training jobs: create a run, queue it, launch the worker detached, watch, stop and resume it.

The worker runs in its own session (it survives the app and the browser), writes only files in
its run directory, and is identified by pid AND process start time, so a recycled pid is never
mistaken for it. `tick(ws)` is the scheduler: it notices dead workers, enforces stop timeouts,
ingests progress into DuckDB and starts queued runs while devices are free (one run per GPU,
one on the CPU). The Train page calls it every 2 s; the CLI calls it while it waits.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from lib import db
from lib.corpora import CorpusNotFoundError, corpus_from_dataset, resolve_corpus
from lib.datasets import mined_from_corpus, resolve_dataset
from lib.split import active_split_id, load_split_pairs
from lib.training import runfiles
from lib.training.config import (
    ConfigError,
    TrainConfig,
    check_model,
    config_warnings,
    is_oom,
    oom_suggestion,
    read_config,
    save_config,
)
from lib.training.ingest import ingest_run
from lib.workspace import Workspace, safe_name

AUTO_CORPUS = "auto"  # distill_corpus: the corpus the dataset was mined from, else its own docs

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 60.0
LAUNCH_GRACE_S = 60.0
CPU = "cpu"

_children: dict[int, subprocess.Popen] = {}  # workers this process launched, for reaping
_exit_codes: dict[int, int] = {}  # pid -> return code of reaped workers


class RunNotFoundError(LookupError):
    pass


@dataclass
class CreatedRun:
    run_id: str
    run_dir: Path
    warnings: list[str] = field(default_factory=list)
    train_pairs: int = 0
    train_queries: int = 0
    validation_pairs: int = 0
    validation_queries: int = 0


# ---- devices ------------------------------------------------------------------------------------
def default_preset() -> str:
    """The preset a new run starts from unless the user picks one (Train page and CLI alike):
    the measured CPU recipe without a GPU, the full GPU one with one."""
    from lib.training.config import DEFAULT_CPU_PRESET, DEFAULT_GPU_PRESET

    return DEFAULT_GPU_PRESET if visible_gpus() else DEFAULT_CPU_PRESET


def default_sweep_preset() -> str:
    """A sweep's base unless the user picks one (Experiments page and CLI alike): a grid is many
    what-ifs, so the fast preset for the hardware, not the long default recipe."""
    return "GPU throughput" if visible_gpus() else "CPU quick"


@functools.cache
def visible_gpus() -> tuple[str, ...]:
    """CUDA device ids this process may hand out (respects CUDA_VISIBLE_DEVICES)."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch CUDA means no GPU
        n = 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env and env.strip():
        return tuple([x.strip() for x in env.split(",") if x.strip()][:n])
    return tuple(str(i) for i in range(n))


def devices_needed(cfg: TrainConfig, gpus: tuple[str, ...]) -> int:
    """0 = the CPU slot, else the number of GPUs the run takes."""
    if cfg.device == "cpu" or not gpus:
        return 0
    return cfg.num_gpus or len(gpus)


def worker_command(run_dir: Path, n_gpus: int, resume: bool = False,
                   python: str = sys.executable) -> list[str]:
    """Plain python for CPU or one GPU; torchrun (DDP, one process per GPU) for several."""
    module = ["-m", "lib.training.worker", str(run_dir)] + (["--resume"] if resume else [])
    if n_gpus > 1:
        return [python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={n_gpus}", *module]
    return [python, *module]


def worker_env(ws: Workspace, gpu_ids: list[str], base: dict[str, str] | None = None
               ) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("NUMBA_CACHE_DIR", str(ws.cache_dir / "numba"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    env["RERANKER_STUDIO_HOME"] = str(ws.root)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)  # '' hides every GPU from a CPU run
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env


# ---- process identity ---------------------------------------------------------------------------
def _reap(pid: int) -> int | None:
    """Collect an exited child of ours (no zombie left); its return code when known."""
    if pid in _exit_codes:
        return _exit_codes[pid]
    proc = _children.get(pid)
    rc = None
    if proc is not None:
        rc = proc.poll()
        if rc is not None:
            _children.pop(pid, None)
    else:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                rc = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            return None
    if rc is not None:
        _exit_codes[pid] = rc
    return rc


def start_ticks(pid: int) -> int | None:
    """When the kernel started the process, in clock ticks since boot (/proc/PID/stat field 22).
    psutil's create_time adds /proc/stat's boot time, re-read on every call, which moves when
    the clock is adjusted (NTP): a full test run saw a live worker read as dead that way. The
    tick count never moves; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at 3
    except (OSError, IndexError, ValueError):
        return None


def process_identity(pid: int) -> dict[str, Any]:
    """What tells this process apart from a later one given the same pid."""
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:  # exited at once; status detection reports it
        create_time = 0.0
    return {"create_time": create_time, "start_ticks": start_ticks(pid)}


def process_alive(info: dict[str, Any] | None) -> bool:
    """True when the recorded pid runs AND is the process we launched (no recycled pid): same
    kernel start tick, or where that was not recorded, the same create_time within 0.5 s."""
    if not info or not info.get("pid"):
        return False
    pid = int(info["pid"])
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        ticks = start_ticks(pid) if info.get("start_ticks") is not None else None
        if ticks is not None:
            ours = ticks == int(info["start_ticks"])
        else:
            ours = abs(proc.create_time() - float(info.get("create_time", 0))) <= 0.5
        return ours and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def read_pid(run_dir: Path) -> dict[str, Any] | None:
    return runfiles.read_json(run_dir / runfiles.PID)


# ---- creating runs ------------------------------------------------------------------------------
def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def subsample_queries(train: pd.DataFrame, max_pairs: int, seed: int) -> pd.DataFrame:
    """At most max_pairs pairs, taken as whole queries in a seeded order (lists stay whole)."""
    if len(train) <= max_pairs:
        return train
    import numpy as np

    qids = sorted(train["query_id"].astype(str).unique())
    order = [qids[i] for i in np.random.default_rng(seed).permutation(len(qids))]
    sizes = train.groupby(train["query_id"].astype(str)).size()
    keep, total = [], 0
    for q in order:
        if keep and total + sizes[q] > max_pairs:
            continue
        keep.append(q)
        total += int(sizes[q])
    return train[train["query_id"].astype(str).isin(set(keep))]


def run_dir_of(ws: Workspace, run_id: str) -> Path:
    return ws.child("runs", safe_name(run_id))


def validate_launch(cfg: TrainConfig) -> None:
    """Everything that would fail at launch, checked before anything is written."""
    check_model(cfg)
    if cfg.distill_corpus not in (None, AUTO_CORPUS) and not cfg.distill_teacher:
        raise ConfigError(f"distill_corpus: {cfg.distill_corpus!r} is only used by a distillation "
                          "phase: set distill_teacher too (e.g. 'biencoder' or 'auto')")
    if cfg.distill_pseudo_queries and not cfg.distill_corpus:
        raise ConfigError(f"distill_pseudo_queries: {cfg.distill_pseudo_queries} pseudo-queries "
                          "are drawn from a distillation corpus: set distill_corpus too (e.g. "
                          "'auto')")
    gpus = visible_gpus()
    if cfg.device == "cuda" and not gpus:
        raise ConfigError("device: 'cuda' was chosen but no GPU is visible on this machine; "
                          "use device 'auto' or 'cpu'")
    if cfg.device != "cpu" and gpus and cfg.num_gpus > len(gpus):
        raise ConfigError(f"num_gpus: {cfg.num_gpus} asked for but only {len(gpus)} visible")


def _will_distil(cfg: TrainConfig) -> bool:
    if not cfg.distill_teacher or not cfg.distill_corpus:
        return False
    from lib.models import resolve_model
    from lib.training.recipe import will_distil

    try:
        ref = resolve_model(cfg.base_model)
    except Exception:  # noqa: BLE001 - the worker reports an unusable base; prepare the data
        return True
    return will_distil(cfg, ref)


def _auto_corpus(con, ds) -> tuple[str | None, str | None]:
    """distill_corpus `auto`: the corpus the dataset was mined from, else None (the caller then
    uses the dataset's own documents: on the demo that took a distilled run from 0.578 to
    0.626-0.633 validation NDCG@10, bench/results/quality_distill_corpus.log)."""
    corpus_id = mined_from_corpus(con, ds.dataset_id)
    if not corpus_id:
        return None, None
    try:
        return resolve_corpus(con, corpus_id).name, None
    except CorpusNotFoundError:
        return None, (f"distill_corpus auto: the corpus {ds.name!r} was mined from ({corpus_id}) "
                      "is no longer in the workspace, so the distillation phase uses the "
                      "dataset's own documents instead")


def _validation_with_corpus(ws: Workspace, val: pd.DataFrame, corpus: str | None,
                            top_k: int) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The validation pairs plus the corpus candidates of positives-only queries
    (lib.training.validation_candidates), and what was added; unchanged without a corpus."""
    if not corpus or not top_k:
        return val, None
    from lib.training import validation_candidates

    extra = validation_candidates.corpus_candidates(ws, val, corpus, top_k)
    if extra.empty:
        return val, None
    added = {"corpus": corpus, "retriever": "bm25", "top_k": top_k, "pairs": len(extra),
             "queries": int(extra["query_id"].nunique())}
    return pd.concat([val, extra], ignore_index=True), added


def create_run(
    ws: Workspace,
    dataset: str,
    cfg: TrainConfig,
    *,
    split_id: str | None = None,
    extra_warnings: list[str] | None = None,
    enqueue: bool = True,
) -> CreatedRun:
    """Validate, export the split's train/validation pairs to files and queue the run."""
    validate_launch(cfg)
    if cfg.ray_train_workers:
        from lib import ray_backend

        if ray_backend.configured(ws) is None:
            raise ConfigError(f"ray_train_workers: {cfg.ray_train_workers} needs a Ray cluster "
                              "(--ray ADDRESS, RERANKER_STUDIO_RAY_ADDRESS or `reranker-studio "
                              "ray set`); use 0 to train on this machine")
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        sid = split_id or active_split_id(con, ds.dataset_id)
        corpus, corpus_note = cfg.distill_corpus if _will_distil(cfg) else None, None
        auto = corpus == AUTO_CORPUS
        if auto:
            corpus, corpus_note = _auto_corpus(con, ds)
        mined_corpus = _auto_corpus(con, ds)[0] if cfg.validation_corpus_top_k else None
    if sid is None:
        raise ValueError(f"dataset {ds.name!r} has no split yet: split it on the Data page or "
                         "with `reranker-studio split`")
    pairs = load_split_pairs(ws, ds.dataset_id, split_id=sid)
    cols = ["query_id", "doc_id", "query", "document", "label"]
    # the line ties a training pair back to the dataset (training dynamics -> noise flags)
    train = pairs[pairs["split"] == "train"][[*cols, "line"]]
    val = pairs[pairs["split"] == "validation"][cols]
    if train.empty:
        raise ValueError(f"split {sid} of {ds.name!r} has no training queries")
    if val.empty:
        raise ValueError(f"split {sid} of {ds.name!r} has no validation queries, needed to pick "
                         "the best checkpoint: re-split with a validation fraction (e.g. 0.2)")
    if not (val["label"] > 0).any():
        raise ValueError(f"the validation queries of split {sid} have no relevant document "
                         "(label > 0): NDCG@10 is undefined there")
    val, val_corpus = _validation_with_corpus(ws, val, mined_corpus, cfg.validation_corpus_top_k)
    n_train_all = len(train)
    if cfg.max_train_pairs:
        train = subsample_queries(train, cfg.max_train_pairs, cfg.seed)
    warnings = config_warnings(cfg, n_train_all, extra_warnings, gpu_available=bool(visible_gpus()))
    if corpus_note:
        warnings.append(corpus_note)
    if val_corpus:
        warnings.append(
            f"{val_corpus['queries']} validation queries have only relevant labelled documents: "
            f"each also gets its BM25 top {val_corpus['top_k']} of corpus {val_corpus['corpus']!r} "
            f"({val_corpus['pairs']} documents, unjudged = not relevant), so validation NDCG@10 "
            "and the bar to beat measure reranking, not only the order of the positives")
    found, from_corpus = None, None
    if auto and corpus is None:  # the dataset's own documents (a corpus made once per dataset)
        corpus = corpus_from_dataset(ws, ds.dataset_id).name
    if corpus:  # before anything is written: an unknown corpus is refused
        from lib.training import distill_corpus

        held_out = pairs[pairs["split"] != "train"][["doc_id", "document"]]
        found = distill_corpus.corpus_pairs(ws, train, held_out, corpus,
                                            cfg.distill_corpus_retriever,
                                            cfg.distill_corpus_top_k,
                                            pseudo=cfg.distill_pseudo_queries, seed=cfg.seed)
    run_id = new_run_id()
    run_dir = ws.runs_dir / run_id
    data_dir = run_dir / runfiles.DATA
    data_dir.mkdir(parents=True)
    save_config(cfg, run_dir)
    train.to_json(data_dir / "train.jsonl", orient="records", lines=True, force_ascii=False)
    val.to_json(data_dir / "validation.jsonl", orient="records", lines=True, force_ascii=False)
    if found is not None:
        distill_corpus.write(found, data_dir)
        pseudo = found["query_id"].str.startswith(distill_corpus.PSEUDO_PREFIX)
        from_corpus = {"corpus": corpus, "retriever": cfg.distill_corpus_retriever,
                       "top_k": cfg.distill_corpus_top_k, "pairs": len(found),
                       "pseudo_queries": int(found.loc[pseudo, "query_id"].nunique()),
                       "pseudo_pairs": int(pseudo.sum())}
    meta = {
        "dataset_id": ds.dataset_id, "dataset_name": ds.name, "split_id": sid,
        "label_scale": ds.label_scale, "max_label": int(ds.max_label),
        "train_pairs": len(train), "train_queries": int(train["query_id"].nunique()),
        "train_pairs_available": n_train_all,
        "validation_pairs": len(val), "validation_queries": int(val["query_id"].nunique()),
        "warnings": warnings, "distill_corpus": from_corpus, "validation_corpus": val_corpus,
    }
    runfiles.write_json_atomic(data_dir / "meta.json", meta)
    runfiles.update_status(run_dir, state=runfiles.QUEUED, created_at=runfiles.now_iso(),
                           resume=False)
    with db.connect(ws) as con:
        pos = _next_position(con) if enqueue else None
        con.execute(
            "INSERT INTO runs (run_id, dataset_id, split_id, config, status, queue_position, "
            "train_pairs, validation_queries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, ds.dataset_id, sid, json.dumps(cfg.to_json()), runfiles.QUEUED, pos,
             len(train), meta["validation_queries"]],
        )
    return CreatedRun(run_id, run_dir, warnings, len(train), meta["train_queries"], len(val),
                      meta["validation_queries"])


def _next_position(con) -> int:
    rows = con.execute("SELECT max(queue_position) FROM runs").fetchall()
    return int(rows[0][0] or 0) + 1


# ---- launching ----------------------------------------------------------------------------------
def launch(ws: Workspace, run_id: str, gpu_ids: list[str] | None = None,
           resume: bool = False) -> dict[str, Any]:
    """Start the worker in a new session, output to worker.log; record pid and start time."""
    run_dir = run_dir_of(ws, run_id)
    gpu_ids = list(gpu_ids or [])
    (run_dir / runfiles.STOP).unlink(missing_ok=True)
    (run_dir / runfiles.PID).unlink(missing_ok=True)  # never judge this launch by the last pid
    argv = worker_command(run_dir, len(gpu_ids), resume)
    runfiles.update_status(run_dir, state=runfiles.STARTING, launched_at=runfiles.now_iso(),
                           gpus=gpu_ids, error=None, log_tail=None, advice=None)
    with open(run_dir / runfiles.LOG, "ab") as log:
        log.write(f"\n=== {runfiles.now_iso()} launch: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(PROJECT_ROOT), env=worker_env(ws, gpu_ids),
            close_fds=True,
        )
    _children[proc.pid] = proc
    _exit_codes.pop(proc.pid, None)
    info = {"pid": proc.pid, "pgid": proc.pid, **process_identity(proc.pid), "argv": argv,
            "gpus": gpu_ids, "launcher": "torchrun" if len(gpu_ids) > 1 else "python",
            "launched_at": runfiles.now_iso(), "resume": resume}
    runfiles.write_json_atomic(run_dir / runfiles.PID, info)
    return info


# ---- status -------------------------------------------------------------------------------------
def _exit_code(pid: int) -> int | None:
    """The return code of a dead worker we launched. A killed multi-threaded process shows as a
    zombie before its last threads are gone and waitpid can collect it: wait a moment."""
    rc = _reap(pid)
    proc = _children.get(pid)
    if rc is None and proc is not None:
        try:
            rc = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        _children.pop(pid, None)
        _exit_codes[pid] = rc
    return rc


def _death_report(run_dir: Path, info: dict[str, Any] | None) -> dict[str, Any]:
    rc = _exit_code(int(info["pid"])) if info and info.get("pid") else None
    log_tail = runfiles.tail(run_dir / runfiles.LOG, 40)
    if rc is not None and rc < 0:
        how = f"killed by {signal.Signals(-rc).name}"
    elif rc is not None:
        how = f"exit code {rc}"
    else:
        how = "killed, crashed or ran out of memory"
    error = f"the worker process ended without reporting a result ({how})"
    advice = None
    try:
        cfg = read_config(run_dir)
    except ConfigError:
        cfg = None
    if cfg is not None and (is_oom(log_tail) or rc == -signal.SIGKILL):
        advice = oom_suggestion(cfg)
        if not is_oom(log_tail):
            advice = ("SIGKILL comes from `kill -9` or from the kernel's out-of-memory killer; "
                      "if memory ran out, " + advice.replace("out of memory: ", ""))
    return {"state": runfiles.FAILED, "error": error, "log_tail": log_tail, "advice": advice,
            "finished_at": runfiles.now_iso(), "eta_s": None}


def refresh_run(run_dir: Path, stop_timeout_s: float | None = None) -> dict[str, Any]:
    """status.json, corrected for what the files cannot say: a dead worker is 'failed', a stop
    request past its timeout is enforced with SIGKILL to the worker's process group."""
    status = runfiles.read_status(run_dir)
    if status.get("state") not in runfiles.ACTIVE:
        return status
    info = read_pid(run_dir)
    if info and info.get("launcher") == "ray":  # a Ray job: the cluster says whether it lives
        from lib import ray_backend

        return ray_backend.refresh_run(run_dir, status, info, stop_timeout_s)
    if info is None and status.get("state") == runfiles.STARTING:
        if _age_s(status.get("launched_at")) < LAUNCH_GRACE_S:
            return status  # the launcher is writing pid.json right now
        return runfiles.update_status(
            run_dir, state=runfiles.FAILED, finished_at=runfiles.now_iso(),
            error="the launcher stopped before recording the worker's pid",
            log_tail=runfiles.tail(run_dir / runfiles.LOG, 40))
    if not process_alive(info):
        status = runfiles.read_status(run_dir)  # it may have finished between the two reads
        if status.get("state") in runfiles.ACTIVE:
            report = _death_report(run_dir, info)
            if (run_dir / runfiles.STOP).exists():  # it was asked to stop and did not in time
                ckpt = runfiles.last_checkpoint(run_dir)
                how = report["error"].rsplit("(", 1)[-1].rstrip(")")
                report.update(state=runfiles.STOPPED, advice=None, error=None, note=(
                    f"asked to stop, the worker ended without a graceful stop ({how}); resume "
                    + (f"continues from {ckpt.name}" if ckpt else "starts again from step 0")))
            status = runfiles.update_status(run_dir, **report)
        return status
    stop = runfiles.read_json(run_dir / runfiles.STOP)
    if stop:
        timeout = stop_timeout_s if stop_timeout_s is not None else stop.get("timeout_s",
                                                                             STOP_TIMEOUT_S)
        waited = time.time() - float(stop.get("requested_at", time.time()))
        if waited > timeout:
            _hard_kill(info)
            ckpt = runfiles.last_checkpoint(run_dir)
            status = runfiles.update_status(
                run_dir, state=runfiles.STOPPED, finished_at=runfiles.now_iso(), eta_s=None,
                note=f"no graceful stop within {timeout:.0f} s: killed (SIGKILL); resume "
                + (f"continues from {ckpt.name}" if ckpt else "starts again from step 0"),
                log_tail=runfiles.tail(run_dir / runfiles.LOG, 40),
            )
        else:
            status = dict(status, stopping=True, stop_waited_s=round(waited, 1))
    return status


def _age_s(iso: str | None) -> float:
    if not iso:
        return float("inf")
    try:
        return time.time() - time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return float("inf")


def _hard_kill(info: dict[str, Any]) -> None:
    pgid = int(info.get("pgid") or info["pid"])
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.time() + 5
    while time.time() < deadline and process_alive(info):
        time.sleep(0.05)


# ---- control ------------------------------------------------------------------------------------
def _require_run(ws: Workspace, run_id: str) -> Path:
    run_dir = run_dir_of(ws, run_id)
    if not (run_dir / runfiles.CONFIG).is_file():
        raise RunNotFoundError(f"no run {run_id!r} in {ws.runs_dir}")
    return run_dir


def request_stop(ws: Workspace, run_id: str, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Queued: cancelled. Running: graceful stop (signal + stop file; the worker saves a
    checkpoint and ends), enforced with SIGKILL by `refresh_run` after timeout_s."""
    run_dir = _require_run(ws, run_id)
    status = refresh_run(run_dir)
    state = status.get("state")
    if state == runfiles.QUEUED:
        runfiles.update_status(run_dir, state=runfiles.CANCELLED, finished_at=runfiles.now_iso())
        with db.connect(ws) as con:
            con.execute("UPDATE runs SET queue_position = NULL WHERE run_id = ?", [run_id])
            ingest_run(con, ws, run_id)
        return runfiles.CANCELLED
    if state not in runfiles.ACTIVE:
        raise ValueError(f"run {run_id} is {state}: nothing to stop")
    runfiles.write_json_atomic(run_dir / runfiles.STOP,
                               {"requested_at": time.time(), "timeout_s": timeout_s})
    info = read_pid(run_dir)
    if info and info.get("launcher") == "python" and process_alive(info):
        try:
            os.kill(int(info["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    # torchrun turns SIGTERM into a hard kill of its ranks: they read the stop file instead.
    return "stopping"


def wait_for(ws: Workspace, run_id: str, timeout_s: float | None = None,
             poll_s: float = 0.5) -> dict[str, Any]:
    """Block until the run leaves starting/running (ticking the queue meanwhile)."""
    run_dir = _require_run(ws, run_id)
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        status = refresh_run(run_dir)
        if status.get("state") in runfiles.TERMINAL:
            tick(ws)
            return status
        if deadline is not None and time.time() > deadline:
            return status
        time.sleep(poll_s)


def stop_run(ws: Workspace, run_id: str, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """Stop and wait: graceful first, SIGKILL after timeout_s."""
    if request_stop(ws, run_id, timeout_s) == runfiles.CANCELLED:
        return runfiles.read_status(run_dir_of(ws, run_id))
    return wait_for(ws, run_id, timeout_s=timeout_s + 30)


def resume_run(ws: Workspace, run_id: str) -> dict[str, Any]:
    """Queue a stopped or failed run again; the worker continues from its last checkpoint
    (weights, optimizer, scheduler, step count), or from step 0 when it has none."""
    run_dir = _require_run(ws, run_id)
    status = refresh_run(run_dir)
    if status.get("state") not in runfiles.RESUMABLE:
        raise ValueError(f"run {run_id} is {status.get('state')}: only stopped or failed runs "
                         "can be resumed")
    (run_dir / runfiles.STOP).unlink(missing_ok=True)
    ckpt = runfiles.last_checkpoint(run_dir)
    status = runfiles.update_status(
        run_dir, state=runfiles.QUEUED, resume=True, note=None, error=None, advice=None,
        resume_from=ckpt.name if ckpt else None,
    )
    with db.connect(ws) as con:
        con.execute("UPDATE runs SET queue_position = ? WHERE run_id = ?",
                    [_next_position(con), run_id])
        ingest_run(con, ws, run_id)
    return status


def move_in_queue(ws: Workspace, run_id: str, direction: str) -> None:
    """'up', 'down' or 'top' among the queued runs."""
    with _queue_lock(ws), db.connect(ws) as con:
        rows = con.execute(
            "SELECT run_id, queue_position FROM runs WHERE status = ? ORDER BY queue_position",
            [runfiles.QUEUED],
        ).fetchall()
        ids = [r[0] for r in rows]
        if run_id not in ids:
            raise ValueError(f"run {run_id} is not queued")
        i = ids.index(run_id)
        j = {"up": i - 1, "down": i + 1, "top": 0}.get(direction)
        if j is None:
            raise ValueError("direction must be up, down or top")
        j = max(0, min(len(ids) - 1, j))
        ids.insert(j, ids.pop(i))
        positions = sorted(r[1] for r in rows)
        for rid, pos in zip(ids, positions, strict=True):
            con.execute("UPDATE runs SET queue_position = ? WHERE run_id = ?", [pos, rid])


# ---- the scheduler ------------------------------------------------------------------------------
@contextmanager
def _queue_lock(ws: Workspace, timeout_s: float = 30.0) -> Iterator[None]:
    """One scheduler at a time across processes (the app and CLI commands)."""
    ws.runs_dir.mkdir(parents=True, exist_ok=True)
    with open(ws.runs_dir / ".queue.lock", "w") as f:
        deadline = time.time() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.time() > deadline:
                    raise
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tick(ws: Workspace) -> list[str]:
    """Refresh live runs, ingest their files, start queued runs on free devices.
    Returns the run ids started now."""
    started: list[str] = []
    from lib import ray_backend

    ray_settings = ray_backend.configured(ws)
    with _queue_lock(ws), db.connect(ws) as con:
        rows = con.execute(
            "SELECT run_id, status FROM runs WHERE status IN (?, ?, ?) "
            "ORDER BY queue_position NULLS LAST, created_at",
            [runfiles.QUEUED, runfiles.STARTING, runfiles.RUNNING],
        ).fetchall()
        gpus = visible_gpus()
        busy_gpus: set[str] = set()
        cpu_busy = False
        queued: list[str] = []
        for run_id, _ in rows:
            run_dir = ws.runs_dir / run_id
            status = refresh_run(run_dir)
            ingest_run(con, ws, run_id)
            state = status.get("state")
            if state in runfiles.ACTIVE:
                held = list((read_pid(run_dir) or {}).get("gpus") or status.get("gpus") or [])
                busy_gpus.update(held)
                cpu_busy = cpu_busy or not held
            elif state == runfiles.QUEUED:
                queued.append(run_id)
        if ray_settings is not None:  # the cluster places and queues the runs itself
            for run_id in queued:
                run_dir = ws.runs_dir / run_id
                resume = bool(runfiles.read_status(run_dir).get("resume"))
                try:
                    ray_backend.submit_run(ws, ray_settings, run_id, resume)
                except ConfigError as exc:
                    runfiles.update_status(run_dir, state=runfiles.FAILED, error=str(exc))
                    ingest_run(con, ws, run_id)
                    continue
                except ray_backend.RayBackendError as exc:
                    runfiles.update_status(run_dir, submit_error=str(exc))  # still queued
                    raise
                con.execute("UPDATE runs SET queue_position = NULL WHERE run_id = ?", [run_id])
                ingest_run(con, ws, run_id)
                started.append(run_id)
            return started
        for run_id in queued:  # strict FIFO: a run that does not fit yet blocks those behind it
            run_dir = ws.runs_dir / run_id
            try:
                cfg = read_config(run_dir)
            except ConfigError as exc:
                runfiles.update_status(run_dir, state=runfiles.FAILED, error=str(exc))
                ingest_run(con, ws, run_id)
                continue
            need = devices_needed(cfg, gpus)
            if need == 0:
                if cpu_busy:
                    break
                ids: list[str] = []
                cpu_busy = True
            else:
                free = [g for g in gpus if g not in busy_gpus]
                if len(free) < need:
                    break
                ids = free[:need]
                busy_gpus.update(ids)
            resume = bool(runfiles.read_status(run_dir).get("resume"))
            launch(ws, run_id, ids, resume=resume)
            con.execute("UPDATE runs SET queue_position = NULL WHERE run_id = ?", [run_id])
            ingest_run(con, ws, run_id)
            started.append(run_id)
    return started


# ---- reading ------------------------------------------------------------------------------------
def list_runs(ws: Workspace) -> pd.DataFrame:
    with db.connect(ws) as con:
        return con.execute(
            "SELECT r.run_id, r.status, d.name AS dataset, r.dataset_id, r.split_id, "
            "r.created_at, r.started_at, r.finished_at, r.queue_position, r.global_step, "
            "r.max_steps, r.start_ndcg10, r.best_ndcg10, r.best_mrr10, r.best_step, "
            "r.bm25_ndcg10, r.bm25_mrr10, r.biencoder_ndcg10, r.biencoder_mrr10, "
            "r.validation_queries, r.train_pairs, r.train_samples_per_second, r.device, "
            "r.precision, r.model_path, r.error "
            "FROM runs r LEFT JOIN datasets d ON d.dataset_id = r.dataset_id "
            "ORDER BY r.created_at DESC"
        ).df()


def run_metrics(ws: Workspace, run_id: str) -> pd.DataFrame:
    """Ingested progress records; a step logged twice (after a resume) keeps its last record."""
    with db.connect(ws) as con:
        return con.execute(
            "SELECT * FROM run_metrics WHERE run_id = ? "
            "QUALIFY row_number() OVER (PARTITION BY kind, step ORDER BY seq DESC) = 1 "
            "ORDER BY step, seq",
            [run_id],
        ).df()


def run_status(ws: Workspace, run_id: str) -> dict[str, Any]:
    return refresh_run(_require_run(ws, run_id))


def log_tail(ws: Workspace, run_id: str, lines: int = 40) -> str:
    """The worker's log; for a Ray run whose log file is empty, Ray's log of the job."""
    run_dir = _require_run(ws, run_id)
    info = read_pid(run_dir)
    if info and info.get("launcher") == "ray":
        from lib import ray_backend

        return ray_backend.run_log_tail(run_dir, info, lines)
    return runfiles.tail(run_dir / runfiles.LOG, lines)


def zip_model(ws: Workspace, run_id: str) -> Path:
    """runs/<id>/model.zip of the final model (rebuilt when the model is newer)."""
    import shutil

    run_dir = _require_run(ws, run_id)
    model_dir = run_dir / runfiles.MODEL
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"run {run_id} has no saved model yet")
    target = run_dir / "model.zip"
    newest = max(p.stat().st_mtime for p in model_dir.rglob("*") if p.is_file())
    if not target.is_file() or target.stat().st_mtime < newest:
        tmp = shutil.make_archive(str(run_dir / ".model-zip"), "zip", root_dir=run_dir,
                                  base_dir=runfiles.MODEL)
        os.replace(tmp, target)
    return target
