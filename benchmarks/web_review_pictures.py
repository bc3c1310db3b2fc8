"""Pictures of the web review for docs/review.md, and how long the server takes to start.

Builds the tests' review folder (phantom cohort, entropy maps, `swinbob solf run`), starts
`swinbob review` as a user does, drives Debian's Chromium with Playwright, and prints the seconds
from start to the ready line and to the first rendered slice view.

    .venv/bin/python benchmarks/web_review_pictures.py [--out docs]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "Python"))

import test_web_review as web  # noqa: E402  (the tests' folder builder and server helpers)


def shrink(path: Path, width: int = 1100) -> None:
    """A docs-sized PNG: at most ``width`` pixels wide, 128 colours."""
    from PIL import Image

    picture = Image.open(path).convert("RGB")
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
    picture.quantize(128).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as scratch:
        folder = web.build_review_folder(Path(scratch))
        started = time.monotonic()
        process, url = web.start_server(folder, "--port", str(web.free_port()), "--reviewer", "ab")
        ready = time.monotonic() - started
        try:
            with web.playwright_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=web.CHROMIUM, args=["--no-sandbox"])
                opened = time.monotonic()
                context, page = web.open_page(browser, url, "ab")
                web.wait_for_scan(page, 3)
                shown = time.monotonic() - opened
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "review_web.png"))
                page.get_by_role("button", name="Paint").click()
                page.wait_for_timeout(1500)
                page.locator("#swb-views img").nth(3).screenshot(path=str(out / "review_web_axial.png"))
                context.close()
                browser.close()
        finally:
            web.stop_server(process)
    for name in ("review_web.png", "review_web_axial.png"):
        shrink(out / name)
    print(f"server start to ready line: {ready:.1f} s; page open to scan shown: {shown:.1f} s")
    print(f"pictures: {out / 'review_web.png'}, {out / 'review_web_axial.png'}")


if __name__ == "__main__":
    main()
