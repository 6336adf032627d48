"""The search page in a real browser: Playwright drives Debian's chromium headless against
The search page (`facematch web`) served by uvicorn on loopback (upload, results, mark two, refine, a new round, type a
name, mark, search by the name). .ci/run installs chromium; where the browser cannot start the
test skips saying why (test_web.py runs the same flow at HTTP level either way).

The README's screenshot comes from this flow over a real store:
    python tests/test_browser.py --store outputs/store --photo PHOTO --out figures/web.png
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FACES  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FACEMATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


class Served:
    """The page's app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def launch(playwright):
    """Headless chromium from the system, or pytest.skip saying why it cannot start."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (.ci/run installs Debian's: apt-get install chromium)")
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
    except Exception as exc:  # noqa: BLE001 - any launch failure is a reason to skip, given
        pytest.skip(f"chromium at {CHROMIUM} could not start: {str(exc).strip().splitlines()[0]}")


def card_names(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.name)")


def drive(page, url: str, photo: Path, person: str, screenshot: Path | None, truth=None) -> dict:
    """The flow a user follows; returns what it saw. Raises AssertionError where the page is wrong.
    truth(name) -> bool says which results are the person (default: the first card is, the second not).

    Every wait is a Playwright web-first assertion (expect(...)), which retries until the page
    agrees or its timeout passes: a page that is re-rendering is never read half-built."""
    from playwright.sync_api import expect

    page.goto(url)
    page.set_input_files("#upload", str(photo))
    page.click("#search-button")
    expect(page.locator("#round")).to_have_text("Round 1")
    expect(page.locator("#query-crop")).to_have_js_property("complete", True)
    assert page.locator("#query-crop").evaluate("img => img.naturalWidth") > 0
    expect(page.locator(".card").first).to_be_visible()
    first = card_names(page)
    assert first and all(re.search(r"distance \d\.\d{3}", t) for t in page.locator(".card .dist").all_inner_texts())

    # Mark two: the page's script sends each mark and colours the card.
    cards = page.locator(".card")
    good = next((i for i, n in enumerate(first) if truth(n)), 0) if truth else 0
    bad = next((i for i, n in enumerate(first) if not truth(n)), 1) if truth else 1
    cards.nth(good).locator("input[value=relevant]").check()
    cards.nth(bad).locator("input[value=irrelevant]").check()
    expect(cards.nth(good)).to_have_class(re.compile(r"(^|\s)relevant(\s|$)"))
    expect(cards.nth(bad)).to_have_class(re.compile(r"(^|\s)irrelevant(\s|$)"))
    expect(page.locator("#marked")).to_have_text(re.compile(r"^1 marked relevant, 1 irrelevant"))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    page.select_option("#method", "rocchio")
    page.click("#refine")
    expect(page.locator("#round")).to_have_text("Round 2")
    expect(page.locator("#counts")).to_contain_text("1 marked relevant, 1 irrelevant")
    second = card_names(page)
    assert second and not set(second) & set(first), (first, second)

    # Type a name, mark a result as that person, learn it.
    good = next((i for i, n in enumerate(second) if truth(n)), 0) if truth else 0
    page.locator(".card").nth(good).locator("input[value=relevant]").check()
    expect(page.locator("#marked")).to_have_text(re.compile(r"^2 marked relevant"))
    page.fill("#person", person)
    page.click("#learn")
    expect(page.get_by_text(f"learned '{person}' from 2 more photos")).to_be_visible()

    # Search by the name.
    page.fill("#name-search", person)
    page.click("#name-search-button")
    expect(page.get_by_text(f"the learned name '{person}'")).to_be_visible()
    expect(page.locator("#round")).to_have_text("Round 1")
    by_name = card_names(page)
    assert by_name
    return {"first": first, "second": second, "by_name": by_name}


@pytest.mark.parametrize("which", ["best_store", "fused_store"])
def test_the_page_in_a_browser_on_the_store_make_serve_builds_and_on_a_fusion(tmp_path, which, request):
    """The flow on config/best.yaml's model as `make serve` builds it (conftest.best_store) and on a fusion's store
    (conftest.fused_store), and /docs drawn offline with its operations listed."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from playwright.sync_api import expect

    from cli import web
    from test_web import web_cfg

    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)  # first: a browser that cannot start skips before any work
        try:
            root = Path(shutil.copytree(request.getfixturevalue(which), tmp_path / "store"))
            app = web.app_for(root, web_cfg("web.allowed_hosts=[127.0.0.1]"))
            served = Served(app)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                seen = drive(page, served.url, FACES / "one_face.jpg", "John Doe", tmp_path / "web.png")
                if which == "fused_store":
                    expect(page.locator("header .meta")).to_contain_text("2 networks fused")
                failures = []
                page.on("pageerror", lambda exc: failures.append(str(exc)))
                page.goto(served.url + "/docs")
                expect(page.locator(".opblock-summary-path", has_text="/api/search").first).to_be_visible()
                expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
                assert not failures, failures
            finally:
                served.stop()
                app.state.web.close()
        finally:
            browser.close()
    assert (tmp_path / "web.png").stat().st_size > 10_000
    from pipeline.store import GalleryStore

    store = GalleryStore.open(root)
    assert store.learned_names() == ["John Doe"] and store.name_marks("John Doe") == 2
    assert seen["by_name"] == store.search_name("John Doe", 4)[1]


def main(argv: list[str] | None = None) -> int:
    """The flow over a real store, for the README's screenshot (the store is copied, not changed)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--photo", required=True, type=Path)
    parser.add_argument("--person", default="Ari Fleischer")
    parser.add_argument("--out", type=Path, default=Path("figures/web.png"))
    parser.add_argument("--hold-out", action="store_true",
                        help="remove the photo (by its file name) from the copied store first: the page then "
                             "searches for the person, not for the same file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. web.k=8")
    args = parser.parse_args(argv)
    from cli import web
    from test_web import web_cfg

    out, photo = args.out.resolve(), args.photo.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(args.store, Path(tmp) / Path(args.store).name)
        if args.hold_out:
            from pipeline.store import GalleryStore

            store = GalleryStore.open(Path(tmp) / Path(args.store).name)
            store.remove([photo.name])
            store.conn.close()
        os.chdir(tmp)  # the page shows the store's folder as given: its name, not the copy's path
        app = web.app_for(Path(args.store).name, web_cfg(*args.overrides, base=()))
        served = Served(app)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                who = args.person.replace(" ", "_")
                print(drive(page, served.url, photo, args.person, out, lambda n: n.startswith(who)))
                browser.close()
        finally:
            served.stop()
            app.state.web.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
