#!/usr/bin/env python
"""Screenshots of portal pages as a given persona, with Debian's Chromium: for looking at pages as a person would.

    .venv/bin/python scripts/screenshot.py --base http://127.0.0.1:8000 --user developer --out var/shots / /audit/

Each URL becomes var/shots/<name>.png (full page).
"""

import argparse
import re
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="developer")
    parser.add_argument("--password", default="portal-demo")
    parser.add_argument("--out", default="var/shots")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--wait", type=float, default=0.5, help="seconds to wait after load (live pages)")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        if args.user:
            page.goto(args.base + "/login/")
            page.fill("input[name=username]", args.user)
            page.fill("input[name=password]", args.password)
            page.click("form button[type=submit], form input[type=submit]")
            page.wait_for_load_state("networkidle")
        for path in args.paths:
            page.goto(args.base + path)
            page.wait_for_timeout(int(args.wait * 1000))
            name = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"
            target = out / f"{args.user or 'anon'}-{name}.png"
            page.screenshot(path=str(target), full_page=True)
            print(target)
        browser.close()


if __name__ == "__main__":
    main()
