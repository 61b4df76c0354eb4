"""Screenshot of `srfeat serve` with a result, for the README: `python3 scripts/web_screenshot.py docs/serve.png`.

Starts the server (`srfeat serve --no-browser`), uploads a crop of scikit-image's `astronaut`
through the page in headless Chromium (Debian's `chromium`), waits for the result, puts the
before/after split a little left of the middle and saves the page.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright
from skimage import data

# Headless, and quiet: without the background-networking switches Chromium keeps calling home.
# tests/test_web.py launches Chromium with the same list.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot of srfeat serve with a result, for the README.")
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--model", default="gan", choices=("default", "gan"), help="detail setting (default: gan)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default: /usr/bin/chromium)")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        match = re.search(r"http://\S+/", server.stdout.readline())
        if match is None:
            sys.exit("srfeat serve did not start")
        with tempfile.TemporaryDirectory() as folder:
            photo = Path(folder) / "astronaut.png"
            Image.fromarray(data.astronaut()[20:180, 140:300]).save(photo)  # the face, 160x160
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(match.group(0))
                page.wait_for_selector("body[data-ready='1']")
                page.check(f"input[name='model'][value='{args.model}']")
                page.set_input_files("#files", str(photo))
                card = page.locator("#jobs li", has_text="astronaut.png")
                expect(card).to_have_attribute("data-state", "done", timeout=600_000)
                page.wait_for_function("() => document.getElementById('after').naturalWidth === 640")
                page.wait_for_function("() => document.getElementById('before').naturalWidth === 160")
                frame = page.locator("#frame").bounding_box()
                grip = page.locator("#split .grip").bounding_box()
                assert frame is not None and grip is not None
                page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
                page.mouse.down()
                page.mouse.move(frame["x"] + frame["width"] * 0.45, grip["y"] + grip["height"] / 2, steps=4)
                page.mouse.up()
                page.mouse.move(0, 0)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
