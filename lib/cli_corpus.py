"""Corpus subcommands: `corpus add|list|index|errors|delete`."""

from __future__ import annotations

import argparse
import sys

from lib import corpora, first_stage
from lib.cli import print_json, progress_printer
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("corpus", parents=[common],
                       help="document collections for retrieval, mining and evaluation")
    csub = p.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")

    a = csub.add_parser("add", parents=[common],
                        help="store a JSONL corpus (doc_id, text[, title])")
    a.add_argument("file", nargs="?", help="JSONL or .jsonl.gz, one document per line")
    a.add_argument("--from-dataset", metavar="DATASET",
                   help="use the distinct documents of a stored dataset instead of a file")
    a.add_argument("--name", help="corpus name (default: from the file or dataset name)")
    a.add_argument("--index", choices=["none", "bm25", "biencoder"], default="bm25",
                   help="first-stage index to build now (default bm25; others build on first use)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_add)

    ls = csub.add_parser("list", parents=[common], help="list corpora")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    ix = csub.add_parser("index", parents=[common], help="build (or reuse) a first-stage index")
    ix.add_argument("corpus")
    ix.add_argument("--retriever", default="bm25", help="bm25, biencoder or biencoder:MODEL")
    ix.add_argument("--json", action="store_true")
    ix.set_defaults(func=cmd_index)

    er = csub.add_parser("errors", parents=[common], help="a corpus's rejected lines as JSONL")
    er.add_argument("corpus")
    er.set_defaults(func=cmd_errors)

    de = csub.add_parser("delete", parents=[common], help="delete a corpus and its indexes")
    de.add_argument("corpus")
    de.set_defaults(func=cmd_delete)


def cmd_add(args, ws: Workspace) -> int:
    show = not args.json and sys.stderr.isatty()
    if bool(args.file) == bool(args.from_dataset):
        raise ValueError("give either a FILE or --from-dataset DATASET")
    if args.from_dataset:
        report = corpora.corpus_from_dataset(ws, args.from_dataset, args.name)
    else:
        report = corpora.add_corpus(ws, args.file, args.name,
                                    progress=progress_printer("reading", show))
    out = report.to_json()
    if args.index != "none":
        corpus = corpora.get_corpus(ws, report.corpus_id)
        first_stage.get_retriever(ws, corpus, args.index,
                                  progress_printer(f"indexing {args.index}", show))
        out["indexed"] = args.index
    if args.json:
        print_json(out)
        return 0
    if report.already_added:
        print(f"already added as corpus {report.name} ({report.corpus_id}); nothing new stored")
    print(f"corpus {report.name} ({report.corpus_id}): {report.lines_read} lines read = "
          f"{report.accepted} accepted + {report.rejected} rejected + {report.blank} blank")
    for e in report.errors[:20]:
        print(f"  line {e.line}: {e.field}: {e.message}")
    if report.rejected > 20:
        print(f"  ... see all: `reranker-studio corpus errors {report.name}`")
    return 0


def cmd_list(args, ws: Workspace) -> int:
    df = corpora.list_corpora(ws)
    if args.json:
        print_json(df.to_dict(orient="records"))
    elif df.empty:
        print("no corpora yet: `reranker-studio corpus add FILE --name NAME`")
    else:
        print(df[["name", "corpus_id", "n_docs", "rejected", "source"]].to_string(index=False))
    return 0


def cmd_index(args, ws: Workspace) -> int:
    corpus = corpora.get_corpus(ws, args.corpus)
    show = not args.json and sys.stderr.isatty()
    r = first_stage.get_retriever(ws, corpus, args.retriever,
                                  progress_printer(f"indexing {args.retriever}", show))
    if args.json:
        print_json({"corpus_id": corpus.corpus_id, "retriever": r.name, "n_docs": corpus.n_docs})
    else:
        print(f"{r.name} index of {corpus.name} ready ({corpus.n_docs:,} documents)")
    return 0


def cmd_errors(args, ws: Workspace) -> int:
    df = corpora.corpus_errors(ws, args.corpus)
    sys.stdout.write(df.to_json(orient="records", lines=True, force_ascii=False))
    return 0


def cmd_delete(args, ws: Workspace) -> int:
    c = corpora.delete_corpus(ws, args.corpus)
    print(f"deleted corpus {c.name}")
    return 0
