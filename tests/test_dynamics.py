"""Training dynamics ("dataset cartography"): the worker's record, confidence/variability, flags
from a run, merged with out-of-fold flags, the CLI and the Noise page's scatter."""

import base64
import json

import numpy as np
import pandas as pd
import pytest

from lib import dynamics, noise, noise_dynamics
from lib.testing import run_cli
from lib.training import jobs, runfiles

# ---- hand-computed ------------------------------------------------------------------------------
PAIRS = pd.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "doc_id": ["a", "b", "c", "d"],
                      "line": [1, 2, 3, 4], "label": [1, 0, 2, 0]})
# probability of relevance per validation (rows) and pair (columns)
PROBS = np.array([[0.2, 0.9, 0.90, 0.1],
                  [0.3, 0.8, 0.95, 0.9],
                  [0.4, 0.85, 1.00, 0.5]])


def write_run(run_dir, probs=PROBS, activation="Sigmoid"):
    run_dir.mkdir(parents=True, exist_ok=True)
    PAIRS.to_json(run_dir / dynamics.DYNAMICS_PAIRS, orient="records", lines=True)
    with open(run_dir / dynamics.DYNAMICS, "w") as f:
        for i, row in enumerate(probs, 1):
            f.write(json.dumps({"step": 10 * i, "epoch": i / 3, "activation": activation,
                                "scores": list(row)}) + "\n")


def test_confidence_and_variability_by_hand(tmp_path):
    write_run(tmp_path)
    dyn = dynamics.read_dynamics(tmp_path)
    assert dyn.steps == [10, 20, 30]
    c = dynamics.cartography(dyn.pairs, dyn.probs).set_index("doc_id")
    # a (label 1): the relevant side is p: 0.2, 0.3, 0.4 -> mean 0.3, std sqrt(0.02/3)
    assert c.loc["a", "confidence"] == pytest.approx(0.3)
    assert c.loc["a", "variability"] == pytest.approx(np.sqrt(0.02 / 3))
    # b (label 0): the given side is 1 - p: 0.1, 0.2, 0.15 -> mean 0.15, std sqrt(0.005/3)
    assert c.loc["b", "confidence"] == pytest.approx(0.15)
    assert c.loc["b", "variability"] == pytest.approx(np.sqrt(0.005 / 3))
    # c (grade 2 >= the relevance threshold 1): the relevant side, 0.95 +- sqrt(0.005/3)
    assert c.loc["c", "confidence"] == pytest.approx(0.95)
    assert c.loc["c", "correctness"] == 1.0 and c.loc["a", "correctness"] == 0.0
    # d (label 0): 0.9, 0.1, 0.5 -> mean 0.5, std sqrt(0.32/3): it swings (ambiguous)
    assert c.loc["d", "variability"] == pytest.approx(np.sqrt(0.32 / 3))
    assert (c["validations"] == 3).all()
    flags = dynamics.flag_dynamics(c.reset_index())
    flagged = flags[flags["strength"].notna()]
    # median variability = (0.0408 + 0.0816) / 2: only b is low-confidence AND steady;
    # a has low confidence but varies more than the median; d is not below 0.5
    assert list(flagged["doc_id"]) == ["b"]
    b = flagged.iloc[0]
    assert b["strength"] == pytest.approx(2 * 0.35 * (1 - 2 * np.sqrt(0.005 / 3)))
    assert "labelled 0 (not relevant)" in b["reason"] and "0.15" in b["reason"]
    assert "hard to learn" in b["reason"]


def test_logits_are_read_through_a_sigmoid_and_a_resumed_step_is_replaced(tmp_path):
    p = np.clip(PROBS, 1e-9, 1 - 1e-9)
    logits = np.log(p / (1 - p))
    write_run(tmp_path, logits, activation="Identity")
    with open(tmp_path / dynamics.DYNAMICS, "a") as f:  # a resume validated step 30 again
        f.write(json.dumps({"step": 30, "epoch": 1.0, "activation": "Sigmoid",
                            "scores": [0.4, 0.85, 1.0, 0.5]}) + "\n")
    dyn = dynamics.read_dynamics(tmp_path)
    assert dyn.steps == [10, 20, 30]
    np.testing.assert_allclose(dyn.probs, PROBS, atol=1e-6)
    with open(tmp_path / dynamics.DYNAMICS, "a") as f:
        f.write(json.dumps({"step": 40, "scores": [0.5]}) + "\n")
    with pytest.raises(ValueError, match=r"dynamics.jsonl line 5: 1 scores for 4 pairs"):
        dynamics.read_dynamics(tmp_path)
    with pytest.raises(FileNotFoundError, match="dynamics_max_pairs"):
        dynamics.read_dynamics(tmp_path / "nothing")


def test_merged_list_names_sources_and_adds_strengths():
    dyn = dynamics.flag_dynamics(dynamics.cartography(PAIRS, PROBS))
    oof = PAIRS.assign(fold=[0, 0, 1, 1], oof_score=[0.1, 2.0, 3.0, 0.0],
                       baseline_score=np.nan, rank_in_query=[2, 1, 1, 2],
                       strength=[1.5, 0.4, np.nan, np.nan],
                       reason=["oof says a", "oof says b", None, None])
    out = noise_dynamics.merge_flags(dyn, oof.iloc[:2])  # q2 was not in the out-of-fold job
    got = out.set_index("doc_id")
    assert got.loc["b", "source"] == "out-of-fold + training dynamics"
    assert got.loc["a", "source"] == "out-of-fold"
    b_dyn = dyn.set_index("doc_id").loc["b", "strength"]
    # strengths in units of each source's "strong" threshold, summed where both flag
    assert got.loc["b", "strength"] == pytest.approx(0.4 / noise.STRONG
                                                     + b_dyn / dynamics.STRONG)
    assert got.loc["a", "strength"] == pytest.approx(1.5)
    assert got.loc["b", "reason"].startswith("out-of-fold: oof says b; training dynamics: ")
    assert got.loc["c", "fold"] == -1 and np.isnan(got.loc["c", "strength"])
    assert got.loc["c", "oof_score"] == pytest.approx(0.95)  # the run's mean probability
    assert list(out["flag_rank"].dropna()) == [1, 2]
    assert list(out["doc_id"][:2]) == ["b", "a"]


def test_merging_a_neighbours_job_keeps_its_rows_and_names_it():
    """A neighbours-only job has no out-of-fold score: its rows are still its own, not
    dynamics-only rows, and its flags say 'neighbours'."""
    dyn = dynamics.flag_dynamics(dynamics.cartography(PAIRS, PROBS))
    nb = PAIRS.assign(fold=[0, 0, 1, 1], oof_score=np.nan, baseline_score=np.nan,
                      rank_in_query=[2, 1, 1, 2], strength=[1.5, 0.4, np.nan, np.nan],
                      reason=["like the relevant ones", "like them too", None, None],
                      source=["neighbours", "neighbours", None, None])
    got = noise_dynamics.merge_flags(dyn, nb).set_index("doc_id")
    assert got.loc["a", "source"] == "neighbours" and got.loc["a", "fold"] == 0
    assert got.loc["b", "source"] == "neighbours + training dynamics"
    assert got.loc["b", "reason"].startswith("neighbours: like them too; training dynamics: ")
    assert got.loc["a", "rank_in_query"] == 2  # the job's own order, not the run's


# ---- a real run of the tiny model records its dynamics ------------------------------------------
@pytest.fixture(scope="module")
def dyn_run(tmp_path_factory, tiny_model):
    from lib.bootstrap import load_demo
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(tmp_path_factory.mktemp("dyn") / "ws")
    load_demo(ws)
    sets = {"max_length": 48, "learning_rate": 1e-3, "max_train_pairs": 200, "device": "cpu",
            "eval_batch_size": 64, "cpu_threads": 1, "base_model": str(tiny_model),
            "epochs": 1, "batch_size": 8, "eval_steps": 10, "logging_steps": 5,
            "dynamics_max_pairs": 60}
    argv = ["train", "--workspace", str(ws.root), "--dataset", "cranfield-demo", "--json"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    rc, out = run_cli(*argv)
    assert rc == 0, out
    return ws, json.loads(out.strip().splitlines()[-1])


def test_a_run_records_each_validation_for_the_sampled_pairs(dyn_run):
    ws, res = dyn_run
    assert res["status"] == "finished"
    run_dir = jobs.run_dir_of(ws, res["run_id"])
    train = pd.read_json(run_dir / "data" / "train.jsonl", lines=True,
                         dtype={"query_id": str, "doc_id": str})
    sampled = pd.read_json(run_dir / dynamics.DYNAMICS_PAIRS, lines=True,
                           dtype={"query_id": str, "doc_id": str})
    assert 0 < len(sampled) <= 60
    # whole queries: every sampled query has all of its training pairs
    assert (sampled.groupby("query_id").size()
            == train[train["query_id"].isin(sampled["query_id"])].groupby("query_id").size()
            ).all()
    assert set(sampled.columns) == {"query_id", "doc_id", "line", "label"}
    evals = [r for r in runfiles.read_progress(run_dir) if r["kind"] == "eval"]
    steps_after_start = [e["step"] for e in evals if e["step"] > 0]
    assert len(steps_after_start) >= 2  # 25 steps: validated at 10, 20 and the end
    lines = [json.loads(x) for x in (run_dir / dynamics.DYNAMICS).read_text().splitlines()]
    assert [r["step"] for r in lines] == steps_after_start  # not the untrained step 0
    assert all(len(r["scores"]) == len(sampled) for r in lines)
    assert all(e.get("dynamics_seconds") is not None for e in evals if e["step"] > 0)
    start = next(r for r in runfiles.read_progress(run_dir) if r["kind"] == "start")
    assert start["dynamics_pairs"] == len(sampled)


def test_cli_noise_from_run_and_the_page_scatter(dyn_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from lib.workspace import ENV_VAR

    ws, res = dyn_run
    run_dir = jobs.run_dir_of(ws, res["run_id"])
    n = len(pd.read_json(run_dir / dynamics.DYNAMICS_PAIRS, lines=True))
    rc, out = run_cli("noise", "cranfield-demo", "--from-run", res["run_id"], "--json",
                      "--workspace", str(ws.root))
    assert rc == 0, out
    got = json.loads(out)
    assert got["pairs_scored"] == n and got["run_id"] == res["run_id"]
    job = got["job_id"]
    for f in got["flagged"]:
        assert f["source"] == "training dynamics" and f["confidence"] < 0.5
        assert f["reason"].startswith("training dynamics: labelled")
    strengths = [f["strength"] for f in got["flagged"]]
    assert strengths == sorted(strengths, reverse=True)
    listed = noise.list_jobs(ws).set_index("job_id")
    assert listed.loc[job, "status"] == "finished" and listed.loc[job, "flagged"] == len(strengths)
    assert noise.job_status(ws, job)["state"] == "finished"  # no worker, nothing to ingest
    # a run on another dataset, an unknown run, --merge without --from-run: refused
    rc, out = run_cli("noise", "cranfield-demo", "--from-run", "run-x", "--json",
                      "--workspace", str(ws.root))
    assert rc == 2 and "no run 'run-x'" in json.loads(out)["error"]
    rc, out = run_cli("noise", "cranfield-demo", "--merge", job, "--json",
                      "--workspace", str(ws.root))
    assert rc == 2 and "--merge goes with --from-run" in json.loads(out)["error"]
    root = noise.__file__.rsplit("/lib/", 1)[0]
    monkeypatch.setenv(ENV_VAR, str(ws.root))
    at = AppTest.from_file(f"{root}/pages/noise.py", default_timeout=90)
    at.session_state["noise_job"] = job
    at.run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and charts[0].key == "noise_scatter"
    fig = json.loads(charts[0].proto.spec)
    names = {t.get("legendgroup") or t.get("name") for t in fig["data"]}
    assert any(str(x).startswith("flagged") for x in names) or not strengths

    def points(arr) -> int:  # plotly ships numeric arrays base64-typed
        if isinstance(arr, dict):
            return len(np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"]))
        return len(arr)

    assert sum(points(t["x"]) for t in fig["data"]) == n  # every recorded pair is a point


def test_a_retrain_from_dynamics_flags_copies_the_run_they_came_from(workspace):
    """Not the newest finished run on the dataset: the cleaned version is compared with the run
    whose dynamics flagged the pairs."""
    from lib import relabel
    from lib.bootstrap import load_demo
    from lib.training import runfiles

    load_demo(workspace)
    d = noise.job_dir(workspace, "noise-dyn")
    d.mkdir(parents=True)
    runfiles.write_json_atomic(d / noise.OPTIONS, {"source": "dynamics", "run_id": "run-older"})
    assert relabel.source_run(workspace, "cranfield-demo", "noise-dyn") == "run-older"
    # an out-of-fold job (or none) falls back to the newest finished run: none here
    runfiles.write_json_atomic(d / noise.OPTIONS, {"folds": 2})
    assert relabel.source_run(workspace, "cranfield-demo", "noise-dyn") is None
    assert relabel.source_run(workspace, "cranfield-demo") is None
