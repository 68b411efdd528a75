"""Hard-negative mining: never a labelled pair, never a validation query, the parent unchanged."""

import json

import numpy as np
import pytest

from lib import corpora, datasets, db, mining, split
from lib.cli import main
from lib.ingest import ingest_file

TOPICS = ["boundary layer", "heat transfer", "shell buckling", "shock wave", "wing flutter",
          "jet noise", "rotor blade", "supersonic inlet", "plate vibration", "nozzle flow"]


def build(workspace, tmp_path):
    """10 queries with one positive each (+ one labelled negative for q0), a 300-doc corpus.

    The corpus holds every labelled document, a copy of q0's labelled negative under another
    doc_id (same text), and a planted false negative for q1: a doc answering it word for word.
    """
    rows, docs = [], []
    for i, topic in enumerate(TOPICS):
        pos = f"measurements of {topic} in experiment {i} show the {topic} effect clearly"
        rows.append({"query_id": f"q{i}", "query": f"{topic} effect", "doc_id": f"p{i}",
                     "document": pos, "label": 1})
        docs.append({"doc_id": f"p{i}", "text": pos})
    labelled_neg = "boundary layer effect unrelated engine test report"
    rows.append({"query_id": "q0", "query": "boundary layer effect", "doc_id": "n0",
                 "document": labelled_neg, "label": 0})
    docs.append({"doc_id": "n0", "text": labelled_neg})
    docs.append({"doc_id": "copy-of-n0", "text": labelled_neg})
    docs.append({"doc_id": "planted", "text": "heat transfer effect heat transfer effect"})
    rng = np.random.default_rng(0)
    words = " ".join(TOPICS).split() + ["effect", "test", "flow", "model", "data", "study"]
    for j in range(300 - len(docs)):
        docs.append({"doc_id": f"x{j}", "text": " ".join(rng.choice(words, size=12))})
    data = tmp_path / "pos.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = ingest_file(workspace, data, "pos")
    # fixed split: q8, q9 validation; the rest train
    with db.connect(workspace) as con:
        con.execute("UPDATE pairs SET split_hint = CASE WHEN query_id IN ('q8', 'q9') "
                    "THEN 'validation' ELSE 'train' END WHERE dataset_id = ?", [ds.dataset_id])
    split.make_split(workspace, "pos", val_frac=0.0)
    cpath = tmp_path / "corpus.jsonl"
    cpath.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    corpora.add_corpus(workspace, cpath, "aero")
    return ds


def snapshot(workspace, name):
    return (split.load_split_pairs(workspace, name).sort_values(["query_id", "doc_id"])
            .reset_index(drop=True))


def test_never_a_labelled_pair_nor_a_validation_query(workspace, tmp_path):
    build(workspace, tmp_path)
    before = snapshot(workspace, "pos")
    r = mining.mine(workspace, "pos", mining.MineOptions(
        corpus="aero", negatives=5, range_max=300, margin=None))
    assert r.queries == 8 and r.mined == 40 and r.queries_short == 0
    assert r.skipped_labelled >= 8 + 2  # every positive, n0 and its copy under another id
    new = snapshot(workspace, r.name)
    mined = new[~new.set_index(["query_id", "doc_id"]).index.isin(
        before.set_index(["query_id", "doc_id"]).index)]
    assert len(mined) == 40 and (mined["label"] == 0).all()
    assert set(mined["query_id"]) <= {f"q{i}" for i in range(8)}  # train queries only
    labelled = set(zip(before["query_id"], before["doc_id"], strict=True))
    labelled_text = {(q, mining.text_hash(d)) for q, d in zip(before["query_id"],
                                                              before["document"], strict=True)}
    for q, d, text in zip(mined["query_id"], mined["doc_id"], mined["document"], strict=True):
        assert (q, d) not in labelled and (q, mining.text_hash(text)) not in labelled_text
    assert "copy-of-n0" not in set(mined[mined["query_id"] == "q0"]["doc_id"])
    # the parent is unchanged, the version keeps its query-level split
    after = snapshot(workspace, "pos")
    assert after.equals(before)
    splits_new = new.groupby("query_id")["split"].first()
    assert splits_new.equals(before.groupby("query_id")["split"].first())
    # provenance of every mined row
    with db.connect(workspace) as con:
        prov = con.execute("SELECT retriever, rank, score, positive_score, sampled, decision "
                           "FROM mined_pairs WHERE dataset_id = ?", [r.dataset_id]).df()
    assert len(prov) == 40 and set(prov["retriever"]) == {"bm25"}
    assert prov["rank"].between(1, 300).all() and prov["score"].notna().all()
    assert set(prov["decision"]) == {"pending"}


def test_guard_drops_a_planted_false_negative(workspace, tmp_path):
    build(workspace, tmp_path)
    opts = mining.MineOptions(corpus="aero", negatives=3, range_max=20, margin=None)
    plain = mining.mine(workspace, "pos", opts)
    assert "planted" in set(snapshot(workspace, plain.name).query("query_id == 'q1'")["doc_id"])

    def guard(queries, docs):  # share of the query's words in the document
        return np.array([len(set(q.split()) & set(d.split())) / len(set(q.split()))
                         for q, d in zip(queries, docs, strict=True)])

    guarded = mining.mine(workspace, "pos", mining.MineOptions(
        corpus="aero", negatives=3, range_max=20, margin=None, guard="fake", max_score=0.99),
        guard_fn=guard)
    got = snapshot(workspace, guarded.name).query("query_id == 'q1'")
    assert "planted" not in set(got["doc_id"])
    assert guarded.dropped_by_guard >= 1 and len(got) == 1 + 3
    # ...and keeps the true negatives: exactly the best-ranked 3 of the window it scores low
    everything = mining.mine(workspace, "pos", mining.MineOptions(
        corpus="aero", negatives=20, range_max=20, margin=None))
    with db.connect(workspace) as con:
        window = con.execute("SELECT m.doc_id, p.document FROM mined_pairs m JOIN pairs p ON "
                             "p.dataset_id = m.dataset_id AND p.line = m.line WHERE "
                             "m.dataset_id = ? AND m.query_id = 'q1' ORDER BY m.rank",
                             [everything.dataset_id]).fetchall()
    low = [d for d, text in window if guard(["heat transfer effect"], [text])[0] < 0.99]
    assert "planted" not in low and len(low) >= 3
    assert set(got.query("label == 0")["doc_id"]) == set(low[:3])
    with db.connect(workspace) as con:
        g = con.execute("SELECT max(guard_score) FROM mined_pairs WHERE dataset_id = ?",
                        [guarded.dataset_id]).fetchone()[0]
    assert g < 0.99


def test_margin_window_random_share_and_repeat(workspace, tmp_path):
    build(workspace, tmp_path)
    r = mining.mine(workspace, "pos", mining.MineOptions(
        corpus="aero", negatives=4, range_min=2, range_max=30, margin=0.1, random_share=0.5))
    with db.connect(workspace) as con:
        prov = con.execute("SELECT * FROM mined_pairs WHERE dataset_id = ?",
                           [r.dataset_id]).df()
    ret = prov[prov["sampled"] == "top"]
    assert (ret["rank"] >= 3).all() and (ret["rank"] <= 30).all()
    assert (ret["score"] <= ret["positive_score"] - 0.1 * ret["positive_score"].abs()
            + 1e-6).all()
    assert r.random_negatives == (prov["sampled"] == "random-corpus").sum() == 16
    assert r.dropped_by_margin > 0
    with pytest.raises(ValueError, match="already mined with these settings"):
        mining.mine(workspace, "pos", mining.MineOptions(
            corpus="aero", negatives=4, range_min=2, range_max=30, margin=0.1,
            random_share=0.5))
    with pytest.raises(ValueError, match="needs both"):
        mining.mine(workspace, "pos", mining.MineOptions(corpus="aero", guard="x"))


def test_cli_mine_json_with_a_real_guard(workspace, tmp_path, capsys, tiny_model):
    build(workspace, tmp_path)
    ws = str(workspace.root)
    assert main(["mine", "pos", "--corpus", "aero", "--negatives", "2", "--range-max", "10",
                 "--guard", str(tiny_model), "--max-score", "1e9", "--workspace", ws,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("dataset_id", "queries", "mined", "skipped_labelled", "dropped_by_guard",
                "queries_short"):
        assert key in out
    assert out["queries"] == 8 and out["dropped_by_guard"] == 0
    with db.connect(workspace) as con:
        nulls = con.execute("SELECT count(*) FROM mined_pairs WHERE dataset_id = ? AND "
                            "guard_score IS NULL", [out["dataset_id"]]).fetchone()[0]
    assert nulls == 0
    assert main(["mine", "pos", "--corpus", "nope", "--workspace", ws, "--json"]) == 2
    assert "no corpus" in json.loads(capsys.readouterr().out)["error"]


def test_deleting_the_version_leaves_the_parent(workspace, tmp_path):
    from lib.datasets import delete_dataset

    build(workspace, tmp_path)
    before = snapshot(workspace, "pos")
    r = mining.mine(workspace, "pos", mining.MineOptions(corpus="aero", negatives=2))
    delete_dataset(workspace, r.name)
    with db.connect(workspace) as con:
        left = con.execute("SELECT count(*) FROM mined_pairs WHERE dataset_id = ?",
                           [r.dataset_id]).fetchone()[0]
    assert left == 0 and snapshot(workspace, "pos").equals(before)


def _raw(workspace, dataset_id):
    """Every stored row of a dataset (line, split hint included) and its datasets row."""
    with db.connect(workspace) as con:
        rows = con.execute("SELECT * FROM pairs WHERE dataset_id = ? ORDER BY line",
                           [dataset_id]).df()
        meta = con.execute("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id]).df()
    return rows, meta


SETTINGS = [  # (negatives, range_min, range_max, margin, sampling, random_share, seed)
    (5, 0, 300, None, "top", 0.0, 1), (3, 0, 10, 0.05, "top", 0.0, 2),
    (4, 1, 40, None, "random", 0.0, 3), (6, 2, 60, 0.2, "random", 0.5, 4),
    (2, 0, 5, None, "top", 1.0, 5), (8, 5, 299, 0.01, "random", 0.25, 6),
]


@pytest.mark.parametrize("retriever", ["bm25", "biencoder"])
def test_no_labelled_pair_is_ever_mined_and_the_parent_never_changes(workspace, tmp_path,
                                                                     retriever):
    """A property over many settings and seeds, both retrievers: no mined (query, doc) is one
    the user labelled for that query (by doc_id or by text), every mined row is a training
    query's negative, and the parent's stored rows stay row-for-row the same through mining
    and review decisions."""
    from lib import review

    ds = build(workspace, tmp_path)
    raw_before, meta_before = _raw(workspace, ds.dataset_id)
    labelled = set(zip(raw_before["query_id"], raw_before["doc_id"], strict=True))
    labelled_text = {(q, mining.text_hash(d)) for q, d in zip(
        raw_before["query_id"], raw_before["document"], strict=True)}
    train = {f"q{i}" for i in range(8)}
    total = 0
    for n, lo, hi, margin, sampling, share, seed in SETTINGS:
        r = mining.mine(workspace, "pos", mining.MineOptions(
            corpus="aero", retriever=retriever, negatives=n, range_min=lo, range_max=hi,
            margin=margin, sampling=sampling, random_share=share, seed=seed))
        rows, _ = _raw(workspace, r.dataset_id)
        mined = rows[rows["line"] > raw_before["line"].max()]
        assert len(mined) == r.mined > 0
        total += len(mined)
        for q, d, text, label in zip(mined["query_id"], mined["doc_id"], mined["document"],
                                     mined["label"], strict=True):
            assert (q, d) not in labelled, (retriever, n, lo, hi, q, d)
            assert (q, mining.text_hash(text)) not in labelled_text, (retriever, q, d)
            assert q in train and label == 0
        assert not mined.duplicated(["query_id", "doc_id"]).any()
        # the parent's rows, untouched: compared as stored, line numbers and split hints too
        keys = list(zip(mined["query_id"][:3], mined["doc_id"][:3], strict=True))
        review.decide(workspace, r.name, keys[:1], "dropped")
        review.decide(workspace, r.name, keys[1:2], "relevant")
        review.decide(workspace, r.name, keys[2:], "accepted")
        raw_after, meta_after = _raw(workspace, ds.dataset_id)
        assert raw_after.equals(raw_before) and meta_after.equals(meta_before)
    assert total >= 60


def test_distil_preset_distils_on_the_corpus_the_version_was_mined_from(workspace, tmp_path,
                                                                        tiny_model):
    """distill_corpus 'auto' (the Distil preset): a mined version, and a relabelled copy of it,
    bring their corpus's top documents for the training queries; data never mined brings its
    own documents (never one labelled for a held-out query)."""
    from lib import relabel
    from lib.training import jobs
    from lib.training.config import PRESETS, build_config

    build(workspace, tmp_path)
    mined = mining.mine(workspace, "pos", mining.MineOptions(corpus="aero", negatives=2))
    cfg = build_config({**PRESETS["Distil (CPU)"], "base_model": str(tiny_model),
                        "max_length": 48})
    assert cfg.distill_corpus == jobs.AUTO_CORPUS

    def corpus_of(dataset):
        created = jobs.create_run(workspace, dataset, cfg, enqueue=False)
        meta = json.loads((created.run_dir / "data" / "meta.json").read_text())
        path = created.run_dir / "data" / "distill_corpus.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else None
        return meta["distill_corpus"], rows

    info, rows = corpus_of(mined.name)
    assert info["corpus"] == "aero" and info["pairs"] == len(rows) > 0
    asked = {r["query_id"] for r in rows if not r["query_id"].startswith("pseudo:")}
    assert asked <= {f"q{i}" for i in range(8)}  # training queries (and the preset's pseudo ones)
    copy = relabel.relabel(workspace, mined.name, [{"query_id": "q0", "doc_id": "p0",
                                                    "decision": "relabel", "label": 2}])
    info, _ = corpus_of(copy.name)
    assert info["corpus"] == "aero"
    info, rows = corpus_of("pos")  # never mined: its own documents, made a corpus once
    own = corpora.get_corpus(workspace, info["corpus"])
    assert own.source == "dataset:" + datasets.get_dataset(workspace, "pos").dataset_id
    assert corpus_of("pos")[0]["corpus"] == own.name and info["pairs"] == len(rows) > 0
    pairs = split.load_split_pairs(workspace, "pos")
    held_out = set(pairs.loc[pairs["split"] != "train", "doc_id"])
    asked = {r["query_id"] for r in rows if not r["query_id"].startswith("pseudo:")}
    assert asked <= set(pairs.loc[pairs["split"] == "train", "query_id"])
    assert not {r["doc_id"] for r in rows} & held_out
    no_teacher = cfg.model_copy(update={"distill_teacher": None})
    created = jobs.create_run(workspace, mined.name, no_teacher, enqueue=False)  # auto: unused
    assert not (created.run_dir / "data" / "distill_corpus.jsonl").exists()
    corpora.delete_corpus(workspace, "aero")  # gone: its own documents instead, and it says so
    created = jobs.create_run(workspace, mined.name, cfg, enqueue=False)
    meta = json.loads((created.run_dir / "data" / "meta.json").read_text())
    assert meta["distill_corpus"]["corpus"] not in ("aero", own.name)
    assert any("no longer in the workspace" in w for w in created.warnings)


def test_positives_only_validation_queries_are_ranked_among_their_corpus_top_k(
        workspace, tmp_path, tiny_model):
    """Mining never touches validation queries: on positives-only data each is left with its
    positives alone, where NDCG@10 is 1.0 whatever the model. A run on the mined version adds each
    such query's BM25 top-k from the corpus as label 0 (unjudged = not relevant), never a pair
    labelled for it, and says so; a query with a labelled negative keeps its pairs as they are."""
    import pandas as pd

    from lib.evaluation.candidates import retrieve
    from lib.training import jobs, validation_candidates
    from lib.training.config import build_config

    build(workspace, tmp_path)
    mined = mining.mine(workspace, "pos", mining.MineOptions(corpus="aero", negatives=2))
    cfg = build_config({"base_model": str(tiny_model), "max_length": 48, "device": "cpu",
                        "validation_corpus_top_k": 5})
    created = jobs.create_run(workspace, mined.name, cfg, enqueue=False)
    data = created.run_dir / "data"
    val = pd.read_json(data / "validation.jsonl", lines=True, dtype={"doc_id": str})
    meta = json.loads((data / "meta.json").read_text())
    assert sorted(val.loc[val["label"] > 0, "doc_id"]) == ["p8", "p9"]
    added = val[val["label"] == 0]
    queries = pd.Series({"q8": "plate vibration effect", "q9": "nozzle flow effect"})
    top = retrieve(workspace, corpora.get_corpus(workspace, "aero"), "bm25", queries, 5)
    for q, positive in (("q8", "p8"), ("q9", "p9")):
        expected = [d for d in top.loc[top["query_id"] == q, "doc_id"] if d != positive]
        assert sorted(added.loc[added["query_id"] == q, "doc_id"]) == sorted(expected)
        assert 4 <= len(expected) <= 5
    assert set(added["query"]) == set(queries)
    assert meta["validation_corpus"] == {"corpus": "aero", "retriever": "bm25", "top_k": 5,
                                         "pairs": len(added), "queries": 2}
    assert meta["validation_pairs"] == len(val) == 2 + len(added)
    assert any("2 validation queries have only relevant labelled documents" in w
               for w in created.warnings)
    train = pd.read_json(data / "train.jsonl", lines=True)
    assert set(train["query_id"]) <= {f"q{i}" for i in range(8)}  # training data untouched

    off = jobs.create_run(workspace, mined.name,
                          cfg.model_copy(update={"validation_corpus_top_k": 0}), enqueue=False)
    assert len(pd.read_json(off.run_dir / "data" / "validation.jsonl", lines=True)) == 2
    assert json.loads((off.run_dir / "data" / "meta.json").read_text())["validation_corpus"] \
        is None

    judged = pd.DataFrame({"query_id": ["q8", "q8", "q9"], "doc_id": ["p8", "x1", "p9"],
                           "query": ["plate vibration effect"] * 2 + ["nozzle flow effect"],
                           "document": ["a", "b", "c"], "label": [1, 0, 1]})
    extra = validation_candidates.corpus_candidates(workspace, judged, "aero", 5)
    assert set(extra["query_id"]) == {"q9"}  # q8 has a labelled negative: left as it is
