"""The built book in headless Chromium, with the network off.

Run by ``make browser-test`` (part of ``make test``) after ``make book``. Chromium is Debian's
package (``/usr/bin/chromium``, or ``$CHROMIUM``), driven by the ``playwright`` Python package
(``playwright install`` is not needed). Every request that is not a local file is recorded and
refused, and when this runs as root Chromium also runs in a namespace with no network at all.
Screenshots go to pytest's temporary folder, or to ``$GLANCING_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PAGE = HTML / "book" / "partial_convolution.html"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium_without_network(folder: Path) -> str:
    """Chromium itself, or (as root, with unshare) a wrapper running it with no network."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return CHROMIUM
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return CHROMIUM
    wrapper = folder / "chromium-no-network"
    wrapper.write_text(f'#!/bin/sh\nexec unshare -n -- "{CHROMIUM}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def _require_browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` "
                    "(`make test` does when run as root)")
    return pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def _browser(folder: Path):
    """A headless Chromium context with no network (see the module docstring)."""
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium_without_network(folder), headless=True, args=FLAGS)
        try:
            yield browser.new_context(viewport={"width": 1200, "height": 1500}, offline=True)
        finally:
            browser.close()


def _open(context, path: Path):
    """A new tab on ``path`` that refuses every non-file request, and its log."""
    log = {"console": [], "errors": [], "external": [], "failed": []}
    tab = context.new_page()

    def refuse_remote(route):
        if route.request.url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            log["external"].append(route.request.url)
            route.abort()

    tab.route("**/*", refuse_remote)
    tab.on("console", lambda message: log["console"].append((message.type, message.text)))
    tab.on("pageerror", lambda error: log["errors"].append(str(error)))
    tab.on("requestfailed", lambda request: log["failed"].append(request.url))
    tab.goto(path.as_uri(), wait_until="load")
    return tab, log


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One browser for the module (Playwright's sync API allows one at a time)."""
    _require_browser()
    folder = tmp_path_factory.mktemp("browser")
    screenshots = Path(os.environ.get("GLANCING_SCREENSHOTS") or folder)
    screenshots.mkdir(parents=True, exist_ok=True)
    with _browser(folder) as context:
        yield context, screenshots


@pytest.fixture(scope="module")
def page(browser):
    if not PAGE.is_file():
        pytest.skip(f"{PAGE.relative_to(ROOT)} is not built: run `make book` first "
                    "(`make test` does)")
    context, screenshots = browser
    tab, log = _open(context, PAGE)
    tab.wait_for_selector("mjx-container", timeout=30_000)
    tab.wait_for_selector(".widget-slider .noUi-handle", timeout=30_000)
    tab.wait_for_timeout(500)  # let MathJax finish the last equations
    yield tab, log, screenshots


def test_page_loads_nothing_from_the_network(page):
    _, log, _ = page
    assert not log["external"], f"the page requested remote resources: {log['external']}"
    assert not log["failed"], f"resources failed to load: {log['failed']}"


def test_math_is_typeset(page):
    tab, _, screenshots = page
    assert tab.locator("mjx-container").count() >= 20
    assert tab.locator("mjx-merror").count() == 0  # no TeX MathJax could not parse
    # Every math element of the page was replaced by MathJax output: no raw TeX is left.
    untypeset = tab.evaluate("""Array.from(document.querySelectorAll('div.math, span.math'))
        .filter(e => !e.querySelector('mjx-container')).length""")
    assert untypeset == 0
    first_equation = tab.locator("div.math").first
    first_equation.scroll_into_view_if_needed()
    tab.screenshot(path=str(screenshots / "book_partialconv_math.png"))


def test_figures_render(page):
    tab, _, _ = page
    figures = tab.evaluate("""Array.from(document.querySelectorAll('img'))
        .filter(i => i.src.includes('/_images/'))
        .map(i => [i.complete, i.naturalWidth])""")
    assert len(figures) >= 2, "the chapter's matplotlib figures are missing"
    assert all(complete and width > 0 for complete, width in figures), figures


VISIBLE_FRAME = """() => {
    const shown = Array.from(document.querySelectorAll('.widget-image'))
        .filter(e => e.offsetParent !== null);
    const captions = Array.from(document.querySelectorAll('.widget-html-content'))
        .filter(e => e.offsetParent !== null).map(e => e.textContent);
    return {count: shown.length, src: shown.map(e => e.src).join(),
            width: shown.map(e => e.naturalWidth).join(), caption: captions.join()};
}"""


def test_slider_changes_the_mask_picture_without_a_kernel(page):
    tab, _, screenshots = page
    sliders = tab.locator(".widget-slider")
    assert sliders.count() >= 2, "the interactive mask explorer is missing"
    before = tab.evaluate(VISIBLE_FRAME)
    assert before["count"] == 1 and before["width"] == "256", before
    assert "step 0" in before["caption"]

    step = tab.locator(".widget-slider", has_text="step").locator(".noUi-handle")
    step.focus()
    for _ in range(3):
        tab.keyboard.press("ArrowRight")
    tab.wait_for_timeout(300)
    after_step = tab.evaluate(VISIBLE_FRAME)
    assert after_step["count"] == 1
    assert after_step["src"] != before["src"], "moving the step slider did not change the picture"
    assert "step 3" in after_step["caption"]

    size = tab.locator(".widget-slider", has_text="patch").locator(".noUi-handle")
    size.focus()
    tab.keyboard.press("ArrowRight")
    tab.wait_for_timeout(300)
    after_size = tab.evaluate(VISIBLE_FRAME)
    assert after_size["src"] != after_step["src"], "the patch-size slider did not change it"
    assert "step 3" in after_size["caption"] and after_size["caption"] != after_step["caption"]
    sliders.first.scroll_into_view_if_needed()
    tab.screenshot(path=str(screenshots / "book_partialconv_widget.png"))


def test_colab_button_opens_the_chapter_from_the_configured_repository(page):
    tab, _, _ = page
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    github = repository["url"].removeprefix("https://github.com/")
    expected = (f"https://colab.research.google.com/github/{github}/blob/"
                f"{repository['branch']}/book/partial_convolution.ipynb")
    hrefs = tab.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.href)")
    assert expected in hrefs


def test_page_logs_no_console_errors(page):
    _, log, _ = page
    errors = [text for kind, text in log["console"] if kind == "error"]
    assert not log["errors"], f"uncaught JavaScript errors: {log['errors']}"
    assert not errors, f"console errors: {errors}"


# -- every page of the book ------------------------------------------------------------------

def _toc_entries(node) -> list[str]:
    entries = []
    if isinstance(node, dict):
        entries += [node[key] for key in ("root", "file") if key in node]
        for value in node.values():
            if isinstance(value, (list, dict)):
                entries += _toc_entries(value)
    elif isinstance(node, list):
        for item in node:
            entries += _toc_entries(item)
    return entries


TOC_PAGES = _toc_entries(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def _has_widgets(entry: str) -> bool:
    notebook = ROOT / f"{entry}.ipynb"
    if not notebook.is_file():
        return False
    # a widget shown in an output (saved state alone can be left over from another run)
    cells = json.loads(notebook.read_text())["cells"]
    return any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
               for cell in cells for output in cell.get("outputs", []))


SLIDER = ".widget-slider .noUi-handle"
TOGGLE = ".widget-toggle-buttons button"
SHOWN = """() => {
    const visible = e => e.offsetParent !== null;
    const images = Array.from(document.querySelectorAll('.widget-image, .anim-state img, '
        + 'div[id^="_anim_img"] img, img[id^="_anim_img"]')).filter(visible).map(e => e.src);
    const texts = Array.from(document.querySelectorAll('.widget-html-content, .widget-label'))
        .filter(visible).map(e => e.textContent);
    return images.join() + '|' + texts.join();
}"""


@pytest.fixture(scope="module")
def site(browser):
    if not (HTML / "index.html").is_file():
        pytest.skip("the book is not built: run `make book` first (`make test` does)")
    return browser


@pytest.mark.parametrize("entry", TOC_PAGES)
def test_every_page_renders_offline_without_errors(site, entry):
    context, screenshots = site
    path = HTML / f"{entry}.html"
    assert path.is_file(), f"{entry} was not built"
    tab, log = _open(context, path)
    if tab.locator("div.math, span.math").count():
        # attached, not visible: some math sits in collapsed answers or widget labels
        tab.wait_for_selector("mjx-container", timeout=30_000, state="attached")
        tab.wait_for_timeout(300)
        untypeset = tab.evaluate("""Array.from(document.querySelectorAll('div.math, span.math'))
            .filter(e => !e.querySelector('mjx-container')).length""")
        assert untypeset == 0, f"{entry}: math left as raw TeX"
        assert tab.locator("mjx-merror").count() == 0, f"{entry}: TeX that MathJax rejected"
    images = tab.evaluate("""Array.from(document.querySelectorAll('article img'))
        .map(i => [i.src, i.complete && i.naturalWidth > 0])""")
    assert all(ok for _, ok in images), f"{entry}: images that did not load: {images}"
    if _has_widgets(entry):
        # the page's first control: a slider (moved two steps) or toggle buttons (another one
        # pressed); either must change what is shown, with no kernel
        tab.wait_for_selector(f"{SLIDER}, {TOGGLE}", timeout=30_000)
        tab.wait_for_timeout(300)
        before = tab.evaluate(SHOWN)
        if tab.locator(SLIDER).count():
            handle = tab.locator(SLIDER).first
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(2):
                tab.keyboard.press("ArrowRight")
        else:
            button = tab.locator(f"{TOGGLE}:not(.mod-active)").first
            button.scroll_into_view_if_needed()
            button.click()
        tab.wait_for_timeout(300)
        assert tab.evaluate(SHOWN) != before, f"{entry}: its first control changes nothing"
    tab.screenshot(path=str(screenshots / f"page_{Path(entry).name}.png"))
    errors = [text for kind, text in log["console"] if kind == "error"]
    assert not log["external"], f"{entry} requested remote resources: {log['external']}"
    assert not log["failed"], f"{entry}: resources failed to load: {log['failed']}"
    assert not log["errors"] and not errors, f"{entry}: {log['errors'] + errors}"
    tab.close()


def test_search_finds_a_chapter_offline(site):
    context, _ = site
    tab, _ = _open(context, HTML / "search.html")
    tab.goto((HTML / "search.html").as_uri() + "?q=convolution", wait_until="load")
    tab.wait_for_selector("ul.search li", timeout=30_000)
    assert tab.locator("ul.search li").count() >= 1
    tab.close()


def test_no_internal_link_is_broken():
    if not (HTML / "index.html").is_file():
        pytest.skip("the book is not built: run `make book` first (`make test` does)")
    broken = []
    pages = [HTML / "index.html", HTML / "search.html", HTML / "genindex.html",
             *(HTML / f"{entry}.html" for entry in TOC_PAGES)]
    for page in pages:
        for href in re.findall(r'href="([^"#?]+)', page.read_text(errors="replace")):
            if href.startswith(("http:", "https:", "mailto:", "javascript:", "data:")):
                continue
            if not (page.parent / href).exists():
                broken.append(f"{page.relative_to(HTML)} -> {href}")
    assert not broken, broken[:20]
