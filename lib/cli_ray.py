"""`reranker-studio ray show|set|clear|check`: the workspace's Ray cluster (lib.ray_backend).

The address is the cluster's dashboard (the Ray Jobs API), e.g. http://HEAD:8265. `check`
connects, reports nodes, resources and token authentication, and runs the shared-storage probe.
"""

from __future__ import annotations

import argparse

from lib import ray_backend
from lib.cli import print_json
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ray", parents=[common],
                       help="training and large scoring on a Ray cluster: show/set/clear/check")
    p.add_argument("action", choices=["show", "set", "clear", "check"])
    p.add_argument("address", nargs="?", help="for set: the dashboard address, http://HEAD:8265")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="for set: accept a cluster without token authentication (private "
                   "networks only: the Jobs API runs any command it is given)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ray)


def _describe(s: ray_backend.RaySettings) -> dict:
    return {"address": s.address, "source": s.source,
            "allow_unauthenticated": s.allow_unauthenticated}


def cmd_ray(args, ws: Workspace) -> int:
    if args.action == "set":
        if not args.address:
            raise ValueError("ray set: give the cluster's dashboard address, e.g. "
                             "http://HEAD:8265")
        out = _describe(ray_backend.save_settings(ws, args.address, args.allow_unauthenticated))
    elif args.action == "clear":
        out = _describe(ray_backend.save_settings(ws, None))
    elif args.action == "show":
        out = _describe(ray_backend.settings(ws))
    else:
        out = ray_backend.check(ws)
    if args.json:
        print_json(out)
        return 0
    if args.action == "check":
        print(f"Ray cluster {out['address']} ({out['source']}): reachable, token "
              f"authentication {'on' if out['token_auth'] else 'OFF (allowed explicitly)'}")
        for n in out["nodes"]:
            res = {k: v for k, v in n["resources"].items() if k in ("CPU", "GPU", "memory")}
            print(f"  node {n['ip']} ({n['host']}): {res}, sees {out['runs_dir']}")
        print(f"shared storage: every node sees {out['runs_dir']}")
    elif out["address"]:
        print(f"Ray cluster: {out['address']} (from {out['source']})"
              + (", unauthenticated allowed" if out["allow_unauthenticated"] else ""))
    else:
        print("no Ray cluster: training runs on this machine")
    return 0
