"""Failures users will meet: a locked database, a truncated file, a huge server-side file."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from lib import db
from lib.datasets import list_datasets
from lib.ingest import ingest_file


def _hold_lock(db_path, seconds):
    code = textwrap.dedent(f"""
        import duckdb, time, sys
        con = duckdb.connect({str(db_path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_database_gives_a_clear_message_and_no_corruption(workspace, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"query": "q", "document": "d", "label": 1}) + "\n")
    with db.connect(workspace):
        pass  # create and migrate first
    holder = _hold_lock(workspace.db_path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(db.DatabaseLockedError, match="locked by another process") as info:
            with db.connect(workspace, timeout_s=1.0):
                pass
        assert time.monotonic() - t0 >= 1.0  # it retried before giving up
        assert str(workspace.db_path) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    report = ingest_file(workspace, path)  # the lock is gone: works, nothing half-written
    assert report.accepted == 1
    assert list(list_datasets(workspace)["accepted"]) == [1]


def test_lock_released_while_waiting_is_picked_up(workspace):
    with db.connect(workspace):
        pass
    holder = _hold_lock(workspace.db_path, 1.5)
    try:
        with db.connect(workspace, timeout_s=20) as con:
            assert con.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        holder.kill()
        holder.wait()


def test_cli_reports_a_locked_database(workspace, tmp_path):
    with db.connect(workspace):
        pass
    holder = _hold_lock(workspace.db_path, 60)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lib", "datasets", "--workspace", str(workspace.root)],
            capture_output=True, text=True, timeout=120,
            env={**__import__("os").environ, "RERANKER_STUDIO_LOCK_TIMEOUT": "1"},
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert "locked by another process" in proc.stderr


@pytest.mark.slow
def test_300mb_server_side_file_streams_with_progress_and_bounded_memory(workspace):
    """Ingest in a child process so its peak memory is its own; the file sits in the workspace."""
    imports = workspace.root / "imports"
    imports.mkdir()
    big = imports / "big.jsonl"
    doc = "boundary layer transition on a swept wing at supersonic speed " * 7
    with open(big, "w") as fh:
        for i in range(600_000):
            fh.write(json.dumps({"query_id": f"q{i // 20}", "query": f"query {i // 20}",
                                 "doc_id": f"d{i}", "document": doc, "label": i % 5}) + "\n")
    size = big.stat().st_size
    assert size > 300e6
    code = textwrap.dedent(f"""
        import json
        from lib.ingest import ingest_file
        from lib.workspace import resolve_workspace
        ws = resolve_workspace({str(workspace.root)!r})
        calls = []
        report = ingest_file(ws, ws.child("imports/big.jsonl"),
                             progress=lambda done, total: calls.append((done, total)))
        # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report pytest's own peak
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(json.dumps({{"accepted": report.accepted, "calls": calls,
            "rss_mb": int(hwm.split()[1]) / 1024}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["accepted"] == 600_000
    done = [d for d, _ in out["calls"]]
    assert len(done) >= 5 and done == sorted(done) and done[-1] == size
    assert out["rss_mb"] < 1500, out["rss_mb"]
    print(f"peak RSS {out['rss_mb']:.0f} MB for {size / 1e6:.0f} MB")
