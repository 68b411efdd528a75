"""Paths typed in the app (run files, model folders) stay inside the workspace; the CLI, whose
user owns the shell, keeps accepting any path. Refusals never echo or probe a file outside."""

import json
import os
import shutil

import pytest

from lib.cli import main
from lib.evaluation import EvaluationSpec, evaluate
from lib.evaluation.playground import rank_documents
from lib.evaluation.rankers import RunFileError, load_run_file, parse_ranker
from lib.ingest import ingest_file
from lib.models import app_model_spec, resolve_model
from lib.workspace import UnsafePathError

APP = {"allow_outside_workspace": False}
SECRET = "TOPSECRET-VALUE-42"


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def outside_run(tmp_path):
    """A file outside the workspace whose fields hold a secret (like /etc/passwd would)."""
    return _jsonl(tmp_path / "elsewhere" / "secret.jsonl",
                  [{"query_id": ["x"], "doc_id": SECRET, "score": SECRET}])


@pytest.fixture
def dataset(workspace, tmp_path):
    return ingest_file(workspace, _jsonl(tmp_path / "pairs.jsonl", [
        {"query_id": "q1", "doc_id": d, "query": "wing lift", "document": t, "label": lab}
        for d, t, lab in [("a", "lift of a wing", 1), ("b", "heat transfer", 0)]])).dataset_id


def _data_page_message(workspace, path: str) -> str:
    """What the Data page says for a server-side file outside the workspace."""
    with pytest.raises(UnsafePathError) as err:
        workspace.child(path)
    return str(err.value)


@pytest.mark.parametrize("outside", ["/etc/passwd", "/etc/no-such-file-here", "../../etc/passwd"])
def test_app_refuses_run_files_outside_the_workspace_like_the_data_page(workspace, outside):
    with pytest.raises(UnsafePathError) as err:
        parse_ranker(f"run:{outside}", workspace, **APP)
    msg = str(err.value)
    assert msg == _data_page_message(workspace, outside)
    assert "exist" not in msg  # an existing and a missing file get the same answer


@pytest.mark.parametrize("spec", ["fuse:run:/etc/passwd+bm25", "fuse:bm25+run:/etc/passwd",
                                  "fuse:run:../../etc/passwd+bm25@0.5"])
def test_app_refuses_outside_paths_inside_a_fusion_too(workspace, spec):
    """A fusion's parts are typed paths as well: the rule must not be bypassed through fuse:."""
    with pytest.raises(UnsafePathError) as err:
        parse_ranker(spec, workspace, **APP)
    assert "exist" not in str(err.value)


def test_app_refuses_model_folders_outside_the_workspace_inside_a_fusion(workspace, tiny_model):
    with pytest.raises(UnsafePathError):
        parse_ranker(f"fuse:{tiny_model}+bm25", workspace, **APP)


def test_app_refusal_never_reads_or_echoes_the_file(workspace, outside_run, dataset):
    with pytest.raises(UnsafePathError) as err:
        evaluate(workspace, EvaluationSpec(dataset=dataset, model="bm25",
                                           baselines=[f"run:{outside_run}"], save=False), **APP)
    assert SECRET not in str(err.value) and "query_id" not in str(err.value)
    with pytest.raises(UnsafePathError):  # a symlink in the workspace pointing out: refused too
        os.symlink(outside_run, workspace.root / "link.jsonl")
        parse_ranker("run:link.jsonl", workspace, **APP)


def test_run_file_errors_say_what_kind_of_value_not_the_value(outside_run):
    with pytest.raises(RunFileError) as err:  # the CLI may read it: still no content echoed
        load_run_file(outside_run)
    assert SECRET not in str(err.value)
    assert "field query_id: missing or not a non-empty string/integer (got a list)" in \
        str(err.value)


def test_app_run_files_inside_the_workspace_work(workspace, dataset):
    run = _jsonl(workspace.root / "imports" / "prod.jsonl",
                 [{"query_id": "q1", "doc_id": "a", "score": 2.0},
                  {"query_id": "q1", "doc_id": "b", "score": 1.0}])
    for spec in ("run:imports/prod.jsonl", f"run:{run}"):  # relative to the root, or absolute
        r = parse_ranker(spec, workspace, **APP)
        assert r.kind == "run" and r.path == str(run.resolve())
    res = evaluate(workspace, EvaluationSpec(dataset=dataset, model="run:imports/prod.jsonl",
                                             baselines=["bm25"], split="all", save=False), **APP)
    assert res.means["run:prod.jsonl"]["ndcg@10"] == pytest.approx(1.0)


def test_app_refuses_model_folders_outside_the_workspace(workspace, tiny_model):
    for call in (lambda: resolve_model(str(tiny_model), workspace, **APP),
                 lambda: parse_ranker(str(tiny_model), workspace, **APP),
                 lambda: app_model_spec(str(tiny_model), workspace),
                 lambda: rank_documents(workspace, "q", ["d"], [str(tiny_model), "bm25"], **APP)):
        with pytest.raises(UnsafePathError) as err:
            call()
        assert str(err.value) == _data_page_message(workspace, str(tiny_model))


def test_app_model_folders_inside_the_workspace_and_hub_ids_work(workspace, tiny_model):
    inside = workspace.root / "imports" / "tiny"
    shutil.copytree(tiny_model, inside)
    for spec in ("imports/tiny", str(inside)):
        ref = resolve_model(spec, workspace, **APP)
        assert ref.kind == "local" and ref.path == str(inside.resolve())
        assert app_model_spec(spec, workspace) == str(inside.resolve())
    assert resolve_model("cross-encoder/ms-marco-MiniLM-L6-v2", workspace, **APP).kind == "hub"
    assert app_model_spec("cross-encoder/ms-marco-MiniLM-L6-v2", workspace) == \
        "cross-encoder/ms-marco-MiniLM-L6-v2"
    assert resolve_model("default", workspace, **APP).kind == "default"
    res = rank_documents(workspace, "wing lift", ["lift of a wing", "heat"],
                         ["imports/tiny", "bm25"], **APP)
    assert len(res.table) == 2


def test_cli_keeps_accepting_paths_outside_the_workspace(workspace, tiny_model, dataset,
                                                         tmp_path, capsys):
    assert resolve_model(str(tiny_model)).kind == "local"
    assert parse_ranker(str(tiny_model), workspace).model_kind == "local"
    run = _jsonl(tmp_path / "outside" / "prod.jsonl",
                 [{"query_id": "q1", "doc_id": "a", "score": 2.0},
                  {"query_id": "q1", "doc_id": "b", "score": 1.0}])
    code = main(["evaluate", "--model", f"run:{run}", "--baseline", "bm25", "--dataset", dataset,
                 "--split", "all", "--metric", "ndcg@10", "--no-save", "--json",
                 "--workspace", str(workspace.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run:prod.jsonl" in out
