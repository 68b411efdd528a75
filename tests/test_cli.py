"""The CLI contract: --json shapes, exit codes, --workspace on every command."""

import json
import subprocess
import sys

from lib.cli import main


def test_ingest_json_contract_and_exit_codes(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    good = tmp_path / "good.jsonl"
    good.write_text('{"query": "q", "document": "d", "label": 1}\n{"query": "q"}\n')
    assert main(["ingest", str(good), "--workspace", ws, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("dataset_id", "lines_read", "accepted", "rejected", "duplicates", "blank",
                "label_scale", "errors", "errors_total"):
        assert key in out
    assert (out["accepted"], out["rejected"]) == (1, 1)
    assert out["errors"] == [{"line": 2, "field": "document", "message": out["errors"][0][
        "message"]}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    assert main(["ingest", str(bad), "--workspace", ws, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 0 and out["rejected"] == 1


def test_split_json_and_datasets(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert main(["demo", "--workspace", ws]) == 0
    capsys.readouterr()
    assert main(["split", "cranfield-demo", "--val", "0.2", "--test", "0.1", "--seed", "3",
                 "--workspace", ws, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(c["queries"] for c in out["counts"].values()) == 225
    assert out["counts"]["test"]["queries"] == 22


def test_python_dash_m_lib_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lib", "datasets", "--workspace", str(tmp_path / "w"), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
