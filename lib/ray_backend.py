"""The Ray backend: training runs as Ray jobs, multi-node DDP through Ray Train, large scoring
through Ray Data. All Ray code lives here; `ray` is imported lazily (the `[ray]` extra).

Why it is shaped like this:
- The app talks to ONE address, the cluster's dashboard (`http://HEAD:8265`), through the Ray Jobs
  API. Everything that must run on the cluster (a training run, the shared-storage probe, a
  scoring pass) is a job whose entrypoint is a command of this project, so the app needs no Ray
  client connection and never proxies the dashboard.
- The worker stays the same program: it reads and writes only the run directory, which must be
  on storage every node sees at the same path. Before submitting, a probe job runs one tiny task
  on every node that reads a token file the app just wrote; a node that cannot see it stops the
  submission with one error naming the path, and the run stays queued.
- The Jobs API runs any command it is given: a cluster that answers without token authentication
  (Ray >= 2.52, RAY_AUTH_MODE=token) is refused unless the user allows it explicitly.
- Our status.json, not Ray's job state, decides finished or failed: a job that ended while the
  run's status still says starting/running failed (or was stopped, when a stop was asked for).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.workspace import Workspace

ENV_ADDRESS = "RERANKER_STUDIO_RAY_ADDRESS"
ENV_ALLOW = "RERANKER_STUDIO_RAY_ALLOW_UNAUTHENTICATED"
ENV_PYTHON = "RERANKER_STUDIO_RAY_PYTHON"
ENV_SCORING_MIN = "RERANKER_STUDIO_RAY_SCORING_MIN_PAIRS"
DEFAULT_SCORING_MIN_PAIRS = 50_000
SETTING_ADDRESS = "ray_address"
SETTING_ALLOW = "ray_allow_unauthenticated"
INSTALL_HINT = "pip install 'reranker-studio[ray]'"
LAUNCHER = "ray"
PROBE_MARK = "RERANKER_STUDIO_PROBE "
PROBE_CACHE_S = 300.0
JOB_WAIT_S = 180.0
# passed to jobs as they are; never the app's whole environment (secrets, local paths)
_PASS_PREFIXES = ("RERANKER_STUDIO_", "HF_", "TRANSFORMERS_", "NUMBA_", "TOKENIZERS_")

_probed: dict[tuple[str, str], tuple[float, dict]] = {}  # (address, dir) -> (when, report)


class RayBackendError(ValueError):
    """One clear message for the user; nothing about the run was changed."""


# ---- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    address: str | None
    allow_unauthenticated: bool = False
    source: str = "none"  # 'env' (also --ray), 'workspace' or 'none'


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def normalize_address(address: str) -> str:
    """The dashboard URL the Jobs API needs: `http://host:8265`; a bare host:port gets http://."""
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise RayBackendError(f"{address}: give the cluster's dashboard address (the Jobs API), "
                              "e.g. http://HEAD:8265, not a ray:// client address")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise RayBackendError(f"{address}: the Ray address must be http(s)://HOST:PORT")
    return address


def _read_setting(ws: Workspace, key: str) -> str | None:
    if not ws.db_path.is_file():
        return None
    from lib import db

    with db.connect(ws) as con:
        row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def settings(ws: Workspace) -> RaySettings:
    """--ray / RERANKER_STUDIO_RAY_ADDRESS first, then the workspace's saved setting."""
    env = os.environ.get(ENV_ADDRESS, "").strip()
    saved_allow = _truthy(_read_setting(ws, SETTING_ALLOW))
    allow = _truthy(os.environ.get(ENV_ALLOW)) or saved_allow
    if env:
        return RaySettings(normalize_address(env), allow, "env")
    saved = _read_setting(ws, SETTING_ADDRESS)
    if saved:
        return RaySettings(normalize_address(saved), allow, "workspace")
    return RaySettings(None, allow, "none")


def save_settings(ws: Workspace, address: str | None, allow_unauthenticated: bool = False
                  ) -> RaySettings:
    """Save (or with address None, clear) the workspace's Ray cluster."""
    from lib import db

    ws.ensure()
    with db.connect(ws) as con:
        con.execute("DELETE FROM settings WHERE key IN (?, ?)", [SETTING_ADDRESS, SETTING_ALLOW])
        if address:
            con.execute("INSERT INTO settings VALUES (?, ?), (?, ?)", [
                SETTING_ADDRESS, normalize_address(address),
                SETTING_ALLOW, "1" if allow_unauthenticated else "0"])
    return settings(ws)


def configured(ws: Workspace) -> RaySettings | None:
    s = settings(ws)
    return s if s.address else None


# ---- connecting ----------------------------------------------------------------------------------
def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayBackendError(f"a Ray cluster is configured but Ray is not installed here: "
                              f"{INSTALL_HINT}") from exc
    return ray


def _unreachable(address: str, exc: BaseException) -> RayBackendError:
    return RayBackendError(
        f"cannot reach the Ray cluster at {address} ({type(exc).__name__}: {exc}); is "
        "`ray start --head` running there and its dashboard port reachable from here? "
        "Nothing was submitted: the run stays queued.")


def auth_mode(address: str, timeout_s: float = 5.0) -> str:
    """'token' when the Jobs API refuses a request without a token, 'none' when it answers."""
    req = urllib.request.Request(address + "/api/jobs/", method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
            resp.read(1)
        return "none"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return "token"
        raise _unreachable(address, exc) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(address, exc) from exc


def check_security(s: RaySettings) -> str:
    mode = auth_mode(s.address)
    if mode == "none" and not s.allow_unauthenticated:
        raise RayBackendError(
            f"the Ray cluster at {s.address} accepts jobs without token authentication: anyone "
            "who can reach it can run any command on its machines. Start every node with "
            "RAY_AUTH_MODE=token (see the README, 'Training on a Ray cluster'), or, on a private "
            "network you trust, allow it explicitly with --ray-allow-unauthenticated "
            "(or `reranker-studio ray set ADDRESS --allow-unauthenticated`). Nothing was "
            "submitted: the run stays queued.")
    return mode


_clients: dict[str, Any] = {}


def client(address: str):
    """A JobSubmissionClient (cached). With token auth the app needs RAY_AUTH_MODE=token and the
    token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) in its environment."""
    if address in _clients:
        return _clients[address]
    import_ray()
    from ray.job_submission import JobSubmissionClient

    try:
        c = JobSubmissionClient(address)
    except (ConnectionError, OSError) as exc:
        raise _unreachable(address, exc) from exc
    except RuntimeError as exc:
        text = str(exc)
        if "401" in text or "403" in text or "uthenticat" in text:
            raise RayBackendError(
                f"the Ray cluster at {address} wants a token: set RAY_AUTH_MODE=token and "
                f"RAY_AUTH_TOKEN (or ~/.ray/auth_token) for the app ({text[:300]})") from exc
        raise _unreachable(address, exc) from exc
    _clients[address] = c
    return c


def cluster_python() -> str:
    """The interpreter jobs run: this one unless RERANKER_STUDIO_RAY_PYTHON names the nodes'."""
    return os.environ.get(ENV_PYTHON) or sys.executable


def job_env(ws: Workspace, gpu_ids_hidden: bool) -> dict[str, str]:
    """The worker's environment for a job: worker_env's settings, none of the app's secrets."""
    from lib.training.jobs import worker_env

    base = {k: v for k, v in os.environ.items() if k.startswith(_PASS_PREFIXES)}
    env = worker_env(ws, [], base=base)
    env.pop(ENV_ADDRESS, None)  # the worker itself never submits to Ray
    if not gpu_ids_hidden:
        env.pop("CUDA_VISIBLE_DEVICES", None)  # Ray sets it to the GPUs it gave the job
    return env


def _terminal(status) -> bool:
    return str(status).split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED")


def _status_name(status) -> str:
    return str(status).split(".")[-1]


def run_job(address: str, entrypoint: str, env: dict[str, str], timeout_s: float = JOB_WAIT_S,
            what: str = "job") -> tuple[str, str]:
    """Submit a short job and wait for it: (final status, its logs)."""
    c = client(address)
    sid = f"reranker-studio-{what}-{secrets.token_hex(4)}"
    try:
        c.submit_job(entrypoint=entrypoint, submission_id=sid, runtime_env={"env_vars": env},
                     entrypoint_num_cpus=0)
    except (ConnectionError, OSError) as exc:
        raise _unreachable(address, exc) from exc
    deadline = time.time() + timeout_s
    status = c.get_job_status(sid)
    while not _terminal(status):
        if time.time() > deadline:
            c.stop_job(sid)
            raise RayBackendError(f"the Ray {what} job {sid} did not end within {timeout_s:.0f} s "
                                  f"on {address}")
        time.sleep(0.5)
        status = c.get_job_status(sid)
    return _status_name(status), c.get_job_logs(sid)


# ---- the shared-storage probe --------------------------------------------------------------------
def probe(s: RaySettings, ws: Workspace, path: Path, use_cache: bool = True) -> dict[str, Any]:
    """Every alive node must see `path` (a directory) at the same path: the app writes a token
    file there, a task pinned to each node reads it. Also reports nodes and resources."""
    key = (s.address, str(path))
    when, cached = _probed.get(key, (0.0, {}))
    if use_cache and time.time() - when < PROBE_CACHE_S:
        return dict(cached, cached=True)
    path.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    token_file = path / f".ray-probe-{token[:8]}"
    token_file.write_text(token, encoding="utf-8")
    try:
        entry = (f"cd {shlex.quote(str(_project_root()))} && {shlex.quote(cluster_python())} -m "
                 f"lib.ray_backend probe {shlex.quote(str(token_file))} {token}")
        state, logs = run_job(s.address, entry, job_env(ws, True), what="probe")
    finally:
        token_file.unlink(missing_ok=True)
    report = None
    for line in logs.splitlines():
        if line.startswith(PROBE_MARK):
            report = json.loads(line[len(PROBE_MARK):])
    if report is None:
        tail = "\n".join(logs.strip().splitlines()[-8:])
        raise RayBackendError(
            f"the storage probe job on {s.address} ended {state} without a report: the cluster "
            f"cannot run this project ({cluster_python()} -m lib.ray_backend; install it at "
            f"the same path on every node, or set {ENV_PYTHON}). Its log:\n{tail}")
    blind = [n for n in report["nodes"] if not n["sees_path"]]
    if blind:
        names = ", ".join(f"{n['ip']} ({n['why']})" for n in blind)
        raise RayBackendError(
            f"the run directory {path} is not on storage the Ray cluster sees at the same path: "
            f"node(s) {names} cannot read the file the app wrote there. Put the workspace's "
            "runs/ on shared storage mounted at the same path on every node. Nothing was "
            "submitted: the run stays queued.")
    _probed[key] = (time.time(), report)
    return report


def _probe_main(token_file: str, token: str) -> int:
    """Runs inside the probe job: one task per alive node reads the token file."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(logging_level="warning", log_to_driver=False)

    @ray.remote(num_cpus=0)
    def look(p: str, expected: str) -> dict:
        import socket

        try:
            ok = Path(p).read_text(encoding="utf-8") == expected
            why = "" if ok else "a different file is there"
        except OSError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc.strerror or exc}"
        return {"host": socket.gethostname(), "sees_path": ok, "why": why}

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(token_file, token) for n in nodes]
    out = []
    for n, r in zip(nodes, ray.get(refs), strict=True):
        out.append({"ip": n.get("NodeManagerAddress"), "resources": n.get("Resources", {}), **r})
    print(PROBE_MARK + json.dumps({"nodes": out, "resources": ray.cluster_resources()}),
          flush=True)
    return 0


def _project_root() -> Path:
    from lib.training.jobs import PROJECT_ROOT

    return PROJECT_ROOT


def check(ws: Workspace, s: RaySettings | None = None) -> dict[str, Any]:
    """What `reranker-studio ray check` prints: reachability, auth, nodes, shared storage."""
    s = s or configured(ws)
    if s is None:
        raise RayBackendError(f"no Ray cluster configured: pass --ray ADDRESS, set {ENV_ADDRESS} "
                              "or `reranker-studio ray set ADDRESS`")
    mode = check_security(s)
    report = probe(s, ws, ws.runs_dir, use_cache=False)
    return {"address": s.address, "source": s.source, "token_auth": mode == "token",
            "allow_unauthenticated": s.allow_unauthenticated, "runs_dir": str(ws.runs_dir),
            "shared_storage": "ok", "nodes": report["nodes"], "resources": report["resources"]}


# ---- training runs as jobs -----------------------------------------------------------------------
def job_gpus(cfg, resources: dict[str, float] | None) -> int:
    """GPUs the job's entrypoint asks for: none on the CPU or under Ray Train (its workers ask)."""
    if cfg.device == "cpu" or cfg.ray_train_workers:
        return 0
    have = int((resources or {}).get("GPU", 0))
    if cfg.device == "cuda":
        return max(1, cfg.num_gpus)
    return (cfg.num_gpus or 1) if have else 0


def ray_train_shortfall(cfg, resources: dict[str, float] | None) -> str | None:
    """Why the cluster cannot place the run's Ray Train workers (1 CPU each, and 1 GPU each
    when it trains on GPUs, as train_with_ray_train asks), or None. Ray Train would otherwise
    wait for the resources forever and the run would sit 'starting'."""
    workers = int(cfg.ray_train_workers or 0)
    if not workers:
        return None
    have = resources or {}
    use_gpu = cfg.device != "cpu" and have.get("GPU", 0) >= 1
    short = [f"{workers} {kind}s (it has {have.get(kind, 0):g})"
             for kind in (("CPU", "GPU") if use_gpu else ("CPU",))
             if have.get(kind, 0) < workers]
    if not short:
        return None
    return (f"ray_train_workers: {workers} needs {' and '.join(short)} on the Ray cluster "
            "in total; lower ray_train_workers or add nodes. Nothing was submitted: the run "
            "stays queued.")


def submit_run(ws: Workspace, s: RaySettings, run_id: str, resume: bool) -> dict[str, Any]:
    """Submit a queued run as a Ray job (submission id = run id; '-rN' on a resume). Raises
    RayBackendError with the run untouched (still queued) when anything is wrong."""
    from lib.training import runfiles
    from lib.training.config import read_config
    from lib.training.jobs import run_dir_of, worker_command

    run_dir = run_dir_of(ws, run_id)
    cfg = read_config(run_dir)
    check_security(s)
    report = probe(s, ws, ws.runs_dir)
    if why := ray_train_shortfall(cfg, report.get("resources")):
        raise RayBackendError(why)
    n_gpus = job_gpus(cfg, report.get("resources"))
    argv = worker_command(run_dir, n_gpus, resume, python=cluster_python())
    log = run_dir / runfiles.LOG
    entry = (f"cd {shlex.quote(str(_project_root()))} && {shlex.join(argv)} "
             f">> {shlex.quote(str(log))} 2>&1")
    # Ray keeps every submission id: a resubmission (resume) gets the next '-rN'
    n = int(runfiles.read_status(run_dir).get("ray_submissions") or 0) + 1
    sid = run_id if n == 1 else f"{run_id}-r{n}"
    c = client(s.address)
    (run_dir / runfiles.STOP).unlink(missing_ok=True)
    with open(log, "ab") as f:
        f.write(f"\n=== {runfiles.now_iso()} Ray job {sid} on {s.address}: {entry}\n".encode())
    try:
        c.submit_job(entrypoint=entry, submission_id=sid, entrypoint_num_gpus=n_gpus,
                     # under Ray Train the entrypoint only coordinates: its workers ask
                     entrypoint_num_cpus=0 if cfg.ray_train_workers else 1,
                     runtime_env={"env_vars": job_env(ws, gpu_ids_hidden=n_gpus == 0)},
                     metadata={"reranker_studio_run": run_id})
    except (ConnectionError, OSError) as exc:
        raise _unreachable(s.address, exc) from exc
    except RuntimeError as exc:
        raise RayBackendError(f"the Ray cluster at {s.address} refused job {sid}: {exc}") from exc
    info = {"launcher": LAUNCHER, "ray_job": sid, "ray_address": s.address, "ray_attempt": n,
            "gpus": [], "ray_gpus": n_gpus, "argv": argv, "launched_at": runfiles.now_iso(),
            "resume": resume}
    runfiles.write_json_atomic(run_dir / runfiles.PID, info)
    runfiles.update_status(run_dir, state=runfiles.STARTING, launched_at=runfiles.now_iso(),
                           gpus=[], error=None, log_tail=None, advice=None, submit_error=None,
                           ray_submissions=n,
                           backend=f"ray job {sid} on {s.address}")
    return info


def refresh_run(run_dir: Path, status: dict[str, Any], info: dict[str, Any],
                stop_timeout_s: float | None) -> dict[str, Any]:
    """jobs.refresh_run for a run submitted to Ray (status.json says starting or running)."""
    from lib.training import runfiles
    from lib.training.jobs import STOP_TIMEOUT_S

    sid, address = info["ray_job"], info["ray_address"]
    try:
        c = client(address)
        job = c.get_job_info(sid)
    except RayBackendError as exc:
        return dict(status, ray_unreachable=str(exc))
    except Exception as exc:  # noqa: BLE001 - a lost connection must not break the page
        return dict(status, ray_unreachable=f"{type(exc).__name__}: {exc}")
    job_state = _status_name(job.status)
    stop = runfiles.read_json(run_dir / runfiles.STOP)
    if not _terminal(job.status):
        if stop:
            timeout = (stop_timeout_s if stop_timeout_s is not None
                       else stop.get("timeout_s", STOP_TIMEOUT_S))
            waited = time.time() - float(stop.get("requested_at", time.time()))
            if waited <= timeout:
                return dict(status, stopping=True, stop_waited_s=round(waited, 1))
            c.stop_job(sid)
            ckpt = runfiles.last_checkpoint(run_dir)
            return runfiles.update_status(
                run_dir, state=runfiles.STOPPED, finished_at=runfiles.now_iso(), eta_s=None,
                note=f"no graceful stop within {timeout:.0f} s: Ray job {sid} stopped; resume "
                + (f"continues from {ckpt.name}" if ckpt else "starts again from step 0"),
                log_tail=run_log_tail(run_dir, info))
        return dict(status, ray_job_status=job_state)
    status = runfiles.read_status(run_dir)  # the worker may have finished between the reads
    if status.get("state") not in runfiles.ACTIVE:
        return status
    tail = run_log_tail(run_dir, info)
    why = f"Ray job {sid} ended {job_state}" + (f": {job.message}" if job.message else "")
    if stop:
        ckpt = runfiles.last_checkpoint(run_dir)
        return runfiles.update_status(
            run_dir, state=runfiles.STOPPED, finished_at=runfiles.now_iso(), eta_s=None,
            log_tail=tail, note=f"asked to stop, {why}; resume "
            + (f"continues from {ckpt.name}" if ckpt else "starts again from step 0"))
    return runfiles.update_status(
        run_dir, state=runfiles.FAILED, finished_at=runfiles.now_iso(), eta_s=None,
        error=f"the worker ended without reporting a result ({why})", log_tail=tail)


def run_log_tail(run_dir: Path, info: dict[str, Any] | None, lines: int = 40) -> str:
    """The run's own worker.log; Ray's job log when that has nothing (e.g. storage trouble)."""
    from lib.training import runfiles

    text = runfiles.tail(run_dir / runfiles.LOG, lines)
    body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("=== ")]
    if body or not info or info.get("launcher") != LAUNCHER:
        return text
    try:
        logs = client(info["ray_address"]).get_job_logs(info["ray_job"])
    except Exception:  # noqa: BLE001 - the file's lines are still worth showing
        return text
    return "\n".join(logs.splitlines()[-lines:]) or text


# ---- Ray Train: one run on several machines ------------------------------------------------------
def _train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker (RANK/WORLD_SIZE set, process group up): the worker's own
    training function; rank 0 writes the run files. Stop requests arrive by the stop file."""
    from lib.training import worker
    from lib.training.callbacks import StopFlag

    run_dir = Path(config["run_dir"])
    result = worker.train(run_dir, bool(config["resume"]), StopFlag(run_dir))
    if result.get("state") == "failed":
        raise RuntimeError(result.get("error") or "training failed")


def train_with_ray_train(run_dir: Path, resume: bool, cfg) -> None:
    """Inside the run's Ray job: DDP over `ray_train_workers` workers (gloo on CPU, nccl on
    GPUs), possibly on several machines, through TorchTrainer."""
    ray = import_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(logging_level="warning")
    use_gpu = cfg.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
    if cfg.device == "cuda" and not use_gpu:
        raise RuntimeError("device 'cuda' was asked for but the Ray cluster has no GPU")
    print(f"[{time.strftime('%Y-%m-%dT%H:%M:%S')}] Ray Train: {cfg.ray_train_workers} workers, "
          f"{'GPU (nccl)' if use_gpu else 'CPU (gloo)'}", flush=True)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"run_dir": str(run_dir), "resume": resume},
        scaling_config=ScalingConfig(num_workers=cfg.ray_train_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="ray-train", storage_path=str(run_dir / "ray_train")),
    )
    trainer.fit()


# ---- Ray Data: large scoring ---------------------------------------------------------------------
def scoring_min_pairs() -> int:
    try:
        return int(os.environ.get(ENV_SCORING_MIN, DEFAULT_SCORING_MIN_PAIRS))
    except ValueError:
        return DEFAULT_SCORING_MIN_PAIRS


def scoring_settings(ws: Workspace | None, n_pairs: int) -> RaySettings | None:
    """The cluster to score on, when one is configured and there are enough pairs."""
    if ws is None or n_pairs < max(1, scoring_min_pairs()):
        return None
    try:
        return configured(ws)
    except RayBackendError:
        return None


class _Scorer:
    """A model replica (Ray Data actor): the same score_pairs as local scoring."""

    def __init__(self, model_path: str, max_length: int | None, head_seed: int | None,
                 batch_size: int, window_stride: int | None, threads: int):
        import torch

        from lib.models import load_cross_encoder, resolve_model

        if threads and not torch.cuda.is_available():
            torch.set_num_threads(threads)
        if head_seed is not None:
            from transformers import set_seed

            set_seed(head_seed)
        self.model = load_cross_encoder(resolve_model(model_path), max_length=max_length)
        self.batch_size = batch_size
        self.window_stride = window_stride

    def __call__(self, batch: dict) -> dict:
        from lib.evaluation.scoring import effective_max_length, score_pairs

        pairs = list(zip(batch["query"].tolist(), batch["document"].tolist(), strict=True))
        scores = score_pairs(self.model, pairs, batch_size=self.batch_size,
                             window_stride=self.window_stride,
                             max_length=effective_max_length(self.model))
        return {"idx": batch["idx"], "score": scores}


def score_on_cluster(ws: Workspace, s: RaySettings, model_path: str, pairs: list[tuple[str, str]],
                     *, max_length: int | None, head_seed: int | None, batch_size: int,
                     window_stride: int | None, timeout_s: float = 3600.0) -> Any:
    """Scores of `pairs` in order, computed by a Ray Data job with a pool of model replicas
    (one per GPU, else CPU actors); the app stores them in its score cache."""
    import numpy as np
    import pandas as pd

    check_security(s)
    work = ws.cache_dir / "ray-scoring" / secrets.token_hex(6)
    probe(s, ws, work.parent)
    work.mkdir(parents=True)
    try:
        pd.DataFrame({"idx": np.arange(len(pairs)), "query": [p[0] for p in pairs],
                      "document": [p[1] for p in pairs]}).to_parquet(work / "pairs.parquet")
        spec = {"model_path": str(model_path), "max_length": max_length, "head_seed": head_seed,
                "batch_size": batch_size, "window_stride": window_stride}
        (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        entry = (f"cd {shlex.quote(str(_project_root()))} && {shlex.quote(cluster_python())} -m "
                 f"lib.ray_backend score {shlex.quote(str(work))}")
        state, logs = run_job(s.address, entry, job_env(ws, False), timeout_s=timeout_s,
                              what="scoring")
        out = work / "scores.parquet"
        if state != "SUCCEEDED" or not out.is_file():
            tail = "\n".join(logs.strip().splitlines()[-12:])
            raise RayBackendError(f"the Ray scoring job ended {state}; its log:\n{tail}")
        frame = pd.read_parquet(out).sort_values("idx")
        if len(frame) != len(pairs) or not (frame["idx"].to_numpy() == np.arange(len(pairs))).all():
            raise RayBackendError(f"the Ray scoring job returned {len(frame)} scores for "
                                  f"{len(pairs)} pairs")
        return frame["score"].to_numpy(dtype=np.float64)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _score_main(work_dir: str) -> int:
    """Runs inside the scoring job: Ray Data map_batches over an actor pool of replicas."""
    ray = import_ray()
    import pandas as pd

    ray.init(logging_level="warning")
    work = Path(work_dir)
    spec = json.loads((work / "spec.json").read_text(encoding="utf-8"))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    replicas = gpus if gpus else max(1, min(cpus - 1, 8))
    ds = ray.data.read_parquet(str(work / "pairs.parquet"))
    scored = ds.map_batches(
        _Scorer, batch_size=max(spec["batch_size"] * 8, 256), batch_format="numpy",
        fn_constructor_kwargs={**spec, "threads": 0 if gpus else 1},
        compute=ray.data.ActorPoolStrategy(size=replicas),
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    frame = scored.to_pandas()
    pd.DataFrame({"idx": frame["idx"], "score": frame["score"]}).to_parquet(
        work / "scores.parquet")
    print(f"scored {len(frame)} pairs on {replicas} {'GPU' if gpus else 'CPU'} replica(s)",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry points of the jobs this module submits (run ON the cluster)."""
    parser = argparse.ArgumentParser(prog="python -m lib.ray_backend")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("token_file")
    p.add_argument("token")
    p = sub.add_parser("score")
    p.add_argument("work_dir")
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        return _probe_main(args.token_file, args.token)
    return _score_main(args.work_dir)


if __name__ == "__main__":
    raise SystemExit(main())
