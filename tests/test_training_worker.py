"""Real training of the tiny BERT on CPU: the worker, checkpoints, stop/resume, a killed worker."""

import json
import os
import signal

import numpy as np
import pytest
from safetensors.numpy import load_file

from lib import db
from lib.bootstrap import load_demo
from lib.testing import run_cli, train_in_process, wait_until
from lib.training import jobs, runfiles
from lib.training.config import build_config
from lib.workspace import ENV_VAR, resolve_workspace

# one torch thread: on a busy 2-core machine two threads make the tiny model 10x slower
TINY = {"max_length": 48, "learning_rate": 1e-3, "max_train_pairs": 200, "device": "cpu",
        "eval_batch_size": 64, "cpu_threads": 1}



@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One CLI `train --json` run: ~200 pairs x 2 epochs of the tiny model."""
    ws = resolve_workspace(tmp_path_factory.mktemp("trained") / "ws")
    load_demo(ws)
    sets = {**TINY, "base_model": str(tiny_model), "epochs": 2, "batch_size": 8,
            "eval_steps": 10, "logging_steps": 2}
    argv = ["train", "--workspace", str(ws.root), "--dataset", "cranfield-demo", "--json"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    rc, out = run_cli(*argv)
    result = json.loads(out.strip().splitlines()[-1])
    return ws, rc, result


def test_training_lowers_loss_and_logs_validation_ndcg(trained):
    ws, rc, result = trained
    assert rc == 0, result
    assert set(result) >= {"run_id", "status", "model_path", "best", "train_samples_per_second"}
    assert result["status"] == "finished" and result["train_samples_per_second"] > 0
    run_dir = jobs.run_dir_of(ws, result["run_id"])
    records = runfiles.read_progress(run_dir)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) >= 10
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e["step"] for e in evals][:2] == [0, 10]  # the untrained start, then every 10 steps
    assert all(0 < e["ndcg@10"] <= 1 and e["n_queries"] == 45 for e in evals)
    assert all(e["eval_pairs_per_s"] > 0 for e in evals)
    start = next(r for r in records if r["kind"] == "start")
    assert start["pretokenized"] and start["length_bucketing"]
    # max length 48 truncates every demo pair to 48 tokens: no padding either way here
    # (test_fast_training measures the cut on varied lengths)
    assert 0 <= start["padding_share"] <= start["padding_share_random"]
    assert list((run_dir / "tokens").glob("train-*.npz"))  # tokenised once, kept for a resume
    best = max(evals[1:], key=lambda e: e["ndcg@10"])  # step 0 is the base model, not a checkpoint
    assert result["best"]["ndcg@10"] == pytest.approx(best["ndcg@10"])
    assert result["best"]["step"] == best["step"]
    with db.connect(ws) as con:
        row = con.execute("SELECT status, best_ndcg10, start_ndcg10, global_step FROM runs "
                          "WHERE run_id = ?", [result["run_id"]]).fetchall()[0]
        n_metrics = con.execute("SELECT count(*) FROM run_metrics WHERE run_id = ?",
                                [result["run_id"]]).fetchall()[0][0]
    assert row[0] == "finished" and row[1] == pytest.approx(best["ndcg@10"])
    assert row[2] == pytest.approx(evals[0]["ndcg@10"]) and row[3] == 48
    assert n_metrics == len(records)


def test_model_is_the_best_checkpoint_and_everything_reloads(trained):
    from sentence_transformers.cross_encoder import CrossEncoder

    ws, _, result = trained
    run_dir = jobs.run_dir_of(ws, result["run_id"])
    model_dir = run_dir / "model"
    ckpts = runfiles.checkpoints(run_dir)
    assert ckpts and (ckpts[-1][1] / "optimizer.pt").is_file()
    best_ckpt = run_dir / f"checkpoint-{result['best']['step']}"
    final = load_file(model_dir / "model.safetensors")
    kept = load_file(best_ckpt / "model.safetensors")
    assert final.keys() == kept.keys()
    assert all(np.array_equal(final[k], kept[k]) for k in final)
    for path in [model_dir] + [p for _, p in ckpts]:
        scores = CrossEncoder(str(path)).predict([("query text", "document text")])
        assert scores.shape == (1,) and np.isfinite(scores).all()
    card = (model_dir / "README.md").read_text()
    assert "Reranker Studio training record" in card
    assert f"{result['best']['ndcg@10']:.4f}" in card
    assert f'CrossEncoder("{model_dir}")' in card  # the final place, not model.partial
    assert not (run_dir / runfiles.MODEL_PARTIAL).exists()


def test_train_page_renders_the_finished_run(trained, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    ws, _, result = trained
    monkeypatch.setenv(ENV_VAR, str(ws.root))
    page = Path(__file__).resolve().parents[1] / "pages" / "train.py"
    at = AppTest.from_file(str(page), default_timeout=90).run()
    assert not at.exception
    assert at.title[0].value == "Train"
    assert any(result["run_id"] in m.value and "finished" in m.value for m in at.markdown)
    assert any(f'CrossEncoder("{result["model_path"]}")' in c.value for c in at.code)
    assert any("length-bucketed, padding" in c.value for c in at.caption)
    assert [b.label for b in at.button if b.label == "Launch"]


def test_stop_then_resume_continues_the_step_count(workspace, tiny_model):
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(tiny_model), "epochs": 8, "batch_size": 4,
                        "eval_steps": 10_000, "logging_steps": 1, "warmup": 0.5})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(workspace, run_id)
    assert jobs.tick(workspace) == [run_id]
    wait_until(lambda: (runfiles.read_status(run_dir).get("step") or 0) >= 5)
    status = jobs.stop_run(workspace, run_id, timeout_s=60)
    assert status["state"] == "stopped", status
    stopped_at = status["global_step"]
    assert f"resume continues from checkpoint-{stopped_at}" in status["note"]
    ckpt = run_dir / f"checkpoint-{stopped_at}"
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()
    before = [r for r in runfiles.read_progress(run_dir) if r["kind"] == "train"]
    assert before[-1]["step"] == stopped_at

    jobs.resume_run(workspace, run_id)
    assert jobs.tick(workspace) == [run_id]
    n_before = len(runfiles.read_progress(run_dir))
    wait_until(lambda: any(r["kind"] == "train" for r in runfiles.read_progress(run_dir, n_before)))
    jobs.stop_run(workspace, run_id, timeout_s=60)
    after = runfiles.read_progress(run_dir, n_before)
    start = next(r for r in after if r["kind"] == "start")
    assert start["resumed"] and start["step"] == stopped_at
    first = next(r for r in after if r["kind"] == "train")
    assert first["step"] == stopped_at + 1
    # still in warmup: a fresh scheduler would restart near 0, a restored one keeps climbing
    assert before[-1]["lr"] < first["lr"] < before[-1]["lr"] * 1.5
    assert runfiles.read_status(run_dir)["global_step"] > stopped_at
    log = (run_dir / "worker.log").read_text()
    assert f"resuming from checkpoint-{stopped_at}" in log
    assert "read from the token cache" in log  # a resume does not tokenise again


def test_killed_worker_shows_failed_with_log_tail(workspace, tiny_model):
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(tiny_model), "epochs": 50, "batch_size": 4,
                        "eval_steps": 10_000, "logging_steps": 1})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(workspace, run_id)
    jobs.tick(workspace)
    wait_until(lambda: runfiles.read_status(run_dir).get("device"))  # running, libraries loaded
    info = runfiles.read_json(run_dir / runfiles.PID)
    os.killpg(info["pgid"], signal.SIGKILL)
    status = wait_until(lambda: (s := jobs.refresh_run(run_dir))["state"] == "failed" and s)
    assert "SIGKILL" in status["error"]
    assert f"run {run_id}: loading libraries" in status["log_tail"]  # the worker's own lines
    assert "batch_size=2" in status["advice"]  # a concrete smaller setting to try
    jobs.tick(workspace)
    runs = jobs.list_runs(workspace).set_index("run_id")
    assert runs.loc[run_id, "status"] == "failed"


def test_listwise_lambda_loss_trains_grouped_per_query(workspace, tiny_model):
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(tiny_model), "loss": "lambda", "epochs": 1,
                        "batch_size": 4, "eval_steps": 3, "logging_steps": 1})
    created = jobs.create_run(workspace, "cranfield-demo", cfg)
    result = train_in_process(created.run_dir)
    assert result["state"] == "finished"
    start = next(r for r in runfiles.read_progress(created.run_dir) if r["kind"] == "start")
    assert start["train_rows"] == created.train_queries  # one row per query
    assert result["best"]["n_queries"] == 45


def test_cpu_precision_is_bf16_only_where_the_cpu_has_amx(monkeypatch):
    from lib.training import cpu_bf16

    monkeypatch.delenv(cpu_bf16.ENV, raising=False)
    monkeypatch.setattr(cpu_bf16, "cpu_has_amx", lambda: True)
    assert [cpu_bf16.cpu_precision(p) for p in ("auto", "bf16", "fp16", "fp32")] == [
        "bf16", "bf16", "fp32", "fp32"]
    monkeypatch.setattr(cpu_bf16, "cpu_has_amx", lambda: False)
    assert {cpu_bf16.cpu_precision(p) for p in ("auto", "bf16", "fp16", "fp32")} == {"fp32"}
    monkeypatch.setenv(cpu_bf16.ENV, "1")  # the override wins over the detection
    assert cpu_bf16.cpu_precision("auto") == "bf16"
    monkeypatch.setattr(cpu_bf16, "cpu_has_amx", lambda: True)
    monkeypatch.setenv(cpu_bf16.ENV, "0")
    assert cpu_bf16.cpu_precision("bf16") == "fp32"


@pytest.mark.parametrize("amx", ["1", "0"])
def test_a_cpu_run_trains_in_bf16_on_amx_and_saves_an_fp32_model(workspace, tiny_model,
                                                                  monkeypatch, amx):
    """bf16 autocast on CPU (forced on machines without AMX: slower there, same result kind):
    the loss still falls and the saved model is fp32 that plain CrossEncoder loads."""
    from sentence_transformers.cross_encoder import CrossEncoder

    monkeypatch.setenv("RERANKER_STUDIO_CPU_BF16", amx)
    load_demo(workspace)
    cfg = build_config({**TINY, "base_model": str(tiny_model), "epochs": 2, "batch_size": 8,
                        "eval_steps": 50, "logging_steps": 2, "precision": "auto"})
    created = jobs.create_run(workspace, "cranfield-demo", cfg)
    result = train_in_process(created.run_dir)
    assert result["state"] == "finished"
    assert result["precision"] == ("bf16" if amx == "1" else "fp32")
    records = runfiles.read_progress(created.run_dir)
    assert next(r for r in records if r["kind"] == "start")["precision"] == result["precision"]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02
    weights = load_file(created.run_dir / "model" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {np.dtype("float32")}
    scores = CrossEncoder(str(created.run_dir / "model")).predict([("wing lift", "lift of a wing")])
    assert np.isfinite(scores).all()


def test_worker_exception_shows_failed_with_error_and_log_tail(workspace, tiny_model, tmp_path):
    import shutil

    load_demo(workspace)
    model_copy = tmp_path / "model-that-goes-away"
    shutil.copytree(tiny_model, model_copy)
    cfg = build_config({**TINY, "base_model": str(model_copy)})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    shutil.rmtree(model_copy)  # valid at launch time, gone when the worker loads it
    jobs.tick(workspace)
    status = jobs.wait_for(workspace, run_id, timeout_s=120)
    assert status["state"] == "failed"
    assert "model-that-goes-away" in status["error"]
    assert "Traceback" in status["log_tail"] and status["advice"] is None


def test_out_of_memory_failure_gets_concrete_advice(tmp_path):
    import torch

    from lib.training.config import save_config
    from lib.training.worker import report_failure

    save_config(build_config({"batch_size": 16, "max_length": 512}), tmp_path)
    (tmp_path / "worker.log").write_text("step 3/90\n")
    status = report_failure(tmp_path, torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 1.50 GiB"))
    assert status["state"] == "failed" and "OutOfMemoryError" in status["error"]
    assert "batch_size=8 with gradient_accumulation=2" in status["advice"]
    assert "max_length=256" in status["advice"]
    assert status["log_tail"] == "step 3/90"
