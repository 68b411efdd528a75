"""Admin subcommands: the optional password gate for a shared server."""

from __future__ import annotations

import argparse
import getpass
import os

from lib import auth
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "set-password", parents=[common],
        help="require a password in the web app (for a team server); --clear removes it",
    )
    p.add_argument("--clear", action="store_true", help="remove the password gate")
    p.add_argument(
        "--from-env", metavar="VAR",
        help="read the new password from this environment variable instead of a prompt",
    )
    p.add_argument("--print-hash", action="store_true",
                   help=f"print the hash (for ${auth.ENV_HASH}) instead of saving it")
    p.set_defaults(func=cmd_set_password)


def cmd_set_password(args, ws: Workspace) -> int:
    if args.clear:
        auth.save_password(ws, None)
        print("password gate removed")
        return 0
    if args.from_env:
        if args.from_env not in os.environ:
            raise ValueError(f"environment variable {args.from_env} is not set")
        password = os.environ[args.from_env]
    else:
        password = getpass.getpass("new password: ")
        if password != getpass.getpass("again: "):
            raise ValueError("the two passwords differ")
    if args.print_hash:
        print(auth.hash_password(password))
        return 0
    auth.save_password(ws, password)
    print(f"password gate on: hash saved in {ws.root / 'auth.json'}")
    return 0
