"""`reranker-studio` command line: one subcommand per step, each a thin caller of `lib`.

Every subcommand takes `--workspace DIR` (else $RERANKER_STUDIO_HOME, else ./workspace) and most
take `--json` for machine-readable output. Feature modules register their own subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
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
    "lib.cli_ray",
]


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        default=argparse.SUPPRESS,
        help="workspace directory (default: $RERANKER_STUDIO_HOME or ./workspace)",
    )
    common.add_argument(
        "--ray",
        default=argparse.SUPPRESS,
        metavar="ADDRESS",
        help="run training (and large scoring) on the Ray cluster whose dashboard is ADDRESS, "
        "e.g. http://HEAD:8265 (default: $RERANKER_STUDIO_RAY_ADDRESS, else the workspace's "
        "`ray set` setting, else local)",
    )
    common.add_argument(
        "--ray-allow-unauthenticated",
        action="store_true",
        default=argparse.SUPPRESS,
        help="submit to a Ray cluster without token authentication (private networks only)",
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


def _apply_ray_options(args: argparse.Namespace) -> None:
    """--ray / --ray-allow-unauthenticated for this command (and what it starts)."""
    from lib import ray_backend

    if getattr(args, "ray", None):
        os.environ[ray_backend.ENV_ADDRESS] = args.ray
    if getattr(args, "ray_allow_unauthenticated", False):
        os.environ[ray_backend.ENV_ALLOW] = "1"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ws = resolve_workspace(getattr(args, "workspace", None))
    _apply_ray_options(args)
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
