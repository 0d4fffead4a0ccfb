"""A real browser (Playwright + Debian's chromium) uploads a photo to the running app and sees the band and the
heatmap; the page is saved to docs/screenshot.png (the README shows it).

Needs ``apt-get install -y chromium`` (/usr/bin/chromium); skipped with that reason otherwise. Uses the bundled
model when dermo/assets holds one (so the screenshot shows the shipped model), else a tiny random test model.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_app import ROOT, free_port, start_app, stop_app, wait_ready
from tests.test_ood import make_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
pytestmark = pytest.mark.slow


def test_upload_shows_band_and_heatmap(tmp_path, tiny_data):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's browser with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright (python package) not installed")

    bundled = ROOT / "dermo" / "assets" / "config.json"
    model = bundled.parent if bundled.is_file() else make_tiny_model(tmp_path / "model")
    port = free_port()
    log = tmp_path / "app.log"
    proc = start_app(model, port, log)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(proc, url, log)
        photo = sorted((tiny_data / "images").glob("*.jpg"))[0]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run",
                      "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(url, wait_until="domcontentloaded")
                expect(page.get_by_text("triage aid, not a diagnosis").first).to_be_visible(timeout=60_000)
                page.locator("input[type=file]").first.set_input_files(str(photo))
                page.locator("img[src*='/file=']").first.wait_for(timeout=60_000)  # the preview is up
                page.get_by_role("button", name="Analyse photo").click()
                band = page.locator("#dh-band")
                expect(band).to_contain_text("risk", timeout=60_000)
                assert band.inner_text().split()[0] in ("Low", "Medium", "High")
                expect(page.get_by_text("Estimated probability that this lesion is malignant")).to_be_visible()
                heat = page.locator("#dh-heatmap img[src*='/file=']")
                expect(heat.first).to_be_visible(timeout=30_000)
                assert heat.first.evaluate("im => im.complete && im.naturalWidth > 0")
                expect(page.locator("#dh-heatmap-note")).to_contain_text("not an outline")  # how to read the map
                expect(page.get_by_role("button", name="Download result (PNG)")).to_be_visible()
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
    finally:
        stop_app(proc)
    assert SCREENSHOT.read_bytes()[:4] == b"\x89PNG"
