"""kill -9 of a worker mid-epoch: the run reads failed, keeps every line it logged, and resumes
from its last complete checkpoint to the end; the other runs and datasets are untouched."""

from __future__ import annotations

import os
import signal

import pytest

from lib import datasets, db
from lib.bootstrap import load_demo
from lib.testing import wait_until
from lib.training import jobs, runfiles
from lib.training.config import build_config

pytestmark = pytest.mark.slow



def _metrics_count(ws, run_id) -> int:
    with db.connect(ws) as con:
        return con.execute("SELECT count(*) FROM run_metrics WHERE run_id = ?",
                           [run_id]).fetchone()[0]


def test_kill_9_mid_epoch_is_failed_resumable_and_loses_nothing(workspace, tiny_model):
    load_demo(workspace)
    tiny = {"base_model": str(tiny_model), "device": "cpu", "max_length": 48,
            "learning_rate": 1e-3, "batch_size": 4, "eval_batch_size": 64, "cpu_threads": 1,
            "logging_steps": 1}
    done = jobs.create_run(workspace, "cranfield-demo", build_config(
        {**tiny, "max_train_pairs": 40, "epochs": 1, "eval_steps": 1000})).run_id
    jobs.tick(workspace)
    assert jobs.wait_for(workspace, done, timeout_s=240)["state"] == "finished"
    kept_model = runfiles.read_status(jobs.run_dir_of(workspace, done))["model_path"]

    cfg = build_config({**tiny, "max_train_pairs": 200, "epochs": 1, "eval_steps": 8})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(workspace, run_id)
    assert jobs.tick(workspace) == [run_id]
    # mid-epoch, past the first complete checkpoint (step 8)
    wait_until(lambda: runfiles.last_checkpoint(run_dir)
          and (runfiles.read_status(run_dir).get("step") or 0) >= 11, timeout=240)
    os.killpg(runfiles.read_json(run_dir / runfiles.PID)["pgid"], signal.SIGKILL)
    status = wait_until(lambda: (s := jobs.refresh_run(run_dir))["state"] == "failed" and s,
                        timeout=240)
    assert "SIGKILL" in status["error"]
    before = runfiles.read_progress(run_dir)
    killed_at = max(r["step"] for r in before if r["kind"] == "train")
    assert killed_at >= 11
    jobs.tick(workspace)
    assert _metrics_count(workspace, run_id) == len(before)  # the curves up to the kill

    jobs.resume_run(workspace, run_id)
    jobs.tick(workspace)
    status = jobs.wait_for(workspace, run_id, timeout_s=300)
    assert status["state"] == "finished", status
    records = runfiles.read_progress(run_dir)
    assert records[:len(before)] == before  # nothing logged before the kill is lost
    resumed = next(r for r in records[len(before):] if r["kind"] == "start")
    ckpt_step = resumed["step"]
    assert resumed["resumed"] and 8 <= ckpt_step <= killed_at and ckpt_step % 8 == 0
    assert status["global_step"] == status["max_steps"] > killed_at
    assert _metrics_count(workspace, run_id) == len(records)
    runs = jobs.list_runs(workspace).set_index("run_id")
    assert runs.loc[run_id, "status"] == "finished" and runs.loc[done, "status"] == "finished"
    assert os.path.isdir(kept_model)  # the other run's model is untouched
    assert "cranfield-demo" in set(datasets.list_datasets(workspace)["name"])
