"""Training config, warnings, OOM advice, launch command, queue, process identity (no training)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from lib import cli
from lib.bootstrap import load_demo
from lib.training import jobs, runfiles
from lib.training.config import (
    DEFAULT_CPU_PRESET,
    DEFAULT_GPU_PRESET,
    PRESETS,
    ConfigError,
    TrainConfig,
    build_config,
    config_warnings,
    is_oom,
    load_config_file,
    oom_suggestion,
    parse_set,
    preset,
    read_config,
    save_config,
)
from lib.training.worker import build_train_dataset


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", 0), ("learning_rate", -1e-5), ("batch_size", 0), ("epochs", 0),
     ("max_length", 0), ("eval_steps", 0), ("loss", "hinge"), ("warmup", 1.5)],
)
def test_bad_values_fail_naming_field_and_value(field, value):
    with pytest.raises(ConfigError) as err:
        build_config({field: value}, source="my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml: invalid training config")
    assert field in msg and repr(value) in msg


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="learnig_rate"):
        build_config({"learnig_rate": 3e-5})


def test_guide_default_preset_matches_the_guide():
    cfg = preset("Guide default")
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs, cfg.eval_steps, cfg.max_length) == (
        3e-5, 8, 2, 100, 512)
    quick = preset("CPU quick")
    assert quick.max_length <= 128 and quick.epochs == 1 and quick.max_train_pairs
    assert set(PRESETS) == {"Guide default", "CPU quick", "GPU throughput", "GPU full",
                            "CPU recommended", "Distil (CPU)", "GPU recommended"}


def test_gpu_throughput_preset_agrees_with_the_memory_check():
    """The preset's note quotes the Checks' estimate; its lr follows scaled_lr without a warning."""
    import re

    from lib.checks.memory import memory_check
    from lib.models import default_model_path
    from lib.training.config import PRESET_NOTES, config_warnings, scaled_lr

    cfg = preset("GPU throughput")
    assert cfg.batch_size >= 256 and cfg.precision in ("auto", "bf16") and cfg.length_bucketing
    assert cfg.learning_rate == pytest.approx(scaled_lr(cfg.batch_size), rel=0.01)
    check = memory_check(default_model_path(), cfg.batch_size, cfg.max_length, "bf16",
                         query_gpu=False)
    quoted = float(re.search(r"about ([0-9.]+) GiB", PRESET_NOTES["GPU throughput"]).group(1))
    assert quoted == pytest.approx(check["total_gib"], abs=0.1)
    assert check["total_bytes"] < 16 * 1024**3  # "fits a 16 GB card", as the note says
    assert config_warnings(cfg, gpu_available=True) == []


def test_set_values_parse_as_yaml_scalars():
    values = parse_set(["learning_rate=2e-5", "batch-size=16", "pos_weight=null", "loss=lambda"])
    cfg = build_config(values)
    assert cfg.learning_rate == 2e-5 and cfg.batch_size == 16 and cfg.pos_weight is None
    assert cfg.listwise
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        parse_set(["lr=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["learning_rate"])


def test_config_round_trips_through_yaml_and_json(tmp_path):
    cfg = build_config({"learning_rate": 4e-5, "loss": "lambda", "early_stopping_patience": 3})
    save_config(cfg, tmp_path)
    assert read_config(tmp_path) == cfg
    assert build_config(load_config_file(tmp_path / "config.yaml")) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 0\n")
    with pytest.raises(ConfigError, match="bad.yaml.*batch_size"):
        load_config_file(bad)


def test_warnings_for_doubtful_values_and_extra_findings_pass_through(monkeypatch):
    monkeypatch.setenv("RERANKER_STUDIO_CPU_BF16", "0")  # a CPU without AMX
    cfg = build_config({"learning_rate": 1e-4, "epochs": 5, "precision": "bf16", "device": "cpu"})
    warnings = config_warnings(cfg, n_train_pairs=120, extra=["3 queries leak into validation"])
    text = "\n".join(warnings)
    assert "learning rate 0.0001 is outside" in text
    assert "5 epochs" in text
    assert "only 120 training pairs" in text
    assert "bf16 is ignored on CPU" in text
    assert warnings[-1] == "3 queries leak into validation"
    assert config_warnings(build_config({}), n_train_pairs=5000, gpu_available=True) == []
    monkeypatch.setenv("RERANKER_STUDIO_CPU_BF16", "1")  # with AMX, bf16 is what a CPU run uses
    assert not [w for w in config_warnings(cfg, n_train_pairs=5000) if "bf16" in w]
    fp16 = build_config({"precision": "fp16", "device": "cpu"})
    assert any("fp16 is ignored on CPU" in w for w in config_warnings(fp16, n_train_pairs=5000))


def test_oom_advice_is_concrete():
    cfg = build_config({"batch_size": 32, "max_length": 512})
    advice = oom_suggestion(cfg)
    assert "batch_size=16 with gradient_accumulation=2" in advice
    assert "max_length=256" in advice
    assert is_oom("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert not is_oom("ValueError: bad label")


def test_bce_labels_scaled_and_listwise_grouped_per_query():
    train = pd.DataFrame({"query_id": ["a", "a", "b"], "doc_id": ["1", "2", "3"],
                          "query": ["qa", "qa", "qb"], "document": ["d1", "d2", "d3"],
                          "label": [4, 1, 0]})
    ds = build_train_dataset(train, build_config({}), max_label=4)
    assert ds.column_names == ["query", "document", "label"]
    assert ds["label"] == [1.0, 0.25, 0.0]
    ds = build_train_dataset(train, build_config({"loss": "lambda"}), max_label=4)
    assert ds.column_names == ["query", "docs", "labels"]
    assert ds["docs"] == [["d1", "d2"], ["d3"]] and ds["labels"] == [[4.0, 1.0], [0.0]]


def test_worker_command_uses_torchrun_for_several_gpus(tmp_path):
    one = jobs.worker_command(tmp_path, 1, python="py")
    assert one == ["py", "-m", "lib.training.worker", str(tmp_path)]
    many = jobs.worker_command(tmp_path, 4, resume=True, python="py")
    assert many == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                    "-m", "lib.training.worker", str(tmp_path), "--resume"]
    env = jobs.worker_env(jobs.Workspace(tmp_path), ["2", "3"], base={"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["PYTHONUNBUFFERED"] == "1"
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "numba")
    assert jobs.worker_env(jobs.Workspace(tmp_path), [], base={})["CUDA_VISIBLE_DEVICES"] == ""


def test_recycled_pid_is_not_our_worker():
    me = psutil.Process(os.getpid())
    assert jobs.process_alive({"pid": me.pid, "create_time": me.create_time()})
    assert not jobs.process_alive({"pid": me.pid, "create_time": me.create_time() - 100})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
    proc.wait()
    assert not jobs.process_alive(info)


def test_a_clock_adjustment_does_not_make_a_live_worker_dead():
    """create_time moves with the wall clock (boot time is re-read): the kernel's start tick
    still identifies the worker; a process that started at another tick is not ours."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ident = jobs.process_identity(proc.pid)
        # the same instant psutil reports, in ticks since boot
        since_boot = ident["start_ticks"] / os.sysconf("SC_CLK_TCK")
        assert abs(psutil.boot_time() + since_boot - ident["create_time"]) < 1.5
        shifted = ident["create_time"] + 1.0  # btime flipped by a second
        assert jobs.process_alive({"pid": proc.pid, "create_time": shifted,
                                   "start_ticks": ident["start_ticks"]})
        assert not jobs.process_alive({"pid": proc.pid, "create_time": ident["create_time"],
                                       "start_ticks": ident["start_ticks"] - 1})
        # a pid file written before start ticks were recorded: create_time decides
        assert jobs.process_alive({"pid": proc.pid, "create_time": ident["create_time"]})
        assert not jobs.process_alive({"pid": proc.pid, "create_time": shifted})
    finally:
        proc.kill()
        proc.wait()
    assert not jobs.process_alive({"pid": proc.pid, **ident})


def test_missing_model_path_fails_before_anything_is_written(workspace):
    load_demo(workspace)
    cfg = build_config({"base_model": "/nonexistent/model-dir"})
    with pytest.raises(ConfigError, match="base_model: model path '/nonexistent/model-dir'"):
        jobs.create_run(workspace, "cranfield-demo", cfg)
    assert list(workspace.runs_dir.iterdir()) == []


def test_cli_refuses_bad_values_before_launch(workspace, capsys):
    load_demo(workspace)
    rc = cli.main(["train", "--dataset", "cranfield-demo", "--set", "learning_rate=0", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and "learning_rate" in out["error"] and "greater than 0" in out["error"]
    rc = cli.main(["train", "--dataset", "cranfield-demo", "--set", "batch_size=0"])
    assert rc == 2 and "batch_size" in capsys.readouterr().err
    assert not any(p.name.startswith("run-") for p in workspace.runs_dir.iterdir())


# ---- the queue, with a stand-in launcher (a real sleeping process per run) -------------------
@pytest.fixture
def fake_launch(monkeypatch):
    procs = []

    def launch(ws, run_id, gpu_ids=None, resume=False):
        run_dir = jobs.run_dir_of(ws, run_id)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)
        procs.append(proc)
        jobs._children[proc.pid] = proc  # reaped by jobs, as a real launch is
        jobs._exit_codes.pop(proc.pid, None)
        info = {"pid": proc.pid, "pgid": proc.pid, "launcher": "python",
                "create_time": psutil.Process(proc.pid).create_time(), "gpus": list(gpu_ids or [])}
        runfiles.write_json_atomic(run_dir / runfiles.PID, info)
        runfiles.update_status(run_dir, state=runfiles.RUNNING, gpus=list(gpu_ids or []))
        return info

    monkeypatch.setattr(jobs, "launch", launch)
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _states(ws, ids):
    return [runfiles.read_status(jobs.run_dir_of(ws, r)).get("state") for r in ids]


def test_cpu_queue_runs_one_at_a_time_in_order_and_can_be_reordered(workspace, fake_launch,
                                                                    tiny_model):
    load_demo(workspace)
    cfg = build_config({"base_model": str(tiny_model), "device": "cpu"})
    ids = [jobs.create_run(workspace, "cranfield-demo", cfg).run_id for _ in range(3)]
    jobs.move_in_queue(workspace, ids[2], "up")  # queue: 0, 2, 1
    assert jobs.tick(workspace) == [ids[0]]
    assert jobs.tick(workspace) == []  # the CPU is busy
    assert _states(workspace, ids) == ["running", "queued", "queued"]
    assert jobs.request_stop(workspace, ids[1]) == "cancelled"
    fake_launch[0].send_signal(signal.SIGKILL)  # the first worker dies
    fake_launch[0].wait()
    assert jobs.tick(workspace) == [ids[2]]
    status = runfiles.read_status(jobs.run_dir_of(workspace, ids[0]))
    assert status["state"] == "failed" and "SIGKILL" in status["error"]
    runs = jobs.list_runs(workspace).set_index("run_id")
    assert runs.loc[ids[0], "status"] == "failed" and runs.loc[ids[1], "status"] == "cancelled"


def test_one_run_per_gpu(workspace, fake_launch, tiny_model, monkeypatch):
    monkeypatch.setattr(jobs, "visible_gpus", lambda: ("0", "1"))
    load_demo(workspace)
    one = build_config({"base_model": str(tiny_model), "num_gpus": 1})
    both = build_config({"base_model": str(tiny_model)})  # num_gpus 0 = all visible
    ids = [jobs.create_run(workspace, "cranfield-demo", c).run_id for c in (one, one, both, one)]
    assert jobs.tick(workspace) == ids[:2]
    gpus = [runfiles.read_json(jobs.run_dir_of(workspace, r) / runfiles.PID)["gpus"]
            for r in ids[:2]]
    assert gpus == [["0"], ["1"]]
    assert jobs.tick(workspace) == []  # the 2-GPU run waits and keeps its place (FIFO)
    assert jobs.devices_needed(both, ("0", "1")) == 2
    with pytest.raises(ConfigError, match="num_gpus: 3"):
        jobs.create_run(workspace, "cranfield-demo",
                        build_config({"base_model": str(tiny_model), "num_gpus": 3}))


def test_stop_timeout_kills_a_worker_that_ignores_the_request(workspace, fake_launch,
                                                              tiny_model):
    load_demo(workspace)
    cfg = build_config({"base_model": str(tiny_model), "device": "cpu"})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    jobs.tick(workspace)
    stubborn = fake_launch[0]
    # the stand-in dies on SIGTERM; make one that ignores it, like a worker stuck in a step
    stubborn.kill()
    stubborn.wait()
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
        start_new_session=True)
    fake_launch.append(proc)
    time.sleep(0.3)
    run_dir = jobs.run_dir_of(workspace, run_id)
    runfiles.write_json_atomic(run_dir / runfiles.PID, {
        "pid": proc.pid, "pgid": proc.pid, "launcher": "python",
        "create_time": psutil.Process(proc.pid).create_time(), "gpus": []})
    assert jobs.request_stop(workspace, run_id, timeout_s=0.5) == "stopping"
    assert jobs.refresh_run(run_dir).get("stopping")
    time.sleep(0.8)
    status = jobs.refresh_run(run_dir)
    assert status["state"] == "stopped" and "killed (SIGKILL)" in status["note"]
    assert jobs._exit_codes.get(proc.pid) == -signal.SIGKILL  # reaped by the stop enforcement


def test_a_hung_stop_ends_by_itself_and_reads_as_stopped(workspace, tiny_model):
    """Nobody polling: the worker's own alarm ends it after the stop timeout."""
    load_demo(workspace)
    cfg = build_config({"base_model": str(tiny_model), "device": "cpu"})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    run_dir = jobs.run_dir_of(workspace, run_id)
    runfiles.write_json_atomic(run_dir / runfiles.STOP, {"requested_at": 0, "timeout_s": 1})
    hung = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from lib.training.callbacks import StopFlag\n"
        "flag = StopFlag(Path(sys.argv[1]), margin_s=0)\n"
        "flag.install()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(60)  # a step that never ends\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", hung, str(run_dir)], start_new_session=True)
    jobs._children[proc.pid] = proc
    runfiles.write_json_atomic(run_dir / runfiles.PID, {
        "pid": proc.pid, "pgid": proc.pid, "launcher": "python",
        "create_time": psutil.Process(proc.pid).create_time(), "gpus": []})
    runfiles.update_status(run_dir, state=runfiles.RUNNING)
    assert proc.wait(timeout=60) == -signal.SIGALRM  # 1 s after the stop, not the 60 s sleep
    status = jobs.refresh_run(run_dir, stop_timeout_s=1000)  # the app's own kill never fired
    assert status["state"] == "stopped" and "SIGALRM" in status["note"]


def test_worker_ending_while_its_files_are_ingested_loses_no_progress_line(
        workspace, fake_launch, tiny_model, monkeypatch):
    """The worker appends its `end` line and then writes `finished`; an ingest that read the
    progress file just before the end line must not store `finished` (finished runs are not
    polled again, so the end line would be lost for good, as CI once saw: 32 of 33)."""
    from lib import db
    from lib.training import ingest

    load_demo(workspace)
    cfg = build_config({"base_model": str(tiny_model), "device": "cpu"})
    run_id = jobs.create_run(workspace, "cranfield-demo", cfg).run_id
    assert jobs.tick(workspace) == [run_id]
    run_dir = jobs.run_dir_of(workspace, run_id)
    for step in (1, 2):
        runfiles.append_progress(run_dir, {"kind": "train", "step": step, "loss": 0.5})
    real_read = runfiles.read_progress

    def read_then_worker_finishes(path, skip=0):
        records = real_read(path, skip)
        monkeypatch.setattr(ingest.runfiles, "read_progress", real_read)  # once
        runfiles.append_progress(run_dir, {"kind": "end", "state": "finished", "step": 2})
        runfiles.update_status(run_dir, state=runfiles.FINISHED, finished_at=runfiles.now_iso())
        return records

    monkeypatch.setattr(ingest.runfiles, "read_progress", read_then_worker_finishes)
    jobs.tick(workspace)
    jobs.tick(workspace)  # the next poll
    with db.connect(workspace) as con:
        status, n = con.execute("SELECT status, (SELECT count(*) FROM run_metrics m WHERE "
                                "m.run_id = r.run_id) FROM runs r WHERE run_id = ?",
                                [run_id]).fetchall()[0]
    assert status == "finished"
    assert n == len(real_read(run_dir)) == 3


def test_distil_preset_and_cold_start_fields():
    """The CPU default distils only into a new head (auto), on the measured settings
    (bench/results/quality_default.log); the Distil preset distils whatever the base."""
    from lib.training.config import DEFAULT_CPU_PRESET

    rec = preset(DEFAULT_CPU_PRESET)
    assert DEFAULT_CPU_PRESET == "CPU recommended"
    assert (rec.distill_teacher, rec.distill_corpus, rec.distill_epochs,
            rec.distill_docs_per_query, rec.distill_corpus_top_k, rec.distill_pseudo_queries,
            rec.max_train_pairs, rec.max_length, rec.epochs) == (
                "auto", "auto", 1, 5, 30, 300, None, 128, 1)
    cfg = preset("Distil (CPU)")
    assert cfg.distill_teacher == "biencoder"
    assert cfg.model_copy(update={"distill_teacher": "auto"}) == rec
    assert cfg.cold_start == "auto" and cfg.head_learning_rate is None
    assert build_config({"cold_start": "on", "head_learning_rate": 2e-3}).head_learning_rate == 2e-3
    with pytest.raises(ConfigError, match="cold_start"):
        build_config({"cold_start": "maybe"})


def test_gpu_default_distils_a_new_head_but_not_a_trained_one(tiny_model):
    """On a GPU the default is no longer GPU full (no distillation: test NDCG@10 0.162 against
    BM25's 0.361 with the bundled base on positives-only Cranfield) but the distillation recipe
    measured there (bench/results/remote_gpu_h200.json), which leaves a trained head alone."""
    from lib.models import resolve_model
    from lib.training.config import DEFAULT_GPU_PRESET
    from lib.training.recipe import will_distil

    gpu = preset(DEFAULT_GPU_PRESET)
    assert DEFAULT_GPU_PRESET == "GPU recommended"
    assert (gpu.device, gpu.distill_teacher, gpu.distill_corpus, gpu.distill_epochs,
            gpu.distill_pseudo_queries, gpu.distill_corpus_top_k, gpu.max_length) == (
                "cuda", "auto", "auto", 2, 1000, 30, 128)
    assert will_distil(gpu, resolve_model("default"))  # the bundled base: a new head
    assert not will_distil(gpu, resolve_model(str(tiny_model)))  # a trained head
    assert not will_distil(preset("GPU full"), resolve_model("default"))


def test_cli_train_without_a_preset_starts_from_the_train_pages_default(
        workspace, fake_launch, tiny_model, capsys, monkeypatch, tmp_path):
    """`train --dataset X` gets the recipe the page offers (measured to beat the bar on CPU),
    not TrainConfig's bare defaults; a --config file is taken as it is."""
    load_demo(workspace)
    rc = cli.main(["train", "--dataset", "cranfield-demo", "--set", f"base_model={tiny_model}",
                   "--detach", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "preset: CPU recommended" in captured.err
    run_id = json.loads(captured.out.strip().splitlines()[-1])["run_id"]
    got = runfiles.read_json(jobs.run_dir_of(workspace, run_id) / runfiles.CONFIG)
    want = preset(DEFAULT_CPU_PRESET)
    for key in ("learning_rate", "batch_size", "max_length", "epochs", "distill_teacher",
                "distill_pseudo_queries"):
        assert got[key] == getattr(want, key), key
    assert got["base_model"] == str(tiny_model)  # --set still wins
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"base_model": str(tiny_model)}))
    rc = cli.main(["train", "--dataset", "cranfield-demo", "--config", str(cfg_file),
                   "--detach", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "preset:" not in captured.err
    run_id = json.loads(captured.out.strip().splitlines()[-1])["run_id"]
    got = runfiles.read_json(jobs.run_dir_of(workspace, run_id) / runfiles.CONFIG)
    assert got["learning_rate"] == TrainConfig().learning_rate
    monkeypatch.setattr(jobs, "visible_gpus", lambda: ("0",))
    assert jobs.default_preset() == DEFAULT_GPU_PRESET
