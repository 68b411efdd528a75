"""Training warnings built from the Checks: not run yet, leakage found, relevant pairs truncated."""

import json

from lib import db
from lib.checks import run_checks
from lib.ingest import ingest_file
from lib.split import active_split_id, make_split
from lib.training.config import build_config
from lib.training.preflight import check_warnings


def _leaky(workspace, tmp_path):
    rows = []
    for q in range(40):
        for d in range(3):
            rows.append({"query_id": f"q{q}", "query": f"how does effect number {q} work",
                         "document": f"doc {q} {d} " + "word " * (60 if d == 0 else 5),
                         "label": int(d == 0)})
    # the same query text under another id, once in train and once held out
    for qid, split in (("leak-a", "train"), ("leak-b", "validation")):
        rows.append({"query_id": qid, "query": "what is the lift of a delta wing",
                     "document": "delta wings", "label": 1, "split": split})
    path = tmp_path / "leaky.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = ingest_file(workspace, path)
    make_split(workspace, ds.name, 0.2, 0.0, seed=3)
    with db.connect(workspace) as con:
        return ds.dataset_id, active_split_id(con, ds.dataset_id)


def test_warnings_follow_the_checks(workspace, tmp_path):
    ds, sid = _leaky(workspace, tmp_path)
    cfg = build_config({"max_length": 32})
    before = check_warnings(workspace, ds, sid, cfg)
    assert len(before) == 1 and "have not been run" in before[0]
    run_checks(workspace, ds, max_length=32)
    after = check_warnings(workspace, ds, sid, cfg)
    assert any("leakage finding" in w for w in after)
    assert any(w.startswith("at max length 32") and "relevant pairs are truncated" in w
               for w in after)
    assert not any("have not been run" in w for w in after)
