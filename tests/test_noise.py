"""Label-noise finder: flags from out-of-fold scores, the detached job, relabelled versions."""

import json

import numpy as np
import pandas as pd
import pytest

from lib import db, noise, relabel, split
from lib.demo_data import DEMO_DATASET_PATH
from lib.ingest import ingest_file
from lib.testing import run_cli
from lib.training import runfiles


def demo_subset(workspace, tmp_path, n_queries: int = 12, name: str = "demo12",
                val_queries: int = 3):
    """The first n demo queries, the last `val_queries` of them in validation (a fixed split)."""
    rows = pd.read_json(DEMO_DATASET_PATH, lines=True, dtype={"query_id": str, "doc_id": str})
    qids = sorted(rows["query_id"].unique())[:n_queries]
    sub = rows[rows["query_id"].isin(qids)].copy()
    val = set(qids[-val_queries:]) if val_queries else set()
    sub["split"] = np.where(sub["query_id"].isin(val), "validation", "train")
    path = tmp_path / f"{name}.jsonl"
    sub.to_json(path, orient="records", lines=True, force_ascii=False)
    ds = ingest_file(workspace, path, name)
    split.make_split(workspace, name, val_frac=0.0)
    return ds, sub


# ---- flags (hand-computed) ----------------------------------------------------------------------
def test_flags_a_negative_above_the_positives_and_a_positive_at_the_bottom():
    # q1: positives score 3 and 2, negatives 0, 0.5 and a planted 2.8 (above both positives).
    # q2: positives 5, 4 and a planted 0 (below every negative), negatives 1, 1.5.
    frame = pd.DataFrame({
        "query_id": ["q1"] * 5 + ["q2"] * 5,
        "doc_id": ["p1", "p2", "n1", "n2", "bad-neg", "p1", "p2", "bad-pos", "n1", "n2"],
        "label": [1, 1, 0, 0, 0, 2, 2, 2, 0, 0],
        "oof_score": [3.0, 2.0, 0.0, 0.5, 2.8, 5.0, 4.0, 0.0, 1.0, 1.5],
    })
    out = noise.flag_pairs(frame)
    flagged = out[out["strength"].notna()]
    assert set(zip(flagged["query_id"], flagged["doc_id"], strict=True)) == {("q1", "bad-neg"),
                                                                ("q2", "bad-pos")}
    # q1 scores z-scored: mean 1.66, sd 1.2208; the planted negative 2.8 -> z 0.9338, the
    # positives' mean z 0.6881: gap 0.2457; the other pairs are ordered right 4 of 4 times.
    row = out.set_index(["query_id", "doc_id"]).loc[("q1", "bad-neg")]
    s = np.array([3.0, 2.0, 0.0, 0.5, 2.8])
    z = (s - s.mean()) / s.std()
    assert row["strength"] == pytest.approx(z[4] - z[:2].mean(), abs=1e-6)
    assert row["agreement"] == pytest.approx(1.0)
    assert row["rank_in_query"] == 2
    assert "labelled 0 (not relevant)" in row["reason"] and "ranks it 2 of 5" in row["reason"]
    bad = out.set_index(["query_id", "doc_id"]).loc[("q2", "bad-pos")]
    assert bad["rank_in_query"] == 5 and "labelled 2 (relevant)" in bad["reason"]
    assert list(out["flag_rank"].head(2)) == [1, 2]  # strongest first, ranks 1..n
    assert out["flag_rank"].iloc[2:].isna().all()


def test_a_badly_ordered_query_weighs_less_than_a_well_ordered_one():
    # the same gap, but in q2 the model also mis-orders the other pairs
    frame = pd.DataFrame({
        "query_id": ["q1"] * 4 + ["q2"] * 4,
        "doc_id": ["p", "n1", "n2", "x"] * 2,
        "label": [1, 0, 0, 0] * 2,
        "oof_score": [2.0, 0.0, 0.1, 3.0, 2.0, 2.5, 0.1, 3.0],
    })
    out = noise.flag_pairs(frame).set_index(["query_id", "doc_id"])
    assert out.loc[("q1", "x"), "agreement"] == 1.0 and out.loc[("q2", "x"), "agreement"] == 0.5
    assert out.loc[("q1", "x"), "strength"] > out.loc[("q2", "x"), "strength"]


def test_folds_are_grouped_by_query_balanced_and_seeded():
    qids = [f"q{i}" for i in range(11)] * 3
    a = noise.assign_folds(qids, 3, seed=5)
    assert set(a) == {f"q{i}" for i in range(11)} and set(a.values()) == {0, 1, 2}
    sizes = pd.Series(a).value_counts()
    assert sizes.max() - sizes.min() <= 1
    assert a == noise.assign_folds(list(reversed(qids)), 3, seed=5)


def test_plant_flips_is_seeded_and_flips_both_ways():
    frame = pd.DataFrame({"query_id": [f"q{i // 10}" for i in range(100)],
                          "doc_id": [f"d{i}" for i in range(100)],
                          "label": [1 if i % 3 == 0 else 0 for i in range(100)]})
    noisy, truth = noise.plant_flips(frame, 0.1, seed=3)
    assert len(truth) == 10 and truth == noise.plant_flips(frame, 0.1, seed=3)[1]
    changed = noisy["label"] != frame["label"]
    assert changed.sum() == 10
    flipped = noisy[changed]
    assert set(zip(flipped["query_id"], flipped["doc_id"], strict=True)) == truth
    assert (noisy.loc[changed & (frame["label"] == 0), "label"] == 2).all()
    assert (noisy.loc[changed & (frame["label"] > 0), "label"] == 0).all()


# ---- relabel: a new version, the old one intact, a change log -----------------------------------
def test_relabel_makes_a_new_version_and_logs_every_change(workspace, tmp_path):
    ds, sub = demo_subset(workspace, tmp_path)
    before = split.load_split_pairs(workspace, "demo12").sort_values("line").reset_index(
        drop=True)
    train = before[before["split"] == "train"]
    pos = train[train["label"] > 0].iloc[0]
    neg = train[train["label"] == 0].iloc[0]
    gone = train[train["label"] == 0].iloc[1]
    odd = train[train["label"] > 0].iloc[1]
    same = train[train["label"] > 0].iloc[2]
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text("\n".join(json.dumps(d) for d in [
        {"query_id": pos.query_id, "doc_id": pos.doc_id, "decision": "relabel", "label": 0},
        {"query_id": neg.query_id, "doc_id": neg.doc_id, "decision": "relabel", "label": 3},
        {"query_id": gone.query_id, "doc_id": gone.doc_id, "decision": "drop"},
        {"query_id": odd.query_id, "doc_id": odd.doc_id, "decision": "ambiguous"},
        {"query_id": same.query_id, "doc_id": same.doc_id, "decision": "relabel",
         "label": int(same.label)},  # no change: kept
        {"query_id": train.iloc[5].query_id, "doc_id": train.iloc[5].doc_id,
         "decision": "keep"},
    ]) + "\n")
    rc, out = run_cli("relabel", "demo12", "--decisions", str(decisions), "--by", "ana",
                      "--json", "--workspace", str(workspace.root))
    assert rc == 0, out
    rep = json.loads(out)
    assert rep["relabelled"] == 2 and rep["dropped"] == 1 and rep["ambiguous"] == 1
    assert rep["changed"] == 3 and rep["kept"] == 2 and rep["parent_id"] == ds.dataset_id
    # the original is untouched
    again = split.load_split_pairs(workspace, "demo12").sort_values("line").reset_index(
        drop=True)
    assert again.equals(before)
    # the new version: same split, the changes applied
    new = split.load_split_pairs(workspace, rep["name"]).set_index(["query_id", "doc_id"])
    assert len(new) == len(before) - 1
    assert new.loc[(pos.query_id, pos.doc_id), "label"] == 0
    assert new.loc[(neg.query_id, neg.doc_id), "label"] == 3
    assert (gone.query_id, gone.doc_id) not in new.index
    assert new.loc[(odd.query_id, odd.doc_id), "label"] == odd.label
    assert (new.groupby(level=0)["split"].first().to_dict()
            == before.groupby("query_id")["split"].first().to_dict())
    log = relabel.change_log(workspace, rep["name"])
    got = {(r.doc_id, r.action, r.old_label, None if pd.isna(r.new_label) else r.new_label)
           for r in log.itertuples()}
    assert got == {(pos.doc_id, "relabel", pos.label, 0), (neg.doc_id, "relabel", 0, 3),
                   (gone.doc_id, "drop", 0, None), (odd.doc_id, "ambiguous", odd.label,
                                                    odd.label)}
    assert set(log["changed_by"]) == {"ana"} and log["changed_at"].notna().all()
    with db.connect(workspace) as con:
        kind, parent = con.execute("SELECT kind, parent_id FROM dataset_versions WHERE "
                                   "dataset_id = ?", [rep["dataset_id"]]).fetchone()
    assert (kind, parent) == ("relabelled", ds.dataset_id)
    # the same decisions twice: refused, no second copy
    rc, out = run_cli("relabel", "demo12", "--decisions", str(decisions), "--json",
                      "--workspace", str(workspace.root))
    assert rc == 2 and "already applied" in json.loads(out)["error"]
    # deleting the version takes its change log along, the original stays
    from lib.datasets import delete_dataset

    delete_dataset(workspace, rep["name"])
    with db.connect(workspace) as con:
        assert con.execute("SELECT count(*) FROM label_changes").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM dataset_versions").fetchone()[0] == 0
    assert split.load_split_pairs(workspace, "demo12").sort_values("line").reset_index(
        drop=True).equals(before)


def test_relabel_refuses_bad_decisions(workspace, tmp_path):
    demo_subset(workspace, tmp_path)
    with pytest.raises(ValueError, match="relabel needs a whole label 0-4"):
        relabel.relabel(workspace, "demo12", [{"query_id": "cran-q001", "doc_id": "x",
                                               "decision": "relabel", "label": 7}])
    with pytest.raises(ValueError, match="not one of keep, relabel, drop, ambiguous"):
        relabel.relabel(workspace, "demo12", [{"query_id": "a", "doc_id": "b",
                                               "decision": "delete"}])
    with pytest.raises(ValueError, match="1 decided pairs are not in demo12"):
        relabel.relabel(workspace, "demo12", [{"query_id": "cran-q001", "doc_id": "nope",
                                               "decision": "drop"}])


# ---- the job: a detached worker, its files ingested ---------------------------------------------
@pytest.mark.slow
def test_cli_noise_runs_the_worker_and_prints_the_flags(workspace, tmp_path, tiny_model):
    demo_subset(workspace, tmp_path)
    rc, out = run_cli("noise", "demo12", "--folds", "3", "--quick", "--model", str(tiny_model),
                      "--max-length", "48", "--evidence", "both", "--json", "--workspace",
                      str(workspace.root))
    assert rc == 0, out
    res = json.loads(out)
    assert set(res) == {"job_id", "flagged", "pairs_scored"}
    train = split.load_split_pairs(workspace, "demo12").query("split == 'train'")
    assert res["pairs_scored"] == len(train)  # every training pair, none of validation
    assert res["flagged"], "some pairs are always out of order under an untrained model"
    for f in res["flagged"]:  # the keys, plus who flagged it and the neighbour score
        assert set(f) == {"query_id", "doc_id", "label", "oof_score", "rank_in_query",
                          "reason", "strength", "source", "neighbour_score"}
        assert f["oof_score"] is not None and f["neighbour_score"] is not None  # evidence: both
        assert f["source"] in ("out-of-fold", "neighbours", "neighbours + out-of-fold")
        if f["source"] == "neighbours + out-of-fold":
            assert "neighbours: " in f["reason"] and "out-of-fold: " in f["reason"]
    strengths = [f["strength"] for f in res["flagged"]]
    assert strengths == sorted(strengths, reverse=True) and min(strengths) > 0
    job_dir = noise.job_dir(workspace, res["job_id"])
    status = runfiles.read_status(job_dir)
    assert status["state"] == "finished" and status["folds"] == 3
    # out of fold: each query's pairs were scored by the model of its own fold only
    scores = pd.read_json(job_dir / noise.SCORES, lines=True, dtype={"query_id": str})
    assert scores.groupby("query_id")["fold"].nunique().max() == 1
    assert sorted(scores["fold"].unique()) == [0, 1, 2]
    jobs_table = noise.list_jobs(workspace)
    assert jobs_table.loc[0, "status"] == "finished"
    assert jobs_table.loc[0, "flagged"] == len(res["flagged"])
    # the context of a flag: all of its query's pairs, in the model's order
    q = res["flagged"][0]["query_id"]
    ctx = noise.query_pairs(workspace, res["job_id"], q)
    assert list(ctx["rank_in_query"]) == list(range(1, len(ctx) + 1))
    assert len(ctx) == (train["query_id"] == q).sum()


def test_distilled_fold_models_never_show_the_teacher_a_held_out_query(workspace, tmp_path,
                                                                        tiny_model):
    """With a teacher, each fold model distils it on its own training folds' pairs only (the
    Distil recipe inside out-of-fold scoring), then trains on their labels."""
    from lib.noise_worker import oof_scores
    from lib.training.distill import DISTILL_DIR, SCORES_FILE

    with pytest.raises(ValueError, match="distill_epochs"):
        noise.NoiseOptions(distill_teacher="biencoder", distill_epochs=0).validated()
    demo_subset(workspace, tmp_path, n_queries=6, val_queries=0)
    pairs = split.load_split_pairs(workspace, "demo12")
    folds = noise.assign_folds(pairs["query_id"], 2, 13)
    pairs = pairs.assign(fold=pairs["query_id"].astype(str).map(folds))
    opts = {"folds": 2, "base_model": str(tiny_model), "learning_rate": 1e-3, "batch_size": 16,
            "epochs": 1, "max_length": 48, "seed": 13, "device": "cpu",
            "distill_teacher": str(tiny_model), "distill_epochs": 1, "distill_docs_per_query": 4}
    scored = oof_scores(pairs, opts, work_dir=tmp_path / "job")
    assert len(scored) == len(pairs) and scored["oof_score"].notna().all()
    for fold in (0, 1):
        taught = pd.read_json(tmp_path / "job" / f"fold-{fold}" / DISTILL_DIR / SCORES_FILE,
                              lines=True, dtype={"query_id": str, "doc_id": str})
        held = set(pairs.loc[pairs["fold"] == fold, "query_id"])
        own = set(pairs.loc[pairs["fold"] != fold, "query_id"])
        assert set(taught["query_id"]) == own and not set(taught["query_id"]) & held
        # each training query met its own candidates and documents sampled from the other
        # training folds, never a held-out query's document
        held_docs = set(pairs.loc[pairs["fold"] == fold, "doc_id"]) - set(
            pairs.loc[pairs["fold"] != fold, "doc_id"])
        assert len(taught) > (pairs["fold"] != fold).sum()
        assert not set(taught["doc_id"]) & held_docs
        lines = (tmp_path / "job" / f"fold-{fold}" / "progress.jsonl").read_text().splitlines()
        end = [json.loads(x) for x in lines if '"distill_end"' in x][0]
        assert end["pairs"] == len(taught) and end["teacher"] == str(tiny_model)
        # each training query: its own candidates + 4 sampled documents
        own_pairs = (pairs["fold"] != fold).sum()
        assert len(taught) == own_pairs + 4 * len(own) and end["epochs"] == 1


@pytest.mark.slow
def test_stop_ends_the_job_and_it_says_stopped(workspace, tmp_path, tiny_model):
    from lib.testing import wait_until

    demo_subset(workspace, tmp_path)
    job = noise.create_job(workspace, "demo12", noise.NoiseOptions(
        folds=2, base_model=str(tiny_model), max_length=48, epochs=50, cpu_threads=1,
        evidence="models"))
    wait_until(lambda: noise.job_status(workspace, job).get("phase") == "training", 120)
    assert noise.request_stop(workspace, job) == "stopping"
    status = noise.wait_job(workspace, job, timeout_s=90)
    assert status["state"] == "stopped"
    assert noise.list_jobs(workspace).loc[0, "status"] == "stopped"
    assert not (noise.job_dir(workspace, job) / noise.SCORES).exists()


def test_page_starts_a_job_whose_fold_models_distil_the_chosen_teacher(workspace, tmp_path,
                                                                       monkeypatch):
    from streamlit.testing.v1 import AppTest

    demo_subset(workspace, tmp_path)
    monkeypatch.setattr(noise, "launch_job", lambda ws, job_id: {})  # options only: no worker
    root = noise.__file__.rsplit("/lib/", 1)[0]
    at = AppTest.from_file(f"{root}/pages/noise.py", default_timeout=60).run()
    assert at.selectbox(key="noise_teacher").value == "none"
    assert at.selectbox(key="noise_evidence").value == "neighbours"  # the measured default
    at.selectbox(key="noise_teacher").set_value("biencoder").run()
    at.selectbox(key="noise_evidence").set_value("both").run()
    at.button(key="noise_go").click().run()
    assert not at.exception and not at.error
    job = noise.list_jobs(workspace).loc[0, "job_id"]
    opts = json.loads((noise.job_dir(workspace, job) / noise.OPTIONS).read_text())
    assert opts["distill_teacher"] == "biencoder" and opts["evidence"] == "both"


# ---- the page -----------------------------------------------------------------------------------
def finished_job(workspace, tmp_path) -> tuple[str, pd.DataFrame]:
    """A job whose worker 'ran' (scores written by hand): a planted negative on top of q1."""
    demo_subset(workspace, tmp_path)
    job = noise.create_job(workspace, "demo12", noise.NoiseOptions(folds=2), launch=False)
    d = noise.job_dir(workspace, job)
    pairs = pd.read_json(d / noise.PAIRS, lines=True, dtype={"query_id": str, "doc_id": str})
    # scores that agree with the labels, except one negative of the first query put on top
    scores = pairs["label"].astype(float) + 0.01 * np.arange(len(pairs)) % 0.5
    first_q = pairs["query_id"].iloc[0]
    planted = pairs[(pairs["query_id"] == first_q) & (pairs["label"] == 0)].index[0]
    scores[planted] = 10.0
    out = pairs[["query_id", "doc_id", "line", "label", "fold"]].assign(oof_score=scores)
    out.to_json(d / noise.SCORES, orient="records", lines=True)
    runfiles.update_status(d, state=runfiles.FINISHED, pairs_scored=len(out))
    (d / runfiles.PID).unlink(missing_ok=True)
    noise.job_status(workspace, job)  # ingests
    return job, pairs.loc[planted]


def test_page_reviews_a_flag_relabels_it_and_retrains(workspace, tmp_path, tiny_model):
    from streamlit.testing.v1 import AppTest

    from lib.training import jobs
    from lib.training.config import build_config

    job, planted = finished_job(workspace, tmp_path)
    key = f"{planted.query_id} | {planted.doc_id}"
    # a finished run on the original, whose config the retrain copies
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "epochs": 1, "learning_rate": 1e-3, "cpu_threads": 1})
    source = jobs.create_run(workspace, "demo12", cfg, enqueue=False).run_id
    with db.connect(workspace) as con:
        con.execute("UPDATE runs SET status = 'finished' WHERE run_id = ?", [source])
    root = noise.__file__.rsplit("/lib/", 1)[0]
    at = AppTest.from_file(f"{root}/pages/noise.py", default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Label noise"
    pick = at.multiselect(key="noise_pick")
    assert pick.options[0] == key  # the planted pair is the strongest flag
    assert any(m.label == "Flagged" for m in at.metric)
    pick.set_value([key]).run()
    at.number_input(key="noise_new_label").set_value(3).run()
    at.button(key="noise_relabel").click().run()
    assert not at.exception
    dec = relabel.job_decisions(workspace, job)
    assert dec[["query_id", "doc_id", "decision", "new_label"]].values.tolist() == [
        [planted.query_id, planted.doc_id, "relabel", 3]]
    at.button(key="noise_apply").click().run()
    assert not at.exception
    assert any("1 relabelled" in s.value for s in at.success)
    log = relabel.change_log(workspace, "demo12-relabelled")
    assert log[["doc_id", "action", "old_label", "new_label"]].values.tolist() == [
        [planted.doc_id, "relabel", 0, 3]]
    at.button(key="noise_retrain").click().run()
    assert not at.exception
    runs = jobs.list_runs(workspace)
    new = runs[runs["dataset"] == "demo12-relabelled"]
    assert len(new) == 1
    new_id = new["run_id"].iloc[0]
    assert json.loads((jobs.run_dir_of(workspace, new_id) / "config.json")
                      .read_text()) == cfg.to_json()
    jobs.stop_run(workspace, new_id, timeout_s=10)
    # the Experiments page pairs the retrain with the run it repeats
    from lib.experiments.table import retrain_pairs

    paired = retrain_pairs(workspace)
    assert paired[["retrain_run", "original_run", "dataset", "original_dataset"]].values.tolist(
    ) == [[new_id, source, "demo12-relabelled", "demo12"]]
    assert paired["validation_labels_changed"].tolist() == [0]  # a training pair was relabelled
    exp = AppTest.from_file(f"{root}/pages/experiments.py", default_timeout=180).run()
    assert not exp.exception
    assert "Cleaned labels vs the original" in [h.value for h in exp.subheader]


def test_cli_relabel_retrain_queues_a_linked_run(workspace, tmp_path, tiny_model):
    from lib.experiments.table import retrain_pairs
    from lib.training import jobs
    from lib.training.config import build_config

    demo_subset(workspace, tmp_path)
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "epochs": 1, "learning_rate": 1e-3, "cpu_threads": 1})
    source = jobs.create_run(workspace, "demo12", cfg, enqueue=False).run_id
    pairs = split.load_split_pairs(workspace, "demo12")
    val = pairs[(pairs["split"] == "validation") & (pairs["label"] == 0)].iloc[0]
    decisions = tmp_path / "decisions.jsonl"  # a validation label changes: flagged in the pairing
    decisions.write_text(json.dumps({"query_id": val.query_id, "doc_id": val.doc_id,
                                     "decision": "relabel", "label": 2}) + "\n")
    rc, out = run_cli("relabel", "demo12", "--decisions", str(decisions), "--retrain", source,
                      "--json", "--workspace", str(workspace.root))
    assert rc == 0, out
    rep = json.loads(out)
    try:
        assert relabel.retrain_of(jobs.run_dir_of(workspace, rep["run_id"])) == source
        paired = retrain_pairs(workspace)
        assert paired[["retrain_run", "original_run", "validation_labels_changed"]].values \
            .tolist() == [[rep["run_id"], source, 1]]
    finally:
        jobs.stop_run(workspace, rep["run_id"], timeout_s=10)
    other = pairs[(pairs["split"] == "train") & (pairs["label"] == 0)].iloc[0]
    decisions.write_text(json.dumps({"query_id": other.query_id, "doc_id": other.doc_id,
                                     "decision": "drop"}) + "\n")
    rc, out = run_cli("relabel", "demo12", "--decisions", str(decisions), "--retrain", "run-x",
                      "--name", "again", "--json", "--workspace", str(workspace.root))
    assert rc == 2 and "no run 'run-x'" in json.loads(out)["error"]
    with db.connect(workspace) as con:  # refused before any version was made
        assert con.execute("SELECT count(*) FROM dataset_versions").fetchone()[0] == 1


# The finder against the zero-shot baseline on planted flips in the demo data (the bundled MiniLM,
# ~20 min on a shared 2-core box, a one-pair margin) is a quality claim: bench/noise.py measures
# it with its baseline in the same run (bench/results/noise.log), not this suite.


def test_retrain_pairs_uses_the_table_it_is_given(workspace, tmp_path, tiny_model,
                                                  monkeypatch):
    """The Experiments page passes the runs table it built: no second query of the runs."""
    from lib.experiments import table as exp_table
    from lib.training import jobs
    from lib.training.config import build_config

    demo_subset(workspace, tmp_path)
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "epochs": 1, "cpu_threads": 1})
    source = jobs.create_run(workspace, "demo12", cfg, enqueue=False).run_id
    pair = split.load_split_pairs(workspace, "demo12", "train").iloc[0]
    rep = relabel.relabel(workspace, "demo12", [{"query_id": pair.query_id,
                                                 "doc_id": pair.doc_id, "decision": "drop"}])
    new = jobs.create_run(workspace, rep.name, cfg, enqueue=False)
    (new.run_dir / relabel.LINEAGE_FILE).write_text(json.dumps({"retrain_of": source}))
    built = exp_table.runs_table(workspace)
    expected = exp_table.retrain_pairs(workspace)
    assert expected[["retrain_run", "original_run"]].values.tolist() == [[new.run_id, source]]

    def no_query(_ws):
        raise AssertionError("runs_table queried again")

    monkeypatch.setattr(exp_table, "runs_table", no_query)
    pd.testing.assert_frame_equal(exp_table.retrain_pairs(workspace, built), expected)


@pytest.mark.slow
def test_cli_relabel_retrain_runs_the_source_config_on_the_new_version(workspace, tmp_path,
                                                                       tiny_model):
    """`relabel --retrain RUN`: the version is made, then a run with RUN's config is launched
    on it (not only queued) and trains on the cleaned labels to the end."""
    from lib.training import jobs
    from lib.training.config import build_config

    ds, _ = demo_subset(workspace, tmp_path)
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "epochs": 1, "learning_rate": 1e-3, "cpu_threads": 1, "batch_size": 16,
                        "eval_steps": 5, "logging_steps": 1, "eval_batch_size": 64})
    source = jobs.create_run(workspace, "demo12", cfg, enqueue=False).run_id
    train = split.load_split_pairs(workspace, "demo12", "train")
    neg = train[train["label"] == 0].iloc[0]
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({"query_id": neg.query_id, "doc_id": neg.doc_id,
                                     "decision": "relabel", "label": 2}) + "\n")
    rc, out = run_cli("relabel", "demo12", "--decisions", str(decisions), "--retrain", source,
                      "--name", "demo12-clean", "--json", "--workspace", str(workspace.root))
    assert rc == 0, out
    rep = json.loads(out)
    assert rep["name"] == "demo12-clean" and rep["relabelled"] == 1 and rep["run_id"]
    with db.connect(workspace) as con:
        assert con.execute("SELECT kind, parent_id FROM dataset_versions WHERE dataset_id = ?",
                           [rep["dataset_id"]]).fetchone() == ("relabelled", ds.dataset_id)
    run_id = rep["run_id"]
    runs = jobs.list_runs(workspace).set_index("run_id")
    assert runs.loc[run_id, "dataset"] == "demo12-clean"
    run_dir = jobs.run_dir_of(workspace, run_id)
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_json()
    assert runs.loc[run_id, "status"] != runfiles.QUEUED  # launched by the command itself
    exported = pd.read_json(run_dir / "data" / "train.jsonl", lines=True,
                            dtype={"query_id": str, "doc_id": str}).set_index(
                                ["query_id", "doc_id"])
    assert exported.loc[(neg.query_id, neg.doc_id), "label"] == 2  # the cleaned label
    status = jobs.wait_for(workspace, run_id, timeout_s=300)
    assert status["state"] == runfiles.FINISHED, status.get("error")
    assert (run_dir / runfiles.MODEL).is_dir()
