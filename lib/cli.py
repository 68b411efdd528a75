"""`reranker-studio` command line: one subcommand per step, each a thin caller of `lib`.

Every subcommand takes `--workspace DIR` (else $RERANKER_STUDIO_HOME, else ./workspace) and most
take `--json` for machine-readable output. Feature modules register their own subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable

from lib.workspace import Workspace, resolve_workspace

# Each module defines `register(subparsers, common: argparse.ArgumentParser) -> None` and sets
# `func(args, ws) -> int` as the default of each parser it adds.
COMMAND_MODULES = [
    "lib.cli_data",
    "lib.cli_admin",
    "lib.cli_checks",
    "lib.cli_train",
    "lib.cli_sweep",
    "lib.cli_evaluate",
    "lib.cli_corpus",
    "lib.cli_mine",
    "lib.cli_export",
    "lib.cli_noise",
]


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        default=argparse.SUPPRESS,
        help="workspace directory (default: $RERANKER_STUDIO_HOME or ./workspace)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="reranker-studio",
        description="Fine-tune a cross-encoder reranker on your own labelled data.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


def progress_printer(label: str, enabled: bool):
    """A one-line percentage on stderr (the CLI's progress bar)."""
    if not enabled:
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct != last[0]:
            last[0] = pct
            print(f"\r  {label} {pct:3d}%", end="", file=sys.stderr, flush=True)
            if pct == 100:
                print(file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ws = resolve_workspace(getattr(args, "workspace", None))
    func: Callable[[argparse.Namespace, Workspace], int] = args.func
    try:
        return int(func(args, ws) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, LookupError, FileNotFoundError, RuntimeError) as exc:
        if getattr(args, "json", False):
            print_json({"error": str(exc), "type": type(exc).__name__})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
