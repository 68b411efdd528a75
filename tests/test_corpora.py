"""Corpora: streamed validation with exact counts and reasons, and cached first-stage indexes."""

import gzip
import json

import bm25s
import numpy as np
import pytest

from lib import corpora, first_stage
from lib.cli import main

DOCS = [
    ("d1", "Boundary layer transition on a flat plate at high speed."),
    ("d2", "Heat transfer in hypersonic flow over a blunt body."),
    ("d3", "Buckling of thin cylindrical shells under axial compression."),
    ("d4", "Laminar boundary layer separation and reattachment."),
    ("d5", "Shock wave interaction with a turbulent boundary layer."),
]


def write_corpus(path, docs=DOCS, extra_lines=()):
    lines = [json.dumps({"doc_id": d, "text": t}) for d, t in docs]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


def test_add_counts_every_line_and_names_each_rejection(workspace, tmp_path):
    path = write_corpus(tmp_path / "c.jsonl", extra_lines=[
        "", "not json", '{"doc_id": "d9"}', '{"doc_id": "", "text": "x"}',
        '{"doc_id": "d1", "text": "repeat of d1"}', '{"doc_id": 7, "text": "int id", "title": "T"}',
        '[1, 2]', '{"doc_id": "d8", "text": "t", "title": 3}',
    ])
    r = corpora.add_corpus(workspace, path, "aero", batch_lines=3)
    assert r.lines_read == 13
    assert r.lines_read == r.accepted + r.rejected + r.blank
    assert (r.accepted, r.blank) == (6, 1)
    by_line = {e.line: (e.field, e.message) for e in r.errors}
    assert by_line[7][0] == "line" and "invalid JSON" in by_line[7][1]
    assert by_line[8] == ("text", "text must be a string, got nothing")
    assert by_line[9] == ("doc_id", "doc_id is blank")
    assert by_line[10] == ("doc_id", "doc_id d1 already on line 1")
    assert by_line[12][1] == "not a JSON object (got list)"
    assert by_line[13][0] == "title"
    c = corpora.get_corpus(workspace, "aero")
    assert c.n_docs == 6
    got = corpora.docs_at(workspace, c, range(6))
    assert got["pos"].tolist() == list(range(6))  # renumbered after the repeat was dropped
    assert got.set_index("doc_id").loc["7", "text"] == "T. int id"
    # the same content again is recognised, not stored twice
    again = corpora.add_corpus(workspace, path, "other")
    assert again.already_added and again.corpus_id == r.corpus_id


def test_gzip_and_nothing_valid(workspace, tmp_path):
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("\n".join(json.dumps({"doc_id": d, "text": t}) for d, t in DOCS))
    assert corpora.add_corpus(workspace, gz).accepted == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(corpora.CorpusFormatError, match="line 1: doc_id: missing field"):
        corpora.add_corpus(workspace, bad)
    assert len(corpora.list_corpora(workspace)) == 1  # nothing half-stored


def test_bm25_equals_bm25s_and_is_cached(workspace, tmp_path):
    c = corpora.get_corpus(workspace, corpora.add_corpus(
        workspace, write_corpus(tmp_path / "c.jsonl")).corpus_id)
    index = first_stage.load_bm25(workspace, c)
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize([t for _, t in DOCS], stopwords="en", show_progress=False),
                    show_progress=False)
    q = "turbulent boundary layer shock"
    ref_scores = reference.get_scores(bm25s.tokenize([q], stopwords="en", return_ids=False,
                                                     show_progress=False)[0])
    ours = index.scores(first_stage.tokenize([q])[0])
    np.testing.assert_allclose(ours, ref_scores, rtol=1e-5)
    pos, sc = index.search([q], k=3)
    assert corpora.docs_at(workspace, c, pos[0][:1])["doc_id"].item() == "d5"
    assert sc[0][0] >= sc[0][1] >= sc[0][2]
    # a text scored on its own gets the same BM25 as when it is found in the corpus
    np.testing.assert_allclose(index.score_pairs([q], [DOCS[4][1]]), [sc[0][0]], rtol=1e-5)
    folder = corpora.index_dir(workspace, c) / first_stage.BM25_VERSION
    built = (folder / "meta.json").stat().st_mtime_ns
    first_stage.load_bm25(workspace, c)
    assert (folder / "meta.json").stat().st_mtime_ns == built  # reused, not rebuilt


def test_biencoder_embeddings_cached_per_model(workspace, tmp_path):
    c = corpora.get_corpus(workspace, corpora.add_corpus(
        workspace, write_corpus(tmp_path / "c.jsonl")).corpus_id)
    idx = first_stage.load_embeddings(workspace, c)
    assert idx.emb.shape[0] == 5
    pos, sc = idx.search(["buckling of cylindrical shells"], k=2)
    assert corpora.docs_at(workspace, c, pos[0][:1])["doc_id"].item() == "d3"
    folders = [p.name for p in corpora.index_dir(workspace, c).iterdir()]
    assert len([f for f in folders if f.startswith("bi-")]) == 1


def test_corpus_from_dataset_and_cli(workspace, tmp_path, capsys):
    ws = str(workspace.root)
    path = write_corpus(tmp_path / "c.jsonl")
    assert main(["corpus", "add", str(path), "--name", "aero", "--workspace", ws, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["accepted"], out["rejected"], out["indexed"]) == (5, 0, "bm25")
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(
        {"query_id": "q1", "query": "shells", "doc_id": d, "document": t, "label": int(d == "d3")})
        for d, t in DOCS) + "\n")
    assert main(["ingest", str(data), "--name", "ds", "--workspace", ws, "--json"]) == 0
    capsys.readouterr()
    assert main(["corpus", "add", "--from-dataset", "ds", "--index", "none",
                 "--workspace", ws, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 5 and out["name"] == "ds-docs"
    assert main(["corpus", "add", "--name", "x", "--workspace", ws, "--json"]) == 2
    assert main(["corpus", "list", "--workspace", ws, "--json"]) == 0
    capsys.readouterr()
    assert main(["corpus", "delete", "aero", "--workspace", ws]) == 0
    assert len(corpora.list_corpora(workspace)) == 1
