"""The Ray backend against a real local Ray head (`ray start --head`, token authentication on,
its own short temp dir, stopped by process id at the end): training runs as Ray jobs, stop and
resume, a killed job, Ray Train DDP on CPU, Ray Data scoring, and the errors that lose nothing."""

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

# token authentication for this process (the client) and the head it starts; set before Ray is
# imported, since Ray reads its auth mode once
TOKEN = secrets.token_hex(16)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = TOKEN

ray = pytest.importorskip(
    "ray", reason="the Ray extra is not installed: pip install 'reranker-studio[ray]'")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from lib import cli, ray_backend  # noqa: E402
from lib.bootstrap import load_demo  # noqa: E402
from lib.testing import run_cli, wait_until  # noqa: E402
from lib.training import jobs, runfiles  # noqa: E402
from lib.training.config import build_config  # noqa: E402
from lib.workspace import resolve_workspace  # noqa: E402

pytestmark = pytest.mark.slow
TINY = {"max_length": 48, "learning_rate": 1e-3, "max_train_pairs": 200, "device": "cpu",
        "eval_batch_size": 64, "cpu_threads": 1}
RAY_BIN = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_processes(temp_dir: str) -> list[psutil.Process]:
    """This head's processes (their command lines name its temp dir) and their children."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


@pytest.fixture(scope="module")
def ray_head():
    if not RAY_BIN.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: unix socket paths <= 107
    dash = _free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN,
               RAY_USAGE_STATS_ENABLED="0")
    argv = [str(RAY_BIN), "start", "--head", "--port", str(_free_port()),
            "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dash), "--ray-client-server-port", str(_free_port()),
            "--dashboard-agent-listen-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()), "--temp-dir", temp_dir,
            "--num-cpus", "2", "--num-gpus", "0", "--disable-usage-stats"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        address = f"http://127.0.0.1:{dash}"
        wait_until(lambda: ray_backend.auth_mode(address) == "token", timeout=60, every=1)
        yield address
    finally:
        procs = _head_processes(temp_dir)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
        ray_backend._clients.clear()
        ray_backend._probed.clear()


@pytest.fixture
def ray_ws(tmp_path, monkeypatch, ray_head):
    """A demo workspace whose runs go to the test head."""
    monkeypatch.setenv(ray_backend.ENV_ADDRESS, ray_head)
    ws = resolve_workspace(tmp_path / "ws")
    load_demo(ws)
    return ws


def _cfg(tiny_model, **over):
    return build_config({**TINY, "base_model": str(tiny_model), **over})


def test_training_run_as_ray_job_finishes_and_loads(tmp_path, tiny_model, ray_head, monkeypatch):
    """`train --ray ADDRESS`: a Ray job with submission id = run id; the model loads plainly."""
    monkeypatch.setenv(ray_backend.ENV_ADDRESS, "")  # --ray sets it: restored after the test
    ws = resolve_workspace(tmp_path / "ws")
    load_demo(ws)
    sets = {**TINY, "base_model": str(tiny_model), "epochs": 1, "batch_size": 8,
            "eval_steps": 10, "logging_steps": 2}
    argv = ["train", "--workspace", str(ws.root), "--ray", ray_head, "--dataset",
            "cranfield-demo", "--json"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    rc, out = run_cli(*argv)
    result = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and result["status"] == "finished", result
    run_dir = jobs.run_dir_of(ws, result["run_id"])
    assert ray_backend.check_security(ray_backend.RaySettings(ray_head)) == "token"
    info = runfiles.read_json(run_dir / runfiles.PID)
    assert info["launcher"] == "ray" and info["ray_job"] == result["run_id"]
    client = ray_backend.client(ray_head)
    wait_until(lambda: str(client.get_job_status(result["run_id"])).endswith("SUCCEEDED"),
               timeout=60)
    from sentence_transformers.cross_encoder import CrossEncoder

    scores = CrossEncoder(result["model_path"]).predict([("wing flutter", "flutter of wings")])
    assert np.isfinite(scores).all()
    assert "saved best model" in jobs.log_tail(ws, result["run_id"])


def test_stop_resume_then_a_killed_job_fails_with_its_log_tail(ray_ws, tiny_model):
    ws = ray_ws
    cfg = _cfg(tiny_model, epochs=8, batch_size=4, eval_steps=10_000, logging_steps=1, warmup=0.5)
    run_id = jobs.create_run(ws, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(ws, run_id)
    assert jobs.tick(ws) == [run_id]
    wait_until(lambda: (runfiles.read_status(run_dir).get("step") or 0) >= 3, timeout=240)
    status = jobs.stop_run(ws, run_id, timeout_s=60)
    assert status["state"] == "stopped", status
    stopped_at = status["global_step"]
    assert f"resume continues from checkpoint-{stopped_at}" in status["note"]
    client = ray_backend.client(ray_backend.configured(ws).address)
    wait_until(lambda: str(client.get_job_status(run_id)).endswith("SUCCEEDED"), timeout=60)

    jobs.resume_run(ws, run_id)
    assert jobs.tick(ws) == [run_id]
    assert runfiles.read_json(run_dir / runfiles.PID)["ray_job"] == f"{run_id}-r2"
    n_before = len(runfiles.read_progress(run_dir))
    wait_until(lambda: any(r["kind"] == "train" for r in runfiles.read_progress(run_dir, n_before)),
               timeout=240)
    after = runfiles.read_progress(run_dir, n_before)
    start = next(r for r in after if r["kind"] == "start")
    assert start["resumed"] and start["step"] == stopped_at
    assert next(r for r in after if r["kind"] == "train")["step"] == stopped_at + 1

    os.kill(int(runfiles.read_status(run_dir)["pid"]), signal.SIGKILL)  # the job's worker
    status = wait_until(lambda: (s := jobs.refresh_run(run_dir))["state"] == "failed" and s,
                        timeout=60)
    assert f"Ray job {run_id}-r2 ended FAILED" in status["error"]
    assert f"resuming from checkpoint-{stopped_at}" in status["log_tail"]  # the worker's lines
    jobs.tick(ws)
    assert jobs.list_runs(ws).set_index("run_id").loc[run_id, "status"] == "failed"


def test_ray_train_two_cpu_workers_train_and_validate(ray_ws, tiny_model):
    """ray_train_workers=2: TorchTrainer DDP over gloo; rank 0 writes the run files."""
    ws = ray_ws
    cfg = _cfg(tiny_model, epochs=1, batch_size=8, eval_steps=6, logging_steps=2,
               ray_train_workers=2)
    run_id = jobs.create_run(ws, "cranfield-demo", cfg).run_id
    jobs.tick(ws)
    status = jobs.wait_for(ws, run_id, timeout_s=300)
    assert status["state"] == "finished", (status.get("error"), status.get("log_tail"))
    assert status["device"] == "2 x cpu (DDP)"
    run_dir = jobs.run_dir_of(ws, run_id)
    evals = [r for r in runfiles.read_progress(run_dir) if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and len(evals) >= 2 and evals[-1]["n_queries"] > 0
    train = [r for r in runfiles.read_progress(run_dir) if r["kind"] == "train"]
    # 2 ranks x batch 8 per step, full batches only: half the steps of one process
    assert status["global_step"] == status["max_steps"] == (190 // 8 // 2)
    assert train and all(np.isfinite(r["loss"]) for r in train)
    log = (run_dir / runfiles.LOG).read_text()
    assert "Ray Train: 2 workers, CPU (gloo)" in log
    from sentence_transformers.cross_encoder import CrossEncoder

    assert np.isfinite(CrossEncoder(status["model_path"]).predict([("a", "b")])).all()


def test_more_ray_train_workers_than_the_cluster_has_stay_queued_with_one_error(ray_ws,
                                                                              tiny_model):
    """The test head has 2 CPUs: 3 workers could never be placed (Ray Train would wait)."""
    cfg = _cfg(tiny_model, ray_train_workers=3)
    run_id = jobs.create_run(ray_ws, "cranfield-demo", cfg).run_id
    with pytest.raises(ray_backend.RayBackendError, match=r"needs 3 CPUs \(it has 2\)"):
        jobs.tick(ray_ws)
    status = runfiles.read_status(jobs.run_dir_of(ray_ws, run_id))
    assert status["state"] == "queued" and "lower ray_train_workers" in status["submit_error"]
    assert not status.get("ray_submissions")  # nothing reached the cluster


def test_ray_data_scoring_equals_local_scoring(ray_ws, tiny_model, monkeypatch):
    from lib.evaluation.scoring import cached_cross_encoder, score_cross_encoder
    from lib.models import resolve_model
    from lib.split import load_split_pairs

    ws = ray_ws
    pairs = load_split_pairs(ws, "cranfield-demo").head(600)
    queries, docs = pairs["query"].tolist(), pairs["document"].tolist()
    model = cached_cross_encoder(resolve_model(str(tiny_model)), max_length=64)
    local, _ = score_cross_encoder(None, model, "tiny", queries, docs)
    monkeypatch.setenv(ray_backend.ENV_SCORING_MIN, "100")
    remote, stats = score_cross_encoder(ws, model, "tiny", queries, docs,
                                        model_source=str(tiny_model))
    assert "scored by a Ray Data job" in stats.note and stats.n_scored == stats.n_unique
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-5)
    again, stats = score_cross_encoder(ws, model, "tiny", queries, docs,
                                       model_source=str(tiny_model))
    assert stats.n_scored == 0 and np.array_equal(again, remote)  # the scores reached the cache


def test_unreachable_cluster_gives_one_error_and_keeps_the_run(workspace, tiny_model,
                                                                monkeypatch):
    load_demo(workspace)
    monkeypatch.setenv(ray_backend.ENV_ADDRESS, f"127.0.0.1:{_free_port()}")
    run_id = jobs.create_run(workspace, "cranfield-demo", _cfg(tiny_model)).run_id
    with pytest.raises(ray_backend.RayBackendError, match="cannot reach the Ray cluster at "
                       "http://127.0.0.1:.*the run stays queued"):
        jobs.tick(workspace)
    status = runfiles.read_status(jobs.run_dir_of(workspace, run_id))
    assert status["state"] == "queued" and "cannot reach" in status["submit_error"]
    row = jobs.list_runs(workspace).set_index("run_id").loc[run_id]
    assert row["status"] == "queued" and row["queue_position"] == 1
    err = io.StringIO()  # the CLI: one error line, exit 2, and that run queued too
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["train", "--workspace", str(workspace.root), "--dataset",
                       "cranfield-demo", "--detach", "--set", f"base_model={tiny_model}"])
    assert rc == 2 and err.getvalue().count("error:") == 1, err.getvalue()
    assert "cannot reach the Ray cluster" in err.getvalue()
    assert list(jobs.list_runs(workspace)["status"]) == ["queued", "queued"]


_BLIND = """
import json, sys
from lib.bootstrap import load_demo
from lib.training import jobs, runfiles
from lib.training.config import build_config
from lib.workspace import resolve_workspace
ws = resolve_workspace(sys.argv[1])
load_demo(ws)
run_id = jobs.create_run(ws, "cranfield-demo", build_config(json.loads(sys.argv[2]))).run_id
try:
    jobs.tick(ws)
    error = None
except ValueError as exc:
    error = str(exc)
row = jobs.list_runs(ws).set_index("run_id").loc[run_id]
print("RESULT " + json.dumps({"error": error, "state": row["status"],
      "queue_position": int(row["queue_position"]),
      "config": (jobs.run_dir_of(ws, run_id) / "config.json").is_file()}))
"""


def test_run_dir_the_cluster_cannot_see_gives_one_error_and_keeps_the_run(tmp_path, tiny_model,
                                                                          ray_head):
    """The app runs in its own mount namespace with a tmpfs over its workspace: the cluster's
    node sees an empty directory at that path, as a node without the shared mount would."""
    hidden = tmp_path / "private"
    hidden.mkdir()
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a private mount namespace here (unshare -rm)")
    script = tmp_path / "blind.py"
    script.write_text(textwrap.dedent(_BLIND))
    ws_dir = hidden / "ws"
    cfg = json.dumps({**TINY, "base_model": str(tiny_model)})
    cmd = (f"mount -t tmpfs tmpfs {hidden} && {sys.executable} {script} {ws_dir} "
           f"'{cfg}'")
    env = dict(os.environ, **{ray_backend.ENV_ADDRESS: ray_head},
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], env=env, capture_output=True,
                          text=True, timeout=240)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["error"].startswith(f"the run directory {ws_dir / 'runs'} is not on storage "
                                      "the Ray cluster sees at the same path")
    assert "FileNotFoundError" in result["error"] and "the run stays queued" in result["error"]
    assert result["state"] == "queued" and result["queue_position"] == 1 and result["config"]


class _OpenDashboard(BaseHTTPRequestHandler):
    """Answers like a Ray dashboard started without token authentication."""

    posts: list[str] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = b"[]" if self.path.startswith("/api/jobs") else b'{"version": "x"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        type(self).posts.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_refuses_a_cluster_without_token_auth_unless_allowed(workspace, tiny_model):
    server = HTTPServer(("127.0.0.1", 0), _OpenDashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        load_demo(workspace)
        ray_backend.save_settings(workspace, address)
        run_id = jobs.create_run(workspace, "cranfield-demo", _cfg(tiny_model)).run_id
        with pytest.raises(ray_backend.RayBackendError,
                           match="accepts jobs without token authentication"):
            jobs.tick(workspace)
        assert _OpenDashboard.posts == []  # nothing was submitted
        assert runfiles.read_status(jobs.run_dir_of(workspace, run_id))["state"] == "queued"
        allowed = ray_backend.save_settings(workspace, address, allow_unauthenticated=True)
        assert ray_backend.check_security(allowed) == "none"
    finally:
        server.shutdown()
