"""Build the bundled demo dataset from the Cranfield 1400 test collection.

The demo dataset lets a new user try Reranker Studio without bringing their own data. It is built
once from the raw Cranfield files (see ``data/build_cranfield.py``) and shipped as
``data/cranfield.jsonl``; the functions here are pure so that the build is reproducible
byte for byte and testable against the raw files.

Raw-format notes (the collection is old and has quirks the parsers deal with on purpose):

* all files use CRLF line endings, and ``cranqrel`` has no newline after its last line;
* ``cranqrel`` refers to queries by their POSITION in ``cran.qry`` (1..225), not by their
  ``.I`` value, which skips numbers (001, 002, 004, 008, ...);
* every query has one ``-1`` qrel line whose meaning is undocumented; it is not a grade;
* documents 471 and 995 are empty (995 is nevertheless judged for one query);
* a few abstracts (240, 576, 578) contain stray ``.A``/``.B``/``.W`` lines in the middle of
  the text, so a field marker is only honoured while the fields are still in their normal
  ``.T .A .B .W`` order; once inside ``.W`` the abstract runs to the next ``.I`` and stray
  marker lines are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import bm25s
import numpy as np

DEMO_DATASET_PATH: Path = Path(__file__).resolve().parent.parent / "data" / "cranfield.jsonl"
DEMO_DATASET_NAME = "cranfield-demo"

ROW_KEYS: tuple[str, ...] = ("query_id", "query", "doc_id", "document", "label")
UNDOCUMENTED_CODE = -1
VALID_CODES: frozenset[int] = frozenset({1, 2, 3, 4})

_FIELD_RE = re.compile(r"^\.([A-Z])(?:\s+(.*))?$")
_DOC_FIELDS: dict[str, str] = {"T": "title", "A": "authors", "B": "bib", "W": "abstract"}


def normalize_text(lines: Iterable[str]) -> str:
    """Join raw lines and collapse all whitespace, so wrapping in the source never leaks out."""
    return " ".join(" ".join(lines).split())


def _read_lines(path: str | Path) -> list[str]:
    """Read a raw Cranfield file; ``splitlines`` copes with CRLF and a missing final newline."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def parse_documents(path: str | Path) -> dict[str, dict]:
    """Parse ``cran.all.1400`` into ``{doc_id: {"title", "text"}}``; ``text`` is the abstract.

    Doc ids are the ``.I`` values as canonical decimal strings ("1".."1400"). Empty documents
    are kept (with empty strings) so that callers can see and decide what to skip.
    """
    docs: dict[str, dict] = {}
    current: str | None = None
    fields: dict[str, list[str]] = {}
    field: str | None = None

    def flush() -> None:
        if current is not None:
            docs[current] = {
                "title": normalize_text(fields["title"]),
                "text": normalize_text(fields["abstract"]),
            }

    for lineno, line in enumerate(_read_lines(path), start=1):
        match = _FIELD_RE.match(line.rstrip())
        marker = match.group(1) if match else None
        if marker == "I":
            flush()
            doc_id = str(int(match.group(2)))
            if doc_id in docs:
                raise ValueError(f"{path}:{lineno}: duplicate document id {doc_id}")
            current, field = doc_id, None
            fields = {name: [] for name in _DOC_FIELDS.values()}
            continue
        if current is None:
            if line.strip():
                raise ValueError(f"{path}:{lineno}: text before the first .I record")
            continue
        if marker in _DOC_FIELDS and field != "abstract":
            # Honour markers only until the abstract starts: .W is always the last field, and
            # some abstracts contain stray marker lines that must not split the text.
            field = _DOC_FIELDS[marker]
            if match.group(2):
                fields[field].append(match.group(2))
            continue
        if marker in _DOC_FIELDS:
            continue  # stray marker inside the abstract: drop the marker line itself
        if field is None:
            if line.strip():
                raise ValueError(f"{path}:{lineno}: text outside any field in doc {current}")
            continue
        fields[field].append(line)
    flush()
    return docs


def parse_queries(path: str | Path) -> list[dict]:
    """Parse ``cran.qry`` into position-ordered ``{"position", "qid_raw", "text"}`` dicts.

    ``position`` (1-based order in the file) is what ``cranqrel`` uses; ``qid_raw`` keeps the
    non-consecutive ``.I`` value only for traceability.
    """
    queries: list[dict] = []
    text_lines: list[str] = []
    qid_raw: str | None = None
    in_text = False

    def flush() -> None:
        if qid_raw is not None:
            text = normalize_text(text_lines)
            queries.append({"position": len(queries) + 1, "qid_raw": qid_raw, "text": text})

    for lineno, line in enumerate(_read_lines(path), start=1):
        match = _FIELD_RE.match(line.rstrip())
        marker = match.group(1) if match else None
        if marker == "I":
            flush()
            qid_raw, text_lines, in_text = (match.group(2) or "").strip(), [], False
            if not qid_raw:
                raise ValueError(f"{path}:{lineno}: .I without an id")
        elif marker == "W" and qid_raw is not None and not in_text:
            in_text = True
            if match.group(2):
                text_lines.append(match.group(2))
        elif in_text:
            text_lines.append(line)
        elif line.strip():
            raise ValueError(f"{path}:{lineno}: unexpected line outside a query's .W field")
    flush()
    return queries


def parse_qrels(path: str | Path, keep_undocumented: bool = False) -> list[tuple[int, str, int]]:
    """Parse ``cranqrel`` into ``(query_position, doc_id, code)`` tuples in file order.

    Code ``-1`` lines are dropped by default because their meaning is undocumented; pass
    ``keep_undocumented=True`` to see them (the builder uses them to keep such documents
    out of the hard negatives, since their relevance is unknown).
    """
    qrels: list[tuple[int, str, int]] = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 columns, got {line!r}")
        try:
            position, doc_num, code = (int(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: non-integer column in {line!r}") from exc
        if code == UNDOCUMENTED_CODE:
            if keep_undocumented:
                qrels.append((position, str(doc_num), code))
            continue
        if code not in VALID_CODES:
            raise ValueError(f"{path}:{lineno}: unknown relevance code {code}")
        qrels.append((position, str(doc_num), code))
    return qrels


def document_text(doc: dict) -> str:
    """Text shown to the reranker: the abstract (which repeats the title), else the title."""
    return doc["text"] or doc["title"]


def _bm25_rankings(
    doc_ids: list[str], doc_texts: list[str], query_texts: list[str]
) -> list[list[str]]:
    """Rank every indexed document for every query with BM25 (bm25s, English stopwords).

    Uses full score vectors plus an explicit tie-break on corpus order instead of
    ``retrieve`` (whose top-k selection does not promise a stable order among ties), so the
    hard negatives are deterministic.
    """
    corpus_tokens = bm25s.tokenize(doc_texts, stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(
        query_texts, stopwords="en", return_ids=False, show_progress=False
    )
    corpus_order = np.arange(len(doc_ids))
    rankings: list[list[str]] = []
    for tokens in query_tokens:
        if tokens:
            scores = np.asarray(retriever.get_scores(tokens), dtype=np.float64)
        else:
            scores = np.zeros(len(doc_ids))
        order = np.lexsort((corpus_order, -scores))  # last key is primary: score desc
        rankings.append([doc_ids[i] for i in order if scores[i] > 0])
    return rankings


def build_cranfield_rows(cranfield_dir: str | Path, negatives_per_query: int = 10) -> list[dict]:
    """Turn the raw Cranfield files into labelled (query, document) rows for training.

    Judged pairs get ``label = 5 - code`` (4 = complete answer .. 1 = minimum interest); each
    query also gets the ``negatives_per_query`` best BM25 documents that are not judged for it
    as label-0 hard negatives, which is what makes the demo a reranking task rather than
    an easy classification one.
    """
    if negatives_per_query < 0:
        raise ValueError("negatives_per_query must be >= 0")
    cranfield_dir = Path(cranfield_dir)
    docs = parse_documents(cranfield_dir / "cran.all.1400")
    queries = parse_queries(cranfield_dir / "cran.qry")
    all_qrels = parse_qrels(cranfield_dir / "cranqrel", keep_undocumented=True)

    texts = {doc_id: document_text(doc) for doc_id, doc in docs.items()}
    usable = sorted((d for d, t in texts.items() if t), key=int)  # empty docs never emitted

    best_label: dict[int, dict[str, int]] = {q["position"]: {} for q in queries}
    excluded: dict[int, set[str]] = {q["position"]: set() for q in queries}
    for position, doc_id, code in all_qrels:
        if position not in best_label:
            raise ValueError(f"qrel refers to query position {position}, not in cran.qry")
        if doc_id not in docs:
            raise ValueError(f"qrel refers to unknown document {doc_id}")
        excluded[position].add(doc_id)
        if code == UNDOCUMENTED_CODE or not texts[doc_id]:
            continue
        label = 5 - code
        judged = best_label[position]
        judged[doc_id] = max(label, judged.get(doc_id, label))

    rankings = (
        _bm25_rankings(usable, [texts[d] for d in usable], [q["text"] for q in queries])
        if negatives_per_query
        else [[] for _ in queries]
    )

    rows: list[dict] = []
    for query, ranking in zip(queries, rankings, strict=True):
        position = query["position"]
        query_id = f"cran-q{position:03d}"

        def row(doc_id: str, label: int, query_id: str = query_id, text: str = query["text"]):
            return {
                "query_id": query_id,
                "query": text,
                "doc_id": f"cran-d{int(doc_id):04d}",
                "document": texts[doc_id],
                "label": label,
            }

        judged = best_label[position]
        for doc_id in sorted(judged, key=lambda d: (-judged[d], int(d))):
            rows.append(row(doc_id, judged[doc_id]))
        negatives = [d for d in ranking if d not in excluded[position]][:negatives_per_query]
        if len(negatives) < negatives_per_query:
            raise ValueError(
                f"query {query_id}: only {len(negatives)} unjudged BM25 matches, "
                f"{negatives_per_query} negatives requested"
            )
        rows.extend(row(doc_id, 0) for doc_id in negatives)
    return rows


def write_jsonl(rows: Iterable[dict], path: str | Path) -> None:
    """Write rows as compact UTF-8 JSON lines with LF endings and a fixed key order.

    A fixed format (not whatever the platform defaults to) is what keeps rebuilds
    byte-identical, so the shipped file can be verified by checksum.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            ordered = {key: row[key] for key in ROW_KEYS}
            fh.write(json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n")
    tmp.replace(path)
