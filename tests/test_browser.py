"""A real browser (Playwright + Debian's chromium) uploads a photo to the running app and sees the band and the
heatmap, at a desktop size and at a phone's size. The desktop page is saved as a screenshot, to the test's own folder;
``DERMO_SCREENSHOT=docs/screenshot.png python -m pytest tests/test_browser.py -k band_and_heatmap`` refreshes the one
the README shows (a test run leaves the repository's files as they are).

Needs ``apt-get install -y chromium`` (/usr/bin/chromium); skipped with that reason otherwise. Uses the bundled
model when dermo/assets holds one (so the screenshot shows the shipped model), else a tiny random test model.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_app import ROOT, free_port, start_app, stop_app, wait_ready
from tests.test_ood import make_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.slow


def serve(tmp: Path, **env: str):
    """Start the app (the bundled model when there is one) and yield its URL."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's browser with `apt-get install -y chromium`")
    pytest.importorskip("playwright", reason="playwright (python package) not installed")
    bundled = ROOT / "dermo" / "assets" / "config.json"
    model = bundled.parent if bundled.is_file() else make_tiny_model(tmp / "model")
    port = free_port()
    log = tmp / "app.log"
    proc = start_app(model, port, log, **env)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(proc, url, log)
        yield url
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("browser_app"))


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def open_app(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url, wait_until="domcontentloaded")
    expect(page.get_by_text("triage aid, not a diagnosis").first).to_be_visible(timeout=60_000)


# WCAG contrast of an element's text against the first opaque background behind it (its own or an ancestor's)
CONTRAST_JS = """(sel) => {
  const rgba = (c) => c.match(/[0-9.]+/g).map(Number);
  const lum = (c) => { const [r, g, b] = rgba(c).slice(0, 3).map((v) => v / 255)
    .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const el = document.querySelector(sel);
  let node = el, bg = null;
  for (; node && !bg; node = node.parentElement) {
    const c = getComputedStyle(node).backgroundColor, a = rgba(c);
    if (a.length < 4 || a[3] >= 0.99) bg = c;
  }
  const [x, y] = [lum(getComputedStyle(el).color), lum(bg || 'rgb(255, 255, 255)')];
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
}"""


def upload(page, photo: Path) -> None:
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.locator("img[src*='/file=']").first.wait_for(timeout=60_000)  # the preview is up


def analyse(page, photo: Path):
    """Upload ``photo`` to the opened app and press Analyse; returns the band heading once it shows."""
    from playwright.sync_api import expect

    upload(page, photo)
    page.get_by_role("button", name="Analyse photo").click()
    band = page.locator("#dh-band")
    expect(band).to_contain_text("risk", timeout=60_000)
    assert band.inner_text().split()[0] in ("Low", "Medium", "High")
    return band


def test_upload_shows_band_and_heatmap(app_url, browser, tiny_data, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        open_app(page, app_url)
        analyse(page, sorted((tiny_data / "images").glob("*.jpg"))[0])
        expect(page.get_by_text("Estimated probability that this lesion is malignant")).to_be_visible()
        assert page.evaluate(CONTRAST_JS, "#dh-band") >= 4.5  # WCAG AA for text of any size
        heat = page.locator("#dh-heatmap img[src*='/file=']")
        expect(heat.first).to_be_visible(timeout=30_000)
        assert heat.first.evaluate("im => im.complete && im.naturalWidth > 0")
        expect(page.locator("#dh-heatmap-note")).to_contain_text("not an outline")  # how to read the map
        # each example's diagnosis is said (the shipped model calls the benign keratosis High)
        expect(page.get_by_text("their diagnoses, left to right: benign naevus, melanoma, benign keratosis")
               ).to_be_visible()
        expect(page.get_by_role("button", name="Download result (PNG)")).to_be_visible()
        page.set_viewport_size({"width": 1366, "height": 768})  # a laptop: verdict and download on the first screen
        page.evaluate("window.scrollTo(0, 0)")
        for sel in ("#dh-verdict", "#dh-download"):
            box = page.locator(sel).bounding_box()
            assert box and box["y"] + box["height"] <= 768, (sel, box)
        page.set_viewport_size({"width": 1200, "height": 900})
        shot = Path(os.environ.get("DERMO_SCREENSHOT") or tmp_path / "screenshot.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    from PIL import Image

    with Image.open(shot) as im:  # the whole page: 1200 px wide, taller than the 900 px viewport
        assert im.format == "PNG" and im.width == 1200 and im.height > 900


def test_phone_sees_the_verdict_without_scrolling_for_it(app_url, browser, tiny_data):
    """On a phone the two columns stack and the verdict lies below the photo, the button and the examples: the page
    must bring it into view when the analysis is done."""
    from playwright.sync_api import expect

    # 390 x 700: a phone's screen less the browser's own bars (the photo box is lower under 400 px)
    ctx = browser.new_context(viewport={"width": 390, "height": 700}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        open_app(page, app_url)
        # the verdict card itself (the page may still be laying out the examples above it: measured once, early)
        box = page.locator("#dh-verdict").bounding_box()
        assert box is not None and box["y"] > 700, "the result column no longer starts below a phone's first screen"
        band = analyse(page, sorted((tiny_data / "images").glob("*.jpg"))[0])
        expect(band).to_be_in_viewport(timeout=30_000)  # a busy CI machine scrolls late
    finally:
        ctx.close()


def test_a_small_phone_in_dark_mode(app_url, browser, tiny_data, tmp_path):
    """360x740 in dark mode: the disclaimer is readable (its text was the theme's near-white on its cream box),
    Analyse photo is on the first screen, the source buttons are touch-sized, a file that cannot be used has its
    message brought into view, the verdict is a live region with named pictures, and the saved card is named."""
    import re

    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True,
                              color_scheme="dark", accept_downloads=True)
    try:
        page = ctx.new_page()
        open_app(page, app_url + "?__theme=dark")
        colours = page.evaluate("""() => {
          const rgb = (c) => c.match(/[0-9.]+/g).slice(0, 3).map(Number).map((v) => v / 255)
            .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
          const lum = ([r, g, b]) => 0.2126 * r + 0.7152 * g + 0.0722 * b;
          const box = document.querySelector('.dh-disclaimer');
          const text = box.querySelector('strong') || box;
          const [a, b] = [lum(rgb(getComputedStyle(text).color)), lum(rgb(getComputedStyle(box).backgroundColor))];
          return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        }""")
        assert colours >= 7, colours  # WCAG AAA for body text
        expect(page.get_by_role("button", name="Analyse photo")).to_be_in_viewport()
        for name in ("Upload file", "Capture from camera"):
            box = page.locator(f"#dh-photo .source-selection button[aria-label='{name}']").bounding_box()
            assert box and box["width"] >= 44 and box["height"] >= 44, (name, box)
        assert page.locator("#dh-verdict").get_attribute("aria-live") == "polite"
        fake = tmp_path / "holiday.jpg"
        fake.write_text("not a picture")
        page.locator("input[type=file]").first.set_input_files(str(fake))
        expect(page.locator("#dh-error")).to_be_in_viewport(timeout=30_000)
        analyse(page, sorted((tiny_data / "images").glob("*.jpg"))[0])
        assert page.evaluate(CONTRAST_JS, "#dh-band") >= 4.5  # the band colours as text were 3.1-3.7:1 here
        expect(page.locator("#dh-heatmap img[alt*='Heatmap']").first).to_be_attached(timeout=30_000)
        with page.expect_download() as d:
            page.locator("#dh-download").click()
        assert re.fullmatch(r"dermohelper-result-\d{4}-\d\d-\d\d-\d{6}-UTC\.png", d.value.suggested_filename)
    finally:
        ctx.close()


def test_a_result_never_outlives_its_photo(app_url, browser, tiny_data, tmp_path):
    """Another photo, or a file that cannot be used, must not leave the last photo's verdict, heatmap and download
    on the page (someone could read it as theirs, or save it); the heatmap offers no share button."""
    from playwright.sync_api import expect

    first, second = sorted((tiny_data / "images").glob("*.jpg"))[:2]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        open_app(page, app_url)
        analyse(page, first)
        download = page.get_by_role("button", name="Download result (PNG)")
        expect(download).to_be_visible()
        heat = page.locator("#dh-heatmap")
        expect(heat.locator("img[src*='/file=']").first).to_be_visible(timeout=30_000)
        titles = heat.locator("button").evaluate_all("bs => bs.map(b => (b.title + ' ' + b.ariaLabel).toLowerCase())")
        assert not [t for t in titles if "share" in t], titles
        page.get_by_role("button", name="Remove Image").first.click()  # the photo removed: no result left
        expect(page.locator("#dh-band")).to_have_count(0, timeout=10_000)
        expect(download).to_be_hidden()
        analyse(page, first)
        upload(page, second)  # a new photo, not analysed yet: no result left either
        expect(page.locator("#dh-band")).to_have_count(0, timeout=10_000)
        expect(page.get_by_text("then press Analyse photo")).to_be_visible()
        expect(download).to_be_hidden()
        expect(heat.locator("img[src*='/file=']")).to_have_count(0)
        analyse(page, first)
        bad = tmp_path / "not_a_photo.jpg"
        bad.write_text("this is text, not a JPEG")
        page.locator("input[type=file]").first.set_input_files(str(bad))
        error = page.locator("#dh-error")  # said at once, before Analyse (the browser's preview of it is broken)
        expect(error).to_contain_text("could not be used", timeout=30_000)
        expect(error).to_contain_text("The file is not an image")  # dermo.imageio's message (Analyse gives the same)
        expect(page.locator("#dh-band")).to_have_count(0)
        expect(download).to_be_hidden()
        preview = page.locator("#dh-photo img")
        expect(preview).to_have_count(1)
        expect(preview).to_be_hidden()  # no broken-image frame in the photo box
        upload(page, second)  # the next photo is shown again
        expect(page.get_by_text("then press Analyse photo")).to_be_visible(timeout=30_000)
        expect(preview).to_be_visible()
    finally:
        page.close()


def test_an_expired_result_says_so(browser, tiny_data, tmp_path):
    """After DERMO_CACHE_TTL the server has deleted the result card: the page says it can no longer be
    downloaded, instead of a download that silently fails."""
    from playwright.sync_api import expect

    for url in serve(tmp_path, DERMO_CACHE_TTL="3"):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            open_app(page, url)
            analyse(page, sorted((tiny_data / "images").glob("*.jpg"))[0])
            expect(page.locator(".dh-card .dh-expired")).to_contain_text("no longer be downloaded",
                                                                        timeout=20_000)
            expect(page.get_by_text("within 1 minute ")).to_be_visible()  # kept 3 s, swept every 3 s
        finally:
            page.close()
