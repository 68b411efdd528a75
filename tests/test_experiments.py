"""Sweeps through the real queue with the tiny model; the experiments table, diff and curves."""

import json
import time

import pytest

from lib.bootstrap import load_demo
from lib.cli import main
from lib.experiments import sweeps
from lib.experiments.grid import QUICK_MAX_TRAIN_PAIRS, expand_grid, parse_grid
from lib.experiments.table import best_run, config_diff, curves, run_configs, runs_table
from lib.training import jobs, runfiles
from lib.training.config import ConfigError, build_config

TINY = {"max_length": 48, "max_train_pairs": 120, "device": "cpu", "eval_batch_size": 64,
        "cpu_threads": 1, "eval_steps": 5, "logging_steps": 2, "epochs": 1}


def test_grid_parsing_and_expansion():
    grid = parse_grid("learning_rate: [2e-5, 5e-5]\nepochs: [1, 2, 3]\n")
    points = expand_grid(build_config({}), grid)
    assert [p for p, _ in points][:2] == [{"learning_rate": 2e-5, "epochs": 1},
                                          {"learning_rate": 2e-5, "epochs": 2}]
    assert len(points) == 6 and points[-1][1].epochs == 3 and points[-1][1].learning_rate == 5e-5
    with pytest.raises(ConfigError, match="'device' cannot be swept"):
        parse_grid({"device": ["cpu", "cuda"]})
    with pytest.raises(ConfigError, match="distinct values"):
        parse_grid({"epochs": [1, 1]})
    with pytest.raises(ConfigError, match="batch_size"):
        expand_grid(build_config({}), {"batch_size": [8, 0]})


def test_quick_mode_shrinks_what_is_not_swept():
    base = build_config({"max_length": 512})
    quick = expand_grid(base, {"learning_rate": [2e-5, 3e-5]}, quick=True)
    assert all(c.max_length == 128 and c.max_train_pairs == QUICK_MAX_TRAIN_PAIRS
               for _, c in quick)
    swept = expand_grid(base, {"max_length": [256, 384]}, quick=True)
    assert [c.max_length for _, c in swept] == [256, 384]


def test_config_diff_shows_only_differences():
    diff = config_diff({"a": {"lr": 1, "bs": 8, "x": 0}, "b": {"lr": 2, "bs": 8, "x": 0}})
    assert list(diff.index) == ["lr"] and diff.loc["lr"].tolist() == [1, 2]
    full = config_diff({"a": {"lr": 1, "bs": 8}, "b": {"lr": 2, "bs": 8}}, only_differences=False)
    assert list(full.index) == ["bs", "lr"]


@pytest.fixture(scope="module")
def sweep_ws(tmp_path_factory, tiny_model):
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(tmp_path_factory.mktemp("sweep") / "ws")
    load_demo(ws)
    return ws


def test_2x2_sweep_runs_through_the_queue_to_a_correct_table(sweep_ws, tiny_model, tmp_path,
                                                             capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("learning_rate: [1.0e-3, 3.0e-4]\nbatch_size: [8, 16]\n")
    argv = ["sweep", "--workspace", str(sweep_ws.root), "--dataset", "cranfield-demo",
            "--grid", str(grid), "--json", "--set", f"base_model={tiny_model}"]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["plan"]["runs"] == 4 and out["plan"]["estimated_total_s"] > 0
    runs = out["runs"]
    assert sorted((r["params"]["learning_rate"], r["params"]["batch_size"]) for r in runs) == [
        (3e-4, 8), (3e-4, 16), (1e-3, 8), (1e-3, 16)]
    assert all(r["status"] == "finished" for r in runs)
    assert all(0 < r["best"]["ndcg@10"] <= 1 for r in runs)

    table = runs_table(sweep_ws)
    mine = table[table["sweep_id"] == out["sweep_id"]]
    assert len(mine) == 4 and set(mine["mode"]) == {"full"}
    for r in runs:
        row = mine[mine["run_id"] == r["run_id"]].iloc[0]
        assert row["learning_rate"] == r["params"]["learning_rate"]
        assert row["batch_size"] == r["params"]["batch_size"]
        assert row["best_ndcg10"] == pytest.approx(r["best"]["ndcg@10"])
        assert row["validation_queries"] == 45
    best = best_run(mine)
    assert best["best_ndcg10"] == max(r["best"]["ndcg@10"] for r in runs)
    ids = [r["run_id"] for r in runs]
    diff = config_diff(run_configs(sweep_ws, ids))
    assert set(diff.index) == {"learning_rate", "batch_size"}
    cv = curves(sweep_ws, ids)
    assert set(cv["run_id"]) == set(ids)
    assert (cv[cv["kind"] == "eval"]["ndcg10"] > 0).all()

    # a second, measured estimate now uses these runs' throughput
    plan = sweeps.plan_sweep(sweep_ws, "cranfield-demo",
                             build_config({**TINY, "base_model": str(tiny_model)}),
                             {"epochs": [1, 2]})
    assert plan.throughput_source.startswith("run ")
    assert plan.seconds_each[1] > plan.seconds_each[0]


def test_sweep_cli_without_a_preset_starts_from_the_experiments_pages_base(
        sweep_ws, tmp_path, capsys, monkeypatch):
    """Not TrainConfig's bare defaults (512 tokens, every pair: hours per point on a CPU)."""
    seen = {}

    def plan(ws, dataset, base, grid, quick=False):
        seen["base"] = base
        return sweeps.SweepPlan([], [], "none", 0, 0, quick)

    monkeypatch.setattr(sweeps, "plan_sweep", plan)
    grid = tmp_path / "grid.yaml"
    grid.write_text("learning_rate: [2.0e-5, 5.0e-5]\n")
    assert main(["sweep", "--workspace", str(sweep_ws.root), "--dataset", "cranfield-demo",
                 "--grid", str(grid), "--dry-run"]) == 0
    assert "base preset: CPU quick" in capsys.readouterr().err
    base = seen["base"]
    assert (base.max_length, base.max_train_pairs, base.device) == (128, 1200, "cpu")


def test_cancelling_a_sweep_cancels_queued_runs_and_keeps_finished(sweep_ws, tiny_model):
    base = build_config({**TINY, "base_model": str(tiny_model)})
    sweep = sweeps.launch_sweep(sweep_ws, "cranfield-demo", base,
                                {"learning_rate": [1e-3, 5e-4, 2e-4]})
    first = sweep.run_ids[0]
    deadline = time.time() + 180
    while time.time() < deadline:  # let the queue finish the first run only
        jobs.tick(sweep_ws)
        if runfiles.read_status(jobs.run_dir_of(sweep_ws, first)).get("state") == "finished":
            break
        time.sleep(0.5)
    assert runfiles.read_status(jobs.run_dir_of(sweep_ws, first))["state"] == "finished"
    outcome = sweeps.cancel_sweep(sweep_ws, sweep.sweep_id, wait=True)
    assert outcome[first] == "finished"
    states = {r: runfiles.read_status(jobs.run_dir_of(sweep_ws, r))["state"]
              for r in sweep.run_ids}
    assert states[first] == "finished"
    assert all(states[r] in ("cancelled", "stopped") for r in sweep.run_ids[1:]), (outcome, states)
    assert "cancelled" in states.values()  # the last one never started
    table = runs_table(sweep_ws)
    kept = table[table["run_id"] == first].iloc[0]
    assert kept["status"] == "finished" and kept["best_ndcg10"] > 0
    assert (jobs.run_dir_of(sweep_ws, first) / "model" / "config.json").is_file()
    assert sweeps.sweep_done(sweep_ws, sweep.sweep_id)


def test_experiments_page_renders_with_runs(sweep_ws):
    import os
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    os.environ["RERANKER_STUDIO_HOME"] = str(sweep_ws.root)
    try:
        page = Path(__file__).resolve().parents[1] / "pages" / "experiments.py"
        at = AppTest.from_file(str(page), default_timeout=120).run()
        button = next(b for b in at.button if b.label == "Evaluate the best run against its base")
        button.click().run(timeout=300)
    finally:
        os.environ.pop("RERANKER_STUDIO_HOME")
    assert not at.exception, at.exception
    assert at.title[0].value == "Experiments"
    subheaders = [s.value for s in at.subheader]
    assert "Runs" in subheaders and "Best run" in subheaders and "Sweeps" in subheaders
    assert "Hyperparameters vs validation NDCG@10" in subheaders
    # one click evaluated the best checkpoint against its base with the Evaluate code
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "On the **validation** split (45 queries, 0 excluded" in text
    assert any("no test queries" in w.value for w in at.warning)
    assert at.success, "a verdict sentence is shown"


def test_quick_sweep_launched_from_the_page_finishes(workspace, tiny_model):
    import shutil
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    load_demo(workspace)
    page = Path(__file__).resolve().parents[1] / "pages" / "experiments.py"
    at = AppTest.from_file(str(page), default_timeout=180).run()
    assert not at.exception, at.exception
    inside = shutil.copytree(tiny_model, workspace.root / "imports" / "tiny-ce")  # app: in ws
    next(t for t in at.text_input if t.label == "Base model").set_value(str(inside))
    next(m for m in at.multiselect if m.label == "Learning rate").set_value([1e-4, 5e-5])
    next(m for m in at.multiselect if m.label == "Epochs").set_value([1])
    next(m for m in at.multiselect if m.label == "Max length").set_value([64, 128])
    at.run()
    assert not at.exception, at.exception
    plan = " ".join(m.value for m in at.markdown)
    assert "**4 runs**" in plan and "quick what-if" in plan
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert any("4 runs queued" in s.value for s in at.success)
    sweep_id = sweeps.list_sweeps(workspace)["sweep_id"].iloc[0]
    deadline = time.time() + 400
    while not sweeps.sweep_done(workspace, sweep_id) and time.time() < deadline:
        jobs.tick(workspace)  # what the page's fragment does every few seconds
        time.sleep(0.5)
    table = runs_table(workspace)
    assert len(table) == 4 and set(table["status"]) == {"finished"}
    assert set(table["mode"]) == {"quick what-if"}
    assert all(table["max_train_pairs"] == 800)
    assert sorted(table["max_length"]) == [64, 64, 128, 128]
