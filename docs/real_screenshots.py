"""The README's Train and Evaluate images from a REAL model's run (not the tiny test model).

`make screenshots` takes every walkthrough image from the browser journey, which trains the tiny
test model so the suite stays fast. Its curves say nothing about quality. This script points the
app at a workspace that holds a finished real run (e.g. the one `bench/quality.py --workspace DIR`
leaves: the bundled all-MiniLM-L6-v2 fine-tuned on the Cranfield demo) and photographs its Train
page (curves with the bar-to-beat lines and the verdict) and an evaluation of it against the
zero-shot bi-encoder and BM25 on the same validation queries.

  python docs/real_screenshots.py --workspace /tmp/q/a/ws [--run RUN_ID]
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import CHROMIUM, AppServer  # noqa: E402
from tests.browser.ui import goto, idle, select  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shot(page, path: Path, anchor=None) -> None:
    page.set_viewport_size({"width": 1400, "height": 1500})
    idle(page)
    if anchor is not None:
        anchor.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workspace", required=True, help="workspace holding a finished real run")
    p.add_argument("--run", help="run id (default: the Train page's first run)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    server = AppServer(Path(args.workspace).resolve(), _port()).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            try:
                _pages(page, server, args, out)
            except Exception:
                page.screenshot(path=str(out / "failed.png"), full_page=True)
                raise
            browser.close()
    finally:
        server.stop()
    return 0


def _pages(page, server, args, out: Path) -> None:
    page.goto(server.url)
    page.get_by_role("link", name="Train").first.wait_for()
    goto(page, "Train")
    if args.run:
        select(page, "Run", re.compile(re.escape(args.run)))
    verdict = page.get_by_text(re.compile(r" (beats|LOSES to) .* on ndcg@10", re.I)).first
    verdict.wait_for(timeout=60_000)
    _shot(page, out / "4-train.png", page.get_by_role("heading", name="Runs"))

    goto(page, "Evaluate")
    select(page, "Baselines (the first one is the headline comparison)",
           re.compile(r"^biencoder: "))
    page.keyboard.press("Escape")  # a multiselect's list stays open over the button
    idle(page)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_role("heading", name="Per query").wait_for(timeout=900_000)
    heading = page.get_by_role("heading", name=re.compile(r"checkpoint:\S+ vs "))
    _shot(page, out / "5-evaluate.png", heading)


if __name__ == "__main__":
    raise SystemExit(main())
