"""Ingest: every bad line is reported with its line, field and reason; nothing valid is lost."""

import gzip
import json

import pytest

from lib import db
from lib.ingest import IngestFormatError, NothingAcceptedError, ingest_file

GOOD = {"query": "what is lift", "document": "lift is the upward force on a wing", "label": 3}

# (line content, expected field, substring of the expected message); None = accepted
PLANTED = [
    (json.dumps(GOOD), None, None),
    ('{"query": "q", "document": "d", "label": 1', "line", "invalid JSON"),
    ('{"query": "q", "document": "d", "label": NaN}', "line", "NaN"),
    ('{"query": "q", "document": "d", "label": Infinity}', "line", "Infinity"),
    ('["q", "d", 1]', "line", "not a JSON object (got array)"),
    ('"just a string"', "line", "not a JSON object"),
    ('{"document": "d", "label": 1}', "query", "missing field"),
    ('{"query": "q", "label": 1}', "document", "missing field"),
    ('{"query": "q", "document": "d"}', "label", "missing field"),
    ('{"query": "   ", "document": "d", "label": 1}', "query", "blank"),
    ('{"query": "q", "passage": "", "label": 1}', "passage", "blank"),
    ('{"query": "q", "document": "d", "label": "high"}', "label", "not a number"),
    ('{"query": "q", "document": "d", "label": 2.5}', "label", "not a whole number"),
    ('{"query": "q", "document": "d", "label": 5}', "label", "outside 0-4"),
    ('{"query": "q", "document": "d", "label": -1}', "label", "outside 0-4"),
    ('{"query": 7, "document": "d", "label": 1}', "query", "must be a string"),
    ('{"query": "q", "document": "d", "label": 1, "split": "holdout"}', "split", "split must"),
    ('{"query": "q", "document": "d", "label": 1, "query_id": ""}', "query_id", "blank"),
]


def write_lines(path, lines, newline="\n", bom=False):
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def test_each_planted_error_has_exact_line_field_and_reason(workspace, tmp_path):
    lines = [content for content, _, _ in PLANTED]
    # blank line, duplicate of line 1, 2.0 accepted as 2, boolean label, an over-long line,
    # and a line of invalid UTF-8 at the end
    too_long = '{"query": "' + "x" * 300 + '"}'
    lines += ["", json.dumps(GOOD), '{"question": "q2", "text": "d2", "score": 2.0}',
              '{"query": "q3", "doc": "d3", "relevance": true}', too_long]
    path = write_lines(tmp_path / "planted.jsonl", lines)
    with open(path, "ab") as fh:
        fh.write(b'{"query": "caf\xe9", "document": "d", "label": 1}\n')
    report = ingest_file(workspace, path, max_line_bytes=200)

    errors = {e.line: (e.field, e.message) for e in report.errors}
    for i, (_, field, msg) in enumerate(PLANTED, start=1):
        if field is None:
            assert i not in errors
        else:
            assert errors[i][0] == field, (i, errors[i])
            assert msg in errors[i][1], (i, errors[i])
    n = len(PLANTED)
    assert errors[n + 5] == ("line", f"line is {len(too_long)} bytes, over the limit of 200 bytes")
    assert errors[n + 6] == ("line", "line is not valid UTF-8")
    assert report.lines_read == n + 6
    assert report.blank == 1
    assert report.duplicates == 1
    assert report.rejected == report.errors_total == (n - 1) + 2
    assert report.accepted == 3  # GOOD, the 2.0 row, the boolean row
    assert report.lines_read == report.accepted + report.duplicates + report.rejected + report.blank
    assert report.label_scale == "graded"


def test_labels_and_aliases_are_stored_as_ints(workspace, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [
        '{"question": "q2", "text": "d2", "score": 2.0}',
        '{"query": "q3", "doc": "d3", "relevance": true}',
        '{"query": "q4", "document_text": "d4", "label": false, "query_id": 12, "doc_id": "x"}',
    ])
    report = ingest_file(workspace, path)
    with db.connect(workspace) as con:
        rows = con.execute(
            "SELECT query_id, doc_id, query, document, label FROM pairs ORDER BY line"
        ).fetchall()
    assert [r[2:] for r in rows] == [("q2", "d2", 2), ("q3", "d3", 1), ("q4", "d4", 0)]
    assert rows[2][:2] == ("12", "x")
    assert report.label_scale == "graded"
    assert report.field_map["document"] == ["doc", "document_text", "text"] or set(
        report.field_map["document"]) == {"doc", "document_text", "text"}


def test_binary_scale_detected(workspace, tmp_path):
    path = write_lines(tmp_path / "b.jsonl", [
        '{"query": "q", "document": "d1", "label": 1}',
        '{"query": "q", "document": "d2", "label": false}',
    ])
    assert ingest_file(workspace, path).label_scale == "binary"


def test_ids_are_stable_across_runs(workspace, tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(GOOD)])
    first = ingest_file(workspace, path)
    with db.connect(workspace) as con:
        ids1 = con.execute("SELECT query_id, doc_id FROM pairs").fetchall()
        con.execute("DELETE FROM pairs")
        con.execute("DELETE FROM datasets")
    second = ingest_file(workspace, path)
    with db.connect(workspace) as con:
        ids2 = con.execute("SELECT query_id, doc_id FROM pairs").fetchall()
    assert first.dataset_id == second.dataset_id
    assert ids1 == ids2 and ids1[0][0].startswith("q-") and ids1[0][1].startswith("d-")


def test_bom_crlf_and_gzip_are_handled(workspace, tmp_path):
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "document": "other"})]
    crlf = write_lines(tmp_path / "crlf.jsonl", lines, newline="\r\n", bom=True)
    report = ingest_file(workspace, crlf)
    assert (report.accepted, report.rejected) == (2, 0)
    with db.connect(workspace) as con:
        docs = [r[0] for r in con.execute("SELECT document FROM pairs ORDER BY line").fetchall()]
    assert docs == [GOOD["document"], "other"]  # no stray \r
    gz = tmp_path / "same.jsonl.gz"
    gz.write_bytes(gzip.compress(crlf.read_bytes()))
    again = ingest_file(workspace, gz)
    assert again.already_ingested and again.dataset_id == report.dataset_id


def test_reingesting_identical_content_is_recognised(workspace, tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD)])
    first = ingest_file(workspace, path)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    second = ingest_file(workspace, copy)
    assert second.already_ingested and second.dataset_id == first.dataset_id
    with db.connect(workspace) as con:
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == 1


def test_last_line_without_newline_and_tiny_chunks(workspace, tmp_path):
    lines = [json.dumps({**GOOD, "document": f"doc {i}"}) for i in range(50)]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")  # no final newline
    report = ingest_file(workspace, path, chunk_bytes=97)
    assert (report.lines_read, report.accepted, report.rejected) == (50, 50, 0)
    with db.connect(workspace) as con:
        got = [r[0] for r in con.execute("SELECT line FROM pairs ORDER BY line").fetchall()]
    assert got == list(range(1, 51))


def test_overlong_line_spanning_chunks_is_rejected_in_place(workspace, tmp_path):
    long_doc = "y" * 5000
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "document": long_doc}), json.dumps(
        {**GOOD, "document": "after"})]
    path = write_lines(tmp_path / "f.jsonl", lines)
    report = ingest_file(workspace, path, max_line_bytes=1000, chunk_bytes=256)
    assert [(e.line, e.field) for e in report.errors] == [(2, "line")]
    assert "over the limit of 1000 bytes" in report.errors[0].message
    assert (report.lines_read, report.accepted) == (3, 2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"query,document,label\nq,d,1\n", "CSV"),
        (b"query\tdocument\tlabel\nq\td\t1\n", "TSV"),
        (b'[{"query": "q", "document": "d", "label": 1}]', "single JSON array"),
        (b'[\n {"query": "q"}\n]\n', "single JSON array"),
        (b"PAR1\x00\x00", "Parquet"),
    ],
)
def test_whole_file_format_errors_name_what_was_seen(workspace, tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(IngestFormatError, match=expected) as info:
        ingest_file(workspace, path)
    assert str(path) in str(info.value)


def test_nothing_accepted_stores_nothing(workspace, tmp_path):
    path = write_lines(tmp_path / "g.jsonl", ['{"query": "q"}', '{"label": 1}'])
    with pytest.raises(NothingAcceptedError) as info:
        ingest_file(workspace, path)
    assert info.value.report.rejected == 2
    with db.connect(workspace) as con:
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM ingest_errors").fetchone()[0] == 0


def test_truncated_mid_line_file_keeps_complete_rows(workspace, tmp_path):
    full = json.dumps({**GOOD, "document": "complete"}) + "\n" + json.dumps(GOOD)
    path = tmp_path / "trunc.jsonl"
    path.write_text(full[: len(full) - 15], encoding="utf-8")
    report = ingest_file(workspace, path)
    assert report.accepted == 1
    assert [(e.line, e.field) for e in report.errors] == [(2, "line")]
    assert report.errors[0].message.startswith("invalid JSON")


def test_nan_in_an_unused_field_still_rejects_the_line(workspace, tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [
        json.dumps(GOOD), '{"query": "q", "document": "d", "label": 1, "extra": NaN}'])
    report = ingest_file(workspace, path)
    assert report.accepted == 1
    assert [(e.line, e.field) for e in report.errors] == [(2, "line")]
    assert "NaN" in report.errors[0].message


def test_fast_and_careful_paths_store_the_same_rows(workspace, tmp_path):
    rows = [json.dumps({"query_id": f"q{i % 7}", "query": f"query {i % 7}", "doc_id": f"d{i}",
                        "document": f"document number {i}", "label": i % 5,
                        **({"split": "test"} if i % 7 == 0 else {})}) for i in range(300)]
    rows.append(rows[5])  # one exact duplicate
    clean = write_lines(tmp_path / "clean.jsonl", rows)
    with_blank = write_lines(tmp_path / "blank.jsonl", [*rows, ""])  # forces the careful path
    a = ingest_file(workspace, clean)
    b = ingest_file(workspace, with_blank)
    assert (a.accepted, a.duplicates, a.blank) == (300, 1, 0)
    assert (b.accepted, b.duplicates, b.blank) == (300, 1, 1)
    with db.connect(workspace) as con:
        got = [
            con.execute(
                "SELECT line, query_id, doc_id, query, document, label, split_hint FROM pairs "
                "WHERE dataset_id = ? ORDER BY line", [ds]).fetchall()
            for ds in (a.dataset_id, b.dataset_id)
        ]
    assert got[0] == got[1]
    assert got[0][0] == (1, "q0", "d0", "query 0", "document number 0", 0, "test")
