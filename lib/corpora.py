"""Document collections (corpora) for first-stage retrieval: add, list, look up, delete.

A corpus is a JSONL file of `{doc_id, text[, title]}` (or the distinct documents of a stored
dataset). The file is read in batches of lines, so memory stays bounded whatever its size; every
line ends up in exactly one bucket: accepted, rejected (line, field, reason; a repeated doc_id is
rejected, the first one kept) or blank, so `lines_read == accepted + rejected + blank`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from lib import db
from lib.datasets import resolve_dataset
from lib.workspace import Workspace, safe_name

BATCH_LINES = 50_000
ERRORS_IN_REPORT = 100
RAW_KEPT_BYTES = 10_000
MAX_LINE_BYTES = 1 << 20
ProgressFn = Callable[[int, int], None]


class CorpusNotFoundError(LookupError):
    pass


class CorpusFormatError(ValueError):
    """No line of the file is a valid document (or the file is not JSON Lines)."""


@dataclass
class CorpusError:
    line: int
    field: str
    message: str


@dataclass
class CorpusReport:
    corpus_id: str
    name: str
    source: str
    lines_read: int
    accepted: int
    rejected: int
    blank: int
    errors: list[CorpusError] = field(default_factory=list)
    already_added: bool = False

    def to_json(self) -> dict:
        out = asdict(self)
        out["errors"] = [asdict(e) for e in self.errors]
        return out


@dataclass(frozen=True)
class Corpus:
    corpus_id: str
    name: str
    source: str
    n_docs: int
    content_hash: str


def full_text(title: str | None, text: str) -> str:
    """What gets indexed and reranked: the title (when given) then the text."""
    return f"{title.strip()}. {text}" if title and title.strip() else text


# ---- reading ---------------------------------------------------------------------------------


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with _open(path) as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _id_value(obj: dict, key: str) -> tuple[str | None, str | None]:
    value = obj.get(key)
    if value is None:
        return None, f"missing field {key}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"{key} must be a string or integer, got {type(value).__name__}"
    text = str(value).strip()
    if not text:
        return None, f"{key} is blank"
    return text, None


def parse_line(raw: bytes) -> tuple[tuple[str, str | None, str] | None, str, str]:
    """One line -> ((doc_id, title, text), '', '') or (None, field, reason)."""
    if len(raw) > MAX_LINE_BYTES:
        return None, "line", f"line is {len(raw)} bytes, over the limit of {MAX_LINE_BYTES}"
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return None, "line", "line is not valid UTF-8"
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        return None, "line", f"invalid JSON: {msg}" + (f" at column {col}" if col else "")
    if not isinstance(obj, dict):
        return None, "line", f"not a JSON object (got {type(obj).__name__})"
    doc_id, problem = _id_value(obj, "doc_id")
    if problem:
        return None, "doc_id", problem
    text = obj.get("text", obj.get("document"))
    if not isinstance(text, str):
        got = "nothing" if text is None else type(text).__name__
        return None, "text", f"text must be a string, got {got}"
    if not text.strip():
        return None, "text", "text is blank"
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        return None, "title", f"title must be a string when given, got {type(title).__name__}"
    return (doc_id, title, full_text(title, text)), "", ""


def _batches(path: Path, batch_lines: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    with _open(path) as fh:
        for no, raw in enumerate(fh, start=1):
            if no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            batch.append((no, raw.rstrip(b"\r\n")))
            if len(batch) >= batch_lines:
                yield batch
                batch = []
    if batch:
        yield batch


# ---- storing ---------------------------------------------------------------------------------


def _choose_name(con: duckdb.DuckDBPyConnection, name: str | None, fallback: str) -> str:
    taken = {r[0] for r in con.execute("SELECT name FROM corpora").fetchall()}
    if name:
        chosen = safe_name(name)
        if chosen in taken:
            raise ValueError(f"a corpus named {chosen!r} already exists; choose another --name")
        return chosen
    base = safe_name("".join(c if c.isalnum() or c in "._-" else "-" for c in fallback)[:100]
                     .strip("-._") or "corpus")
    chosen, i = base, 2
    while chosen in taken:
        chosen, i = f"{base}-{i}", i + 1
    return chosen


def _existing(con: duckdb.DuckDBPyConnection, content_hash: str) -> CorpusReport | None:
    row = con.execute(
        "SELECT corpus_id, name, source, lines_read, accepted, rejected, blank FROM corpora "
        "WHERE content_hash = ?", [content_hash]).fetchone()
    if row is None:
        return None
    return CorpusReport(*row, errors=_errors(con, row[0]), already_added=True)


def _errors(con: duckdb.DuckDBPyConnection, corpus_id: str) -> list[CorpusError]:
    return [CorpusError(int(a), b, c) for a, b, c in con.execute(
        "SELECT line, field, message FROM corpus_errors WHERE corpus_id = ? ORDER BY line "
        f"LIMIT {ERRORS_IN_REPORT}", [corpus_id]).fetchall()]


def add_corpus(
    ws: Workspace, path: str | Path, name: str | None = None, *,
    progress: ProgressFn | None = None, batch_lines: int = BATCH_LINES,
) -> CorpusReport:
    """Validate and store a JSONL corpus, all or nothing; the same content is stored once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    content_hash = file_hash(path)
    corpus_id = "co-" + content_hash[:12]
    total = path.stat().st_size
    with db.connect(ws) as con:
        if (found := _existing(con, content_hash)) is not None:
            return found
        stem = path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        final = _choose_name(con, name, stem)
        con.execute(f"SET temp_directory = '{ws.cache_dir / 'duckdb_tmp'}'")
        con.execute("SET memory_limit = '768MB'")
        lines_read = blank = pos = bytes_done = 0
        with db.transaction(con):
            for batch in _batches(path, batch_lines):
                ok: dict[str, list] = {"pos": [], "doc_id": [], "title": [], "text": [],
                                       "line": []}
                bad: dict[str, list] = {"line": [], "field": [], "message": [], "raw": []}
                for no, raw in batch:
                    lines_read += 1
                    bytes_done += len(raw) + 1
                    if not raw.strip():
                        blank += 1
                        continue
                    row, fld, msg = parse_line(raw)
                    if row is None:
                        bad["line"].append(no)
                        bad["field"].append(fld)
                        bad["message"].append(msg)
                        bad["raw"].append(raw[:RAW_KEPT_BYTES].decode("utf-8", "replace"))
                        continue
                    for key, value in zip(("doc_id", "title", "text"), row, strict=True):
                        ok[key].append(value)
                    ok["pos"].append(pos)
                    ok["line"].append(no)
                    pos += 1
                _insert(con, corpus_id, ok, bad)
                if progress:
                    progress(min(bytes_done, total), total)  # gzip: uncompressed, capped
            rejected_dupes = _drop_repeated_ids(con, corpus_id)
            accepted, rejected = con.execute(
                "SELECT (SELECT count(*) FROM corpus_docs WHERE corpus_id = $c),"
                " (SELECT count(*) FROM corpus_errors WHERE corpus_id = $c)",
                {"c": corpus_id}).fetchone()
            if accepted == 0:
                errs = _errors(con, corpus_id)[:3]
                first = "; ".join(f"line {e.line}: {e.field}: {e.message}" for e in errs)
                raise CorpusFormatError(
                    f"{path}: no valid documents in {lines_read} lines: expected JSON Lines with "
                    "doc_id and text (and optionally title)" + (f" (first: {first})" if first
                                                                else ""))
            con.execute(
                "INSERT INTO corpora VALUES (?, ?, ?, ?, current_timestamp, ?, ?, ?, ?, ?)",
                [corpus_id, final, str(path), content_hash, lines_read, accepted, rejected,
                 blank, accepted])
            del rejected_dupes
            report = CorpusReport(corpus_id, final, str(path), lines_read, int(accepted),
                                  int(rejected), blank, _errors(con, corpus_id))
    if progress:
        progress(total, total)
    return report


def _insert(con: duckdb.DuckDBPyConnection, corpus_id: str, ok: dict, bad: dict) -> None:
    if ok["pos"]:
        docs_tbl = pa.table({
            "pos": pa.array(ok["pos"], pa.int64()), "doc_id": pa.array(ok["doc_id"], pa.string()),
            "title": pa.array(ok["title"], pa.string()), "text": pa.array(ok["text"], pa.string()),
            "line": pa.array(ok["line"], pa.int64())})
        con.register("docs_tbl", docs_tbl)
        con.execute("INSERT INTO corpus_docs SELECT ?, pos, doc_id, title, text, line "
                    "FROM docs_tbl", [corpus_id])
        con.unregister("docs_tbl")
    if bad["line"]:
        errs = pa.table({
            "line": pa.array(bad["line"], pa.int64()), "field": pa.array(bad["field"]),
            "message": pa.array(bad["message"]), "raw": pa.array(bad["raw"], pa.string())})
        con.register("errs", errs)
        con.execute("INSERT INTO corpus_errors SELECT ?, line, field, message, raw FROM errs",
                    [corpus_id])
        con.unregister("errs")


def _drop_repeated_ids(con: duckdb.DuckDBPyConnection, corpus_id: str) -> int:
    """A doc_id seen again is rejected (the first line wins); positions are renumbered 0..n-1."""
    dupes = con.execute(
        "SELECT count(*) FROM (SELECT doc_id FROM corpus_docs WHERE corpus_id = ? "
        "GROUP BY doc_id HAVING count(*) > 1)", [corpus_id]).fetchone()[0]
    if not dupes:
        return 0
    con.execute(
        """
        INSERT INTO corpus_errors
        SELECT $c, d.line, 'doc_id', 'doc_id ' || d.doc_id || ' already on line ' || f.first, NULL
        FROM corpus_docs d JOIN (SELECT doc_id, min(line) AS first FROM corpus_docs
                                 WHERE corpus_id = $c GROUP BY doc_id) f USING (doc_id)
        WHERE d.corpus_id = $c AND d.line > f.first
        """, {"c": corpus_id})
    n = con.execute(
        "DELETE FROM corpus_docs WHERE corpus_id = $c AND line NOT IN (SELECT min(line) FROM "
        "corpus_docs WHERE corpus_id = $c GROUP BY doc_id)", {"c": corpus_id}).fetchone()[0]
    con.execute(
        "UPDATE corpus_docs SET pos = r.new_pos FROM (SELECT line, row_number() OVER "
        "(ORDER BY line) - 1 AS new_pos FROM corpus_docs WHERE corpus_id = $c) r "
        "WHERE corpus_docs.corpus_id = $c AND corpus_docs.line = r.line", {"c": corpus_id})
    return int(n)


def corpus_from_dataset(ws: Workspace, dataset: str, name: str | None = None) -> CorpusReport:
    """The distinct documents of a stored dataset, as a corpus (one per doc_id, first line wins)."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        content_hash = "dataset:" + ds.dataset_id
        if (found := _existing(con, content_hash)) is not None:
            return found
        corpus_id = "co-" + hashlib.sha256(content_hash.encode()).hexdigest()[:12]
        final = _choose_name(con, name, f"{ds.name}-docs")
        with db.transaction(con):
            con.execute(
                """
                INSERT INTO corpus_docs
                SELECT $c, row_number() OVER (ORDER BY min(line)) - 1, doc_id, NULL,
                       arg_min(document, line), min(line)
                FROM pairs WHERE dataset_id = $d GROUP BY doc_id
                """, {"c": corpus_id, "d": ds.dataset_id})
            n = con.execute("SELECT count(*) FROM corpus_docs WHERE corpus_id = ?",
                            [corpus_id]).fetchone()[0]
            con.execute(
                "INSERT INTO corpora VALUES (?, ?, ?, ?, current_timestamp, ?, ?, 0, 0, ?)",
                [corpus_id, final, "dataset:" + ds.dataset_id, content_hash, n, n, n])
    return CorpusReport(corpus_id, final, "dataset:" + ds.dataset_id, int(n), int(n), 0, 0)


# ---- looking up ------------------------------------------------------------------------------


def resolve_corpus(con: duckdb.DuckDBPyConnection, id_or_name: str) -> Corpus:
    row = con.execute(
        "SELECT corpus_id, name, source, n_docs, content_hash FROM corpora "
        "WHERE corpus_id = ? OR name = ?", [id_or_name, id_or_name]).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT name FROM corpora ORDER BY name").fetchall()]
        raise CorpusNotFoundError(
            f"no corpus {id_or_name!r}; known: {', '.join(known) if known else 'none'} "
            "(add one with `reranker-studio corpus add FILE --name NAME`)")
    return Corpus(row[0], row[1], row[2], int(row[3]), row[4])


def get_corpus(ws: Workspace, id_or_name: str) -> Corpus:
    with db.connect(ws) as con:
        return resolve_corpus(con, id_or_name)


def list_corpora(ws: Workspace) -> pd.DataFrame:
    with db.connect(ws) as con:
        return con.execute(
            "SELECT corpus_id, name, source, n_docs, lines_read, rejected, created_at "
            "FROM corpora ORDER BY created_at").df()


def corpus_errors(ws: Workspace, id_or_name: str) -> pd.DataFrame:
    with db.connect(ws) as con:
        c = resolve_corpus(con, id_or_name)
        return con.execute("SELECT line, field, message, raw FROM corpus_errors "
                           "WHERE corpus_id = ? ORDER BY line", [c.corpus_id]).df()


def iter_texts(ws: Workspace, corpus: Corpus, batch: int = BATCH_LINES) -> Iterator[list[str]]:
    """The corpus texts in position order, a batch at a time (indexes are built from these)."""
    with db.connect(ws) as con:
        rel = con.sql("SELECT text FROM corpus_docs WHERE corpus_id = ? ORDER BY pos",
                      params=[corpus.corpus_id])
        for chunk in rel.to_arrow_reader(batch):
            yield chunk.column(0).to_pylist()


def docs_at(ws: Workspace, corpus: Corpus, positions) -> pd.DataFrame:
    """doc_id and text for the given index positions (any order; returned keyed by pos)."""
    import numpy as np

    wanted = pa.table({"pos": pa.array(np.unique(np.asarray(positions, dtype=np.int64)))})
    with db.connect(ws) as con:
        con.register("wanted", wanted)
        try:
            return con.execute(
                "SELECT d.pos, d.doc_id, d.text FROM corpus_docs d JOIN wanted w USING (pos) "
                "WHERE d.corpus_id = ? ORDER BY d.pos", [corpus.corpus_id]).df()
        finally:
            con.unregister("wanted")


def delete_corpus(ws: Workspace, id_or_name: str) -> Corpus:
    """Remove a corpus, its documents, errors and cached indexes (mined datasets stay)."""
    import shutil

    with db.connect(ws) as con:
        c = resolve_corpus(con, id_or_name)
        with db.transaction(con):
            for table in ("corpus_docs", "corpus_errors", "corpora"):
                con.execute(f"DELETE FROM {table} WHERE corpus_id = ?", [c.corpus_id])
    shutil.rmtree(index_dir(ws, c), ignore_errors=True)
    return c


def index_dir(ws: Workspace, corpus: Corpus) -> Path:
    return ws.cache_dir / "corpora" / corpus.corpus_id
