"""A full disk, for real: the workspace lives on a small tmpfs and a filler file takes the rest.

Training: the checkpoint write fails -> the run is failed (not finished), says 'disk full' and
what to do, the half-written checkpoint is gone; after freeing space, Resume finishes it.
Ingest: a clear error, no half-stored dataset, the database still opens; retry after freeing works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lib import datasets, db, ingest
from lib.bootstrap import load_demo
from lib.testing import wait_until
from lib.training import jobs, runfiles
from lib.training.config import build_config
from lib.workspace import resolve_workspace

pytestmark = pytest.mark.slow


def _mount_cmd(*args: str) -> list[str]:
    return list(args) if os.geteuid() == 0 else ["sudo", "-n", *args]


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MB tmpfs (root or passwordless sudo is needed to mount one)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(_mount_cmd("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs",
                                     str(where)), capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up: {done.stderr.strip()}")
    yield where
    subprocess.run(_mount_cmd("umount", "-l", str(where)), check=False)


def _fill(disk: Path, leave_mb: float) -> Path:
    """Write a filler file until only `leave_mb` is free."""
    filler = disk / "filler.bin"
    free = shutil.disk_usage(disk).free - int(leave_mb * 2**20)
    with open(filler, "ab") as f:
        while free > 0:
            n = min(free, 4 * 2**20)
            f.write(b"\0" * n)
            free -= n
    return filler



def test_full_disk_while_saving_a_checkpoint_fails_cleanly_and_resumes(small_disk, tiny_model):
    ws = resolve_workspace(small_disk / "ws")
    load_demo(ws)
    cfg = build_config({"base_model": str(tiny_model), "device": "cpu", "max_length": 48,
                        "learning_rate": 1e-3, "max_train_pairs": 160, "batch_size": 8,
                        "epochs": 1, "eval_steps": 6, "logging_steps": 2, "cpu_threads": 1,
                        "eval_batch_size": 64})
    run_id = jobs.create_run(ws, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(ws, run_id)
    filler = _fill(small_disk, leave_mb=1.5)  # the tiny model's weights alone need ~4 MB
    jobs.tick(ws)
    status = wait_until(
        lambda: (s := jobs.refresh_run(run_dir))["state"] in runfiles.TERMINAL and s, timeout=240)

    assert status["state"] == "failed", status
    assert status["error"].startswith("disk full: no space left on the disk holding")
    assert "NOT marked done" in status["error"] and "checkpoint-6" in status["error"]
    assert "Resume" in status["advice"] and "step 0" in status["advice"]
    assert not list(run_dir.glob("checkpoint-*")) and not list(run_dir.glob("model*"))
    assert not list(run_dir.glob(".*.tmp"))
    records = runfiles.read_progress(run_dir)
    assert records[-1] == {**records[-1], "kind": "end", "state": "failed"}
    jobs.tick(ws)  # the app ingests it: the database is writable again after the cleanup
    assert jobs.list_runs(ws).set_index("run_id").loc[run_id, "status"] == "failed"

    filler.unlink()  # the user frees space and resumes
    jobs.resume_run(ws, run_id)
    jobs.tick(ws)
    status = jobs.wait_for(ws, run_id, timeout_s=300)
    assert status["state"] == "finished", status
    from sentence_transformers.cross_encoder import CrossEncoder

    scores = CrossEncoder(status["model_path"], device="cpu").predict([("wing", "a wing")])
    assert len(scores) == 1
    with db.connect(ws) as con:
        n = con.execute("SELECT count(*) FROM run_metrics WHERE run_id = ?", [run_id]).fetchone()
    assert n[0] == len(runfiles.read_progress(run_dir))


def test_full_disk_during_ingest_is_a_clear_error_and_stores_nothing(small_disk, tmp_path):
    ws = resolve_workspace(small_disk / "ws")
    load_demo(ws)
    before = datasets.list_datasets(ws)
    src = tmp_path / "big.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(60_000):
            f.write(json.dumps({"query": f"query {i // 10}", "document": f"document {i} " * 20,
                                "label": i % 2}) + "\n")
    inside = ws.root / "imports" / "big.jsonl"
    inside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, inside)  # the server-side path: already in the workspace
    filler = _fill(small_disk, leave_mb=2)

    with pytest.raises(ingest.DiskFullError) as err:
        ingest.ingest_file(ws, inside, "big")
    message = str(err.value)
    assert "disk full" in message and str(ws.root) in message and "nothing was stored" in message
    after = datasets.list_datasets(ws)  # the database still opens, with what it had
    assert list(after["dataset_id"]) == list(before["dataset_id"])

    filler.unlink()
    report = ingest.ingest_file(ws, inside, "big")
    assert report.accepted == 60_000 and report.rejected == 0
