"""Validate a JSONL file of (query, document, label) rows line by line and store it in DuckDB.

The file is streamed in byte chunks: numpy finds line ends, DuckDB's JSON functions validate and
extract every field of a chunk in one vectorised query, so no Python object is built per row.
Every line ends up in exactly one bucket: accepted, duplicate, rejected (with line, field and
reason) or blank, so `lines_read == accepted + duplicates + rejected + blank` always holds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from lib import db
from lib.diskspace import DiskFullError, free_mb, is_disk_full
from lib.workspace import Workspace, safe_name

QUERY_FIELDS = ("query", "question")
DOCUMENT_FIELDS = ("document", "document_text", "text", "passage", "doc")
LABEL_FIELDS = ("label", "score", "relevance")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
MAX_LABEL = 4
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_CHUNK_BYTES = 32 << 20
INGEST_MEMORY_LIMIT = "768MB"
ERRORS_IN_REPORT = 100
RAW_KEPT_BYTES = 10_000
DETAILED_JSON_ERRORS = 1000  # per chunk: Python's parser explains where the JSON breaks

ProgressFn = Callable[[int, int], None]


class IngestFormatError(ValueError):
    """The whole file is not JSON Lines (empty, CSV, one JSON array, binary...)."""


@dataclass
class IngestError:
    line: int
    field: str
    message: str


@dataclass
class IngestReport:
    dataset_id: str
    name: str
    lines_read: int
    accepted: int
    rejected: int
    duplicates: int
    blank: int
    label_scale: str
    errors: list[IngestError]
    errors_total: int
    already_ingested: bool = False
    n_queries: int = 0
    n_docs: int = 0
    max_label: int = 0
    field_map: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The CLI's `--json` contract (plus a few extra keys)."""
        out = asdict(self)
        out["errors"] = [asdict(e) for e in self.errors]
        return out


# ---------------------------------------------------------------------------------------------
# Reading lines


def _open_binary(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


@dataclass
class FileScan:
    """What one cheap pass over the bytes tells us before parsing anything."""

    content_hash: str
    n_lines: int  # physical lines, counting a last line without a newline
    max_line_bytes: int
    strict_json_suspect: bool  # NaN/Infinity/trailing-comma tokens somewhere in the file


# DuckDB's and Arrow's JSON parsers accept these; Python's strict parser (and the JSON spec) do
# not. Arrow rejects trailing commas itself, so only these send a file down the careful path.
_SUSPECT_TOKENS = (b"NaN", b"Infinity")


def _has_token(arr: np.ndarray, token: bytes) -> bool:
    """Vectorised substring test: candidates at the first byte, narrowed byte by byte."""
    n = len(token)
    if len(arr) < n:
        return False
    cand = np.flatnonzero(arr[: len(arr) - n + 1] == token[0])
    for k in range(1, n):
        if not len(cand):
            return False
        cand = cand[arr[cand + k] == token[k]]
    return bool(len(cand))


def scan_file(path: Path) -> FileScan:
    """sha256 of the decompressed content (gzipped or not, same rows = same dataset), line stats."""
    h = hashlib.sha256()
    n_lines = max_len = 0
    since_nl = 0  # bytes since the last newline
    suspect = False
    tail = b""
    with _open_binary(path) as fh:
        try:
            while block := fh.read(8 << 20):
                h.update(block)
                arr = np.frombuffer(block, dtype=np.uint8)
                if not suspect:
                    seam = np.frombuffer(tail + block[:8], dtype=np.uint8)  # across blocks
                    suspect = any(
                        _has_token(a, tok) for tok in _SUSPECT_TOKENS for a in (arr, seam)
                    )
                    tail = block[-8:]
                nl = np.flatnonzero(arr == 10)
                if len(nl):
                    first = since_nl + int(nl[0])
                    inner = int(np.diff(nl).max()) - 1 if len(nl) > 1 else 0
                    max_len = max(max_len, first, inner)
                    since_nl = len(block) - int(nl[-1]) - 1
                    n_lines += len(nl)
                else:
                    since_nl += len(block)
                    max_len = max(max_len, since_nl)
        except (OSError, EOFError) as exc:
            raise IngestFormatError(f"{path}: cannot read compressed data: {exc}") from exc
    if since_nl:
        n_lines += 1
        max_len = max(max_len, since_nl)
    return FileScan(h.hexdigest(), n_lines, max_len, suspect)


def sniff_format(path: Path) -> None:
    """Refuse files that are not JSON Lines at all, with one message naming what we saw."""
    with _open_binary(path) as fh:
        try:
            head = fh.read(64 << 10)
        except (OSError, EOFError) as exc:
            raise IngestFormatError(f"{path}: cannot read compressed data: {exc}") from exc
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if head.startswith(b"PAR1"):
        raise IngestFormatError(f"{path}: this is a Parquet file; expected JSON Lines (.jsonl)")
    if head.startswith(b"PK\x03\x04"):
        raise IngestFormatError(f"{path}: this is a zip archive; expected JSON Lines (.jsonl)")
    if b"\x00" in head[:8192]:
        raise IngestFormatError(f"{path}: this is a binary file; expected JSON Lines (.jsonl)")
    stripped = head.strip()
    if not stripped:
        raise IngestFormatError(
            f"{path}: the file is empty; expected JSON Lines: one JSON object per line with "
            "query, document and label"
        )
    first_line = stripped.split(b"\n", 1)[0].strip()
    if stripped.startswith(b"["):
        raise IngestFormatError(
            f"{path}: the file is a single JSON array (it starts with '['); expected JSON Lines: "
            "one JSON object per line. Convert it with e.g. `jq -c '.[]' in.json > out.jsonl`"
        )
    if not first_line.startswith(b"{"):
        text = first_line[:200].decode("utf-8", "replace")
        for sep, fmt in ((b"\t", "TSV (tab-separated)"), (b",", "CSV (comma-separated)"),
                         (b";", "CSV (semicolon-separated)")):
            if sep in first_line:
                raise IngestFormatError(
                    f"{path}: the file looks like {fmt}, first line {text!r}; expected JSON "
                    "Lines: one JSON object per line with query, document and label"
                )


@dataclass
class _Chunk:
    first_line: int  # 1-based physical line number of the first line in the chunk
    data: bytes  # lines without their line ends, concatenated
    offsets: np.ndarray  # int64, len n+1
    too_long: np.ndarray  # bool, len n
    lengths: np.ndarray  # original byte length per line


def _iter_chunks(
    fh, max_line_bytes: int, chunk_bytes: int, progress: Callable[[], None] | None
) -> Iterator[_Chunk]:
    """Yield complete lines in big chunks; over-long lines are skipped in place, not buffered."""
    line_no = 1
    carry = b""
    skipping = False  # inside an over-long line whose end we have not seen yet
    skipped_len = 0
    first = True
    while True:
        block = fh.read(chunk_bytes)
        if progress:
            progress()
        if first and block.startswith(b"\xef\xbb\xbf"):
            block = block[3:]
        first = False
        eof = not block
        if skipping:
            nl = block.find(b"\n")
            if nl < 0 and not eof:
                skipped_len += len(block)
                continue
            skipped_len += nl if nl >= 0 else len(block)
            # emit the over-long line as a single flagged, empty entry
            yield _Chunk(
                line_no,
                b"",
                np.zeros(2, dtype=np.int64),
                np.array([True]),
                np.array([skipped_len], dtype=np.int64),
            )
            line_no += 1
            skipping = False
            block = block[nl + 1 :] if nl >= 0 else b""
            if eof:
                return
        buf = carry + block
        carry = b""
        if eof:
            if buf:
                buf += b"\n"  # last line without a final newline
        else:
            last_nl = buf.rfind(b"\n")
            if last_nl < 0:
                if len(buf) > max_line_bytes:
                    skipping, skipped_len = True, len(buf)
                else:
                    carry = buf
                continue
            carry = buf[last_nl + 1 :]
            buf = buf[: last_nl + 1]
            if len(carry) > max_line_bytes:
                skipping, skipped_len = True, len(carry)
                carry = b""
        if buf:
            chunk = _split_lines(buf, line_no, max_line_bytes)
            line_no += len(chunk.too_long)
            yield chunk
        if eof:
            return


def _split_lines(buf: bytes, first_line: int, max_line_bytes: int) -> _Chunk:
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    has_cr = (lengths > 0) & (arr[np.maximum(ends - 1, 0)] == 13)
    content_ends = ends - has_cr
    too_long = lengths > max_line_bytes
    keep_len = np.where(too_long, 0, content_ends - starts)
    mask = np.ones(len(arr), dtype=bool)
    mask[ends] = False
    mask[ends[has_cr] - 1] = False
    for i in np.flatnonzero(too_long):  # rare: drop the content of over-long lines
        mask[starts[i] : ends[i]] = False
    data = arr[mask].tobytes()
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    np.cumsum(keep_len, out=offsets[1:])
    return _Chunk(first_line, data, offsets, too_long, lengths)


def _chunk_table(chunk: _Chunk) -> pa.Table:
    n = len(chunk.too_long)
    raw = pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(chunk.offsets), pa.py_buffer(chunk.data)]
    )
    lines = pa.array(np.arange(chunk.first_line, chunk.first_line + n, dtype=np.int64))
    table = pa.table(
        {
            "line": lines,
            "raw": raw,
            "too_long": pa.array(chunk.too_long),
            "nbytes": pa.array(chunk.lengths.astype(np.int64)),
        }
    )
    # small record batches let DuckDB validate them on all cores in parallel
    return pa.Table.from_batches(table.to_batches(max_chunksize=8192))


# ---------------------------------------------------------------------------------------------
# Validation in SQL


_PATHS = [*QUERY_FIELDS, *DOCUMENT_FIELDS, *LABEL_FIELDS, "query_id", "doc_id", "split"]


def _pick(fields: tuple[str, ...]) -> tuple[str, str, str]:
    """SQL for (json text, string value, field name) of the first alias present and not null."""
    present = [f'v."{f}" IS NOT NULL' for f in fields]
    raw = " ".join(f'WHEN {c} THEN v."{f}"' for c, f in zip(present, fields, strict=True))
    text = " ".join(f'WHEN {c} THEN s."{f}"' for c, f in zip(present, fields, strict=True))
    name = " ".join(f"WHEN {c} THEN '{f}'" for c, f in zip(present, fields, strict=True))
    return f"CASE {raw} END", f"CASE {text} END", f"CASE {name} END"


def _kind(raw: str) -> str:
    """JSON type of a valid JSON value from its first character (cheaper than json_type)."""
    return (
        f"CASE left({raw}, 1) WHEN '\"' THEN 'string' WHEN '{{' THEN 'object' "
        f"WHEN '[' THEN 'array' WHEN 't' THEN 'boolean' WHEN 'f' THEN 'boolean' "
        f"ELSE 'number' END"
    )


def _optional(name: str) -> tuple[str, str]:
    return f'v."{name}"', f's."{name}"'


_Q, _D, _L = _pick(QUERY_FIELDS), _pick(DOCUMENT_FIELDS), _pick(LABEL_FIELDS)
_QID, _DID, _SPLIT = _optional("query_id"), _optional("doc_id"), _optional("split")
_SPLIT_CASES = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SPLIT_ALIASES.items())
# DuckDB's JSON parser accepts NaN/Infinity and trailing commas; Python's strict parser re-checks
# the (rare) lines that contain them. Plain substring tests keep the common path fast.
_SUSPICIOUS = (
    "contains(txt, 'NaN') OR contains(txt, 'Infinity') OR contains(txt, ',}') "
    "OR contains(txt, ',]') OR contains(txt, ', }') OR contains(txt, ', ]')"
)
_AS_JSON = "'{" + ", ".join(f'"{p}": "JSON"' for p in _PATHS) + "}'"
_AS_TEXT = "'{" + ", ".join(f'"{p}": "VARCHAR"' for p in _PATHS) + "}'"

# Each row gets the FIRST problem found, checked in the order the fields are listed here.
_CHECKS: list[tuple[str, str, str]] = [
    ("pre = 'too_long'", "'line'",
     "'line is ' || nbytes || ' bytes, over the limit of $max_line bytes'"),
    ("pre = 'utf8'", "'line'", "'line is not valid UTF-8'"),
    ("pre = 'json'", "'line'", "'invalid JSON'"),
    ("pre = 'not_object'", "'line'",
     "'not a JSON object (got ' || lower(json_type(txt)) || ')'"),
    ("q_raw IS NULL", "'query'", f"'missing field: expected one of {', '.join(QUERY_FIELDS)}'"),
    ("q_kind <> 'string'", "q_field", "q_field || ' must be a string, got ' || q_kind"),
    ("trim(q_text) = ''", "q_field", "q_field || ' is blank'"),
    ("d_raw IS NULL", "'document'",
     f"'missing field: expected one of {', '.join(DOCUMENT_FIELDS)}'"),
    ("d_kind <> 'string'", "d_field", "d_field || ' must be a string, got ' || d_kind"),
    ("trim(d_text) = ''", "d_field", "d_field || ' is blank'"),
    ("l_raw IS NULL", "'label'", f"'missing field: expected one of {', '.join(LABEL_FIELDS)}'"),
    ("l_kind NOT IN ('number', 'boolean')", "l_field",
     "l_field || ' is not a number (got ' || l_kind || ' ' || left(l_raw, 40) || ')'"),
    ("l_kind = 'number' AND (l_num IS NULL OR isnan(l_num) OR isinf(l_num))", "l_field",
     "l_field || ' ' || left(l_raw, 40) || ' is not a finite number'"),
    ("l_kind = 'number' AND l_num <> floor(l_num)", "l_field",
     "l_field || ' ' || l_raw || ' is not a whole number'"),
    (f"l_kind = 'number' AND (l_num < 0 OR l_num > {MAX_LABEL})", "l_field",
     f"l_field || ' ' || l_raw || ' is outside 0-{MAX_LABEL}'"),
    ("qid_raw IS NOT NULL AND qid_kind NOT IN ('string', 'number')", "'query_id'",
     "'query_id must be a string or integer, got ' || qid_kind"),
    ("qid_raw IS NOT NULL AND trim(qid_text) = ''", "'query_id'", "'query_id is blank'"),
    ("did_raw IS NOT NULL AND did_kind NOT IN ('string', 'number')", "'doc_id'",
     "'doc_id must be a string or integer, got ' || did_kind"),
    ("did_raw IS NOT NULL AND trim(did_text) = ''", "'doc_id'", "'doc_id is blank'"),
    (f"split_raw IS NOT NULL AND (split_kind <> 'string' OR split_text NOT IN "
     f"{tuple(SPLIT_ALIASES)!r})", "'split'",
     "'split must be one of train, validation, test (got ' || left(split_raw, 40) || ')'"),
]
_ERR_FIELD = "CASE WHEN pre = 'blank' THEN NULL " + " ".join(
    f"WHEN {cond} THEN {fld}" for cond, fld, _ in _CHECKS) + " END"
_ERR_MESSAGE = "CASE WHEN pre = 'blank' THEN NULL " + " ".join(
    f"WHEN {cond} THEN {msg}" for cond, _, msg in _CHECKS) + " END"

_VALIDATE_SQL = f"""
WITH d AS (
    SELECT line, nbytes, CASE WHEN too_long THEN NULL ELSE try(decode(raw)) END AS txt, too_long
    FROM chunk
), c AS (
    SELECT line, nbytes, txt,
        CASE WHEN too_long THEN 'too_long'
             WHEN txt IS NULL THEN 'utf8'
             WHEN trim(txt) = '' THEN 'blank'
             WHEN NOT json_valid(txt) THEN 'json'
             WHEN left(ltrim(txt), 1) <> '{{' THEN 'not_object'
        END AS pre
    FROM d
), e AS (
    SELECT *,
        CASE WHEN pre IS NULL THEN json_transform(txt, {_AS_JSON}) END AS v,
        CASE WHEN pre IS NULL THEN json_transform(txt, {_AS_TEXT}) END AS s
    FROM c
), f AS (
    SELECT line, nbytes, txt, pre,
        {_Q[0]} AS q_raw, {_Q[1]} AS q_text, {_Q[2]} AS q_field,
        {_D[0]} AS d_raw, {_D[1]} AS d_text, {_D[2]} AS d_field,
        {_L[0]} AS l_raw, {_L[2]} AS l_field,
        {_QID[0]} AS qid_raw, {_QID[1]} AS qid_text,
        {_DID[0]} AS did_raw, {_DID[1]} AS did_text,
        {_SPLIT[0]} AS split_raw, lower(trim({_SPLIT[1]})) AS split_text,
        pre IS NULL AND ({_SUSPICIOUS}) AS suspicious
    FROM e
), g AS (
    SELECT *,
        {_kind("q_raw")} AS q_kind, {_kind("d_raw")} AS d_kind, {_kind("l_raw")} AS l_kind,
        {_kind("qid_raw")} AS qid_kind, {_kind("did_raw")} AS did_kind,
        {_kind("split_raw")} AS split_kind,
        TRY_CAST(l_raw AS DOUBLE) AS l_num
    FROM f
)
SELECT line, suspicious, txt,
    {_ERR_FIELD} AS err_field,
    {_ERR_MESSAGE} AS err_message,
    coalesce(pre = 'blank', false) AS is_blank,
    q_text AS query,
    d_text AS document,
    CASE WHEN l_kind = 'boolean' THEN CASE WHEN l_raw = 'true' THEN 1 ELSE 0 END
         ELSE TRY_CAST(l_num AS INTEGER) END AS label,
    CASE WHEN qid_text IS NULL THEN 'q-' || left(md5(q_text), 16) ELSE trim(qid_text) END
        AS query_id,
    CASE WHEN did_text IS NULL THEN 'd-' || left(md5(d_text), 16) ELSE trim(did_text) END
        AS doc_id,
    CASE split_text {_SPLIT_CASES} END AS split_hint,
    q_field, d_field, l_field
FROM g
"""


def _strict_json_problem(txt: str) -> str | None:
    """Python's strict parse for the few lines DuckDB's lenient parser may wave through."""

    def _no_constant(name: str):
        raise ValueError(f"{name} is not valid JSON")

    try:
        json.loads(txt, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    return None


# ---------------------------------------------------------------------------------------------
# Public API


def ingest_file(
    ws: Workspace,
    path: str | Path,
    name: str | None = None,
    *,
    source: str | None = None,
    name_hint: str | None = None,
    progress: ProgressFn | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> IngestReport:
    """Validate and store `path` as a dataset; all-or-nothing, so a crash leaves no half dataset.

    `name_hint` is the file name the user knows (an upload is stored under a hashed name), used
    for the default dataset name when `name` is not given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    sniff_format(path)
    scan = scan_file(path)
    content_hash = scan.content_hash
    dataset_id = "ds-" + content_hash[:12]
    total = path.stat().st_size

    try:
        report = _store(ws, path, name, source, name_hint, progress, max_line_bytes,
                        chunk_bytes, scan, dataset_id, total)
    except (duckdb.Error, OSError) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(
            f"disk full: no space left on the disk holding {ws.root} ({free_mb(ws.root):.0f} MB "
            f"free) while storing {path.name}; nothing was stored (a dataset is stored whole or "
            "not at all). Free some space or move the workspace to a bigger disk, then ingest "
            "again."
        ) from exc
    if progress:
        progress(total, total)
    return report


def _store(ws: Workspace, path: Path, name: str | None, source: str | None,
           name_hint: str | None, progress: ProgressFn | None, max_line_bytes: int,
           chunk_bytes: int, scan: FileScan, dataset_id: str, total: int) -> IngestReport:
    content_hash = scan.content_hash
    with db.connect(ws) as con:
        existing = con.execute(
            "SELECT dataset_id FROM datasets WHERE content_hash = ?", [content_hash]
        ).fetchone()
        if existing:
            return _existing_report(con, existing[0])
        final_name = _choose_name(con, name, Path(name_hint) if name_hint else path)
        con.execute(f"SET temp_directory = '{ws.cache_dir / 'duckdb_tmp'}'")
        # a big file must not grow the process with it: DuckDB spills past this to temp_directory
        con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
        with db.transaction(con):
            report = None
            if not scan.strict_json_suspect and scan.max_line_bytes <= max_line_bytes:
                report = _load_clean(
                    con, path, dataset_id, final_name, scan, max_line_bytes, progress, total,
                    piece_bytes=2 * chunk_bytes,
                )
            if report is None:
                report = _load(con, path, dataset_id, final_name, max_line_bytes, chunk_bytes,
                               progress, total)
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, current_timestamp, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?)",
                [
                    dataset_id, final_name, source or str(path), content_hash,
                    report.lines_read, report.accepted, report.rejected, report.duplicates,
                    report.blank, report.label_scale, report.max_label,
                    report.n_queries, report.n_docs,
                    json.dumps(report.field_map),
                ],
            )
    return report


def _choose_name(con: duckdb.DuckDBPyConnection, name: str | None, path: Path) -> str:
    taken = {r[0] for r in con.execute("SELECT name FROM datasets").fetchall()}
    if name:
        chosen = safe_name(name)
        if chosen in taken:
            raise ValueError(f"a dataset named {chosen!r} already exists; choose another --name")
        return chosen
    stem = path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "dataset"
    base = safe_name(base[:100])
    chosen, i = base, 2
    while chosen in taken:
        chosen, i = f"{base}-{i}", i + 1
    return chosen


def _reset_staged_fields(con: duckdb.DuckDBPyConnection) -> None:
    """Which input field fed each column, counted while loading (shown as the field map)."""
    con.execute(
        "CREATE TEMP TABLE IF NOT EXISTS staged_fields (field VARCHAR, kind VARCHAR, n BIGINT)"
    )
    con.execute("DELETE FROM staged_fields")


_TEXT_FIELDS = (*QUERY_FIELDS, *DOCUMENT_FIELDS, "query_id", "doc_id", "split")
_CLEAN_SCHEMA = pa.schema(
    [pa.field(f, pa.string()) for f in _TEXT_FIELDS]
    + [pa.field(f, pa.float64()) for f in LABEL_FIELDS]
)


def _coalesce(fields: tuple[str, ...]) -> str:
    return "coalesce(" + ", ".join(f'"{f}"' for f in fields) + ")"


def _first_name(fields: tuple[str, ...]) -> str:
    return "CASE " + " ".join(f"WHEN \"{f}\" IS NOT NULL THEN '{f}'" for f in fields) + " END"


_CLEAN_ROWS_SQL = f"""
SELECT line,
    {_coalesce(QUERY_FIELDS)} AS query, {_first_name(QUERY_FIELDS)} AS q_field,
    {_coalesce(DOCUMENT_FIELDS)} AS document, {_first_name(DOCUMENT_FIELDS)} AS d_field,
    {_coalesce(LABEL_FIELDS)} AS l_num, {_first_name(LABEL_FIELDS)} AS l_field,
    query_id, doc_id, lower(trim(split)) AS split_text
FROM clean
"""
_CLEAN_BAD = f"""
    query IS NULL OR trim(query) = '' OR document IS NULL OR trim(document) = ''
    OR l_num IS NULL OR isnan(l_num) OR isinf(l_num) OR l_num <> floor(l_num)
    OR l_num < 0 OR l_num > {MAX_LABEL}
    OR trim(query_id) = '' OR trim(doc_id) = ''
    OR (split_text IS NOT NULL AND split_text NOT IN {tuple(SPLIT_ALIASES)!r})
"""


def _load_clean(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    dataset_id: str,
    name: str,
    scan: FileScan,
    max_line_bytes: int,
    progress: ProgressFn | None = None,
    total: int = 0,
    piece_bytes: int = 64 << 20,
) -> IngestReport | None:
    """Fast path for a file where every line is a valid row: Arrow's parallel JSON reader.

    The file goes through in pieces cut at line ends, so memory stays bounded whatever its size.
    Returns None at the first sign of anything unusual (a parse or type error, a skipped blank
    line, any invalid row), and the careful line-by-line path takes over with exact reasons.
    """
    _reset_staged_fields(con)
    lines_done = 0
    with open(path, "rb") as raw_fh:
        fh = gzip.open(raw_fh, "rb") if _is_gzip(path) else raw_fh
        for piece in _iter_pieces(fh, piece_bytes):
            n_lines = piece.count(b"\n")
            ok = _insert_clean_piece(con, piece, dataset_id, lines_done, n_lines, max_line_bytes)
            if not ok:
                con.execute("DELETE FROM pairs WHERE dataset_id = ?", [dataset_id])
                return None
            lines_done += n_lines
            if progress:
                progress(min(raw_fh.tell(), total), total)
    if lines_done != scan.n_lines or lines_done == 0:
        con.execute("DELETE FROM pairs WHERE dataset_id = ?", [dataset_id])
        return None
    return _finish(con, dataset_id, name, lines_done, 0)


def _iter_pieces(fh, piece_bytes: int) -> Iterator[bytes]:
    """Big byte pieces, each ending with a newline (one is added after a last unended line)."""
    carry = b""
    while block := fh.read(piece_bytes):
        buf = carry + block
        cut = buf.rfind(b"\n") + 1
        carry = buf[cut:]
        if cut:
            yield buf[:cut]
    if carry:
        yield carry + b"\n"


def _insert_clean_piece(
    con: duckdb.DuckDBPyConnection,
    piece: bytes,
    dataset_id: str,
    first_line: int,
    n_lines: int,
    max_line_bytes: int,
) -> bool:
    import pyarrow.json as pj

    if piece.startswith(b"\xef\xbb\xbf"):
        piece = piece[3:]
    try:
        table = pj.read_json(
            pa.BufferReader(piece),
            read_options=pj.ReadOptions(block_size=max(4 << 20, 2 * max_line_bytes)),
            parse_options=pj.ParseOptions(
                explicit_schema=_CLEAN_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return False
    if table.num_rows != n_lines:
        return False  # blank or non-object lines were skipped: line numbers would not align
    lines = np.arange(first_line + 1, first_line + n_lines + 1)
    table = table.append_column("line", pa.array(lines))
    con.register("clean", table)
    try:
        inserted = con.execute(
            f"""
            INSERT INTO pairs
            SELECT ?, line,
                CASE WHEN query_id IS NULL THEN 'q-' || left(md5(query), 16)
                     ELSE trim(query_id) END,
                CASE WHEN doc_id IS NULL THEN 'd-' || left(md5(document), 16)
                     ELSE trim(doc_id) END,
                query, document, CAST(l_num AS INTEGER),
                CASE split_text {_SPLIT_CASES} END
            FROM ({_CLEAN_ROWS_SQL}) WHERE NOT ({_CLEAN_BAD})
            """,
            [dataset_id],
        ).fetchall()[0][0]
        if inserted != n_lines:  # some row needs a reason: the careful path gives it
            return False
        con.execute(
            "INSERT INTO staged_fields SELECT f, k, count(*) FROM ("
            " SELECT unnest([q_field, d_field, l_field]) AS f,"
            "        unnest(['query', 'document', 'label']) AS k"
            f" FROM ({_CLEAN_ROWS_SQL})) GROUP BY f, k"
        )
    finally:
        con.unregister("clean")
    return True


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _load(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    dataset_id: str,
    name: str,
    max_line_bytes: int,
    chunk_bytes: int,
    progress: ProgressFn | None,
    total: int,
) -> IngestReport:
    _reset_staged_fields(con)
    lines_read = blank = 0
    with open(path, "rb") as raw_fh:
        fh = gzip.open(raw_fh, "rb") if raw_fh.read(2) == b"\x1f\x8b" else raw_fh
        raw_fh.seek(0)

        def tick() -> None:
            if progress:
                progress(min(raw_fh.tell(), total), total)

        try:
            for chunk in _iter_chunks(fh, max_line_bytes, chunk_bytes, tick):
                chunk_tbl = _chunk_table(chunk)  # noqa: F841  (read by DuckDB by name)
                con.register("chunk", chunk_tbl)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE checked AS {_VALIDATE_SQL.replace('$max_line', str(max_line_bytes))}"  # noqa: E501
                )
                con.unregister("chunk")
                _recheck_suspicious(con)
                n, b = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE is_blank) FROM checked"
                ).fetchone()
                lines_read += n
                blank += b
                con.execute(
                    "INSERT INTO ingest_errors SELECT ?, line, err_field, err_message, "
                    f"left(coalesce(txt, ''), {RAW_KEPT_BYTES}) FROM checked "
                    "WHERE err_field IS NOT NULL",
                    [dataset_id],
                )
                con.execute(
                    "INSERT INTO pairs SELECT ?, line, query_id, doc_id, query, document, label, "
                    "split_hint FROM checked WHERE err_field IS NULL AND NOT is_blank",
                    [dataset_id],
                )
                con.execute(
                    "INSERT INTO staged_fields SELECT f, k, count(*) FROM ("
                    " SELECT unnest([q_field, d_field, l_field]) AS f,"
                    "        unnest(['query', 'document', 'label']) AS k"
                    " FROM checked WHERE err_field IS NULL AND NOT is_blank) GROUP BY f, k"
                )
        except (OSError, EOFError) as exc:
            raise IngestFormatError(f"{path}: cannot read the file: {exc}") from exc

    return _finish(con, dataset_id, name, lines_read, blank)


def _finish(
    con: duckdb.DuckDBPyConnection, dataset_id: str, name: str, lines_read: int, blank: int
) -> IngestReport:
    """Drop exact duplicate rows (keeping the first), count, and build the report."""
    n_rows, n_distinct_hashes = con.execute(
        "SELECT count(*), count(DISTINCT hash(query_id, doc_id, query, document, label,"
        " split_hint)) FROM pairs WHERE dataset_id = ?",
        [dataset_id],
    ).fetchall()[0]
    # all hashes distinct means all rows distinct; otherwise compare the rows themselves
    duplicates = 0 if n_rows == n_distinct_hashes else con.execute(
        """
        DELETE FROM pairs WHERE dataset_id = $ds AND line NOT IN (
            SELECT min(line) FROM pairs WHERE dataset_id = $ds
            GROUP BY query_id, doc_id, query, document, label, split_hint)
        """,
        {"ds": dataset_id},
    ).fetchone()[0]
    accepted, n_queries, n_docs, max_label, is_binary = con.execute(
        "SELECT count(*), count(DISTINCT query_id), count(DISTINCT doc_id),"
        " coalesce(max(label), 0), coalesce(bool_and(label IN (0, 1)), true)"
        " FROM pairs WHERE dataset_id = ?",
        [dataset_id],
    ).fetchone()
    errors_total = con.execute(
        "SELECT count(*) FROM ingest_errors WHERE dataset_id = ?", [dataset_id]
    ).fetchone()[0]
    errors = [
        IngestError(int(line), f, m)
        for line, f, m in con.execute(
            "SELECT line, field, message FROM ingest_errors WHERE dataset_id = ? ORDER BY line "
            f"LIMIT {ERRORS_IN_REPORT}",
            [dataset_id],
        ).fetchall()
    ]
    field_map: dict[str, list[str]] = {}
    for f, k in con.execute(
        "SELECT field, kind FROM staged_fields GROUP BY field, kind ORDER BY kind, sum(n) DESC"
    ).fetchall():
        field_map.setdefault(k, []).append(f)
    if accepted == 0:
        raise NothingAcceptedError(
            IngestReport(dataset_id, name, lines_read, 0, errors_total, duplicates, blank,
                         "unknown", errors, errors_total)
        )
    report = IngestReport(
        dataset_id=dataset_id,
        name=name,
        lines_read=lines_read,
        accepted=accepted,
        rejected=errors_total,
        duplicates=duplicates,
        blank=blank,
        label_scale="binary" if is_binary else "graded",
        errors=errors,
        errors_total=errors_total,
        n_queries=n_queries,
        n_docs=n_docs,
        max_label=int(max_label),
        field_map=field_map,
    )
    return report


def _recheck_suspicious(con: duckdb.DuckDBPyConnection) -> None:
    """Lines with NaN/Infinity tokens or trailing commas: let Python's strict parser decide."""
    rows = con.execute(
        "SELECT line, txt FROM checked WHERE suspicious OR (err_message = 'invalid JSON' "
        f"AND line IN (SELECT line FROM checked WHERE err_message = 'invalid JSON' "
        f"ORDER BY line LIMIT {DETAILED_JSON_ERRORS}))"
    ).fetchall()
    for line, txt in rows:
        problem = _strict_json_problem(txt)
        if problem:
            con.execute(
                "UPDATE checked SET err_field = 'line', err_message = ? WHERE line = ?",
                [problem, line],
            )


class NothingAcceptedError(ValueError):
    """No line of the file was valid: nothing is stored, the report says why."""

    def __init__(self, report: IngestReport):
        self.report = report
        first = "; ".join(f"line {e.line}: {e.field}: {e.message}" for e in report.errors[:3])
        super().__init__(
            f"no valid rows: {report.rejected} of {report.lines_read} lines rejected"
            + (f" (first: {first})" if first else "")
        )


def _existing_report(con: duckdb.DuckDBPyConnection, dataset_id: str) -> IngestReport:
    row = con.execute(
        "SELECT name, lines_read, accepted, rejected, duplicates, blank, label_scale, n_queries,"
        " field_map FROM datasets WHERE dataset_id = ?",
        [dataset_id],
    ).fetchone()
    errors = [
        IngestError(int(line), f, m)
        for line, f, m in con.execute(
            "SELECT line, field, message FROM ingest_errors WHERE dataset_id = ? ORDER BY line "
            f"LIMIT {ERRORS_IN_REPORT}",
            [dataset_id],
        ).fetchall()
    ]
    return IngestReport(
        dataset_id=dataset_id,
        name=row[0],
        lines_read=row[1],
        accepted=row[2],
        rejected=row[3],
        duplicates=row[4],
        blank=row[5],
        label_scale=row[6],
        errors=errors,
        errors_total=row[3],
        already_ingested=True,
        n_queries=row[7],
        field_map=json.loads(row[8] or "{}"),
    )
