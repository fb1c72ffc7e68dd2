"""Every page of the built site, as a reader's browser shows it with no network.

For each page: every formula typeset by the MathJax the site ships, every image loaded, no error in
the console, no request leaving 127.0.0.1, every internal link and anchor resolving, the executed
notebook behind the download button; the search page finds the book's subject; and at 400 pixels
wide the page never scrolls sideways (wide tables and code scroll inside their own boxes).
"""

import re
import urllib.request
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# TeX that MathJax should have consumed: its delimiters, or a backslash command right after a dollar.
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$|\$\\[A-Za-z]|\\begin\{")
# Chromium asks every server for /favicon.ico by itself; no page of the site links to it.
BROWSER_OWN_REQUESTS = ("/favicon.ico",)


def test_the_site_has_the_book(pages):
    assert "index.html" in pages and "search.html" in pages
    assert any(page.startswith("book/") for page in pages), pages
    assert any(page.startswith("experiments/") for page in pages), pages


def test_every_formula_is_typeset(rendered, page):
    facts = rendered(page)
    if facts["formulas"]:
        assert facts["mathjax"] and facts["mathjax"].startswith("3."), f"MathJax did not run: {facts['mathjax']}"
    assert not facts["untypeset"], f"formulas left as TeX: {facts['untypeset'][:5]}"
    assert not facts["mathErrors"], facts["mathErrors"][:5]
    raw = [facts["text"][max(0, m.start() - 40) : m.end() + 40] for m in RAW_TEX.finditer(facts["text"])]
    assert not raw, f"raw TeX in the text: {raw[:5]}"


def test_mathjax_comes_from_the_site(rendered, base_url, site, page):
    source = (site / page).read_text(encoding="utf-8")
    assert not re.search(r"(https?:)?//[^\"'\s]*mathjax", source, re.IGNORECASE), "the page loads MathJax from a CDN"
    for script in rendered(page)["scripts"]:
        if "mathjax" in script.lower():
            assert script.startswith(base_url + "_static/mathjax/"), script


def test_no_request_leaves_the_machine(rendered, page):
    outside = [
        url
        for url in rendered(page)["requests"]
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert not outside, f"requests beyond 127.0.0.1: {outside}"


def test_every_image_loads(rendered, page):
    assert not rendered(page)["brokenImages"]


def test_no_console_errors(rendered, page):
    errors = [e for e in rendered(page)["console_errors"] if not any(own in e for own in BROWSER_OWN_REQUESTS)]
    assert not errors, "\n".join(errors)


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.anchors.add(value)


@cache
def anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.anchors)


def site_file(site: Path, url: str, base_url: str) -> Path:
    path = unquote(urlsplit(url).path)[len(urlsplit(base_url).path) :]
    return site / (path + "index.html" if path == "" or path.endswith("/") else path)


def test_internal_links_resolve(rendered, base_url, site, page):
    broken = []
    for url in rendered(page)["links"]:
        if not url.startswith(base_url):
            continue  # other sites (Binder, Colab, the repository) cannot be reached offline
        target = site_file(site, url, base_url)
        fragment = unquote(urlsplit(url).fragment)
        if not target.is_file():
            broken.append(f"{url}: no such file")
        elif fragment and target.suffix == ".html" and fragment not in anchors(target):
            broken.append(f"{url}: no anchor #{fragment} in {target.relative_to(site)}")
    assert not broken, "\n".join(broken)


def test_download_button_gives_the_executed_notebook(rendered, page):
    facts = rendered(page)
    if not facts["isNotebook"]:
        return
    assert facts["ipynbDownloads"], "a notebook page without a .ipynb download"
    for url in facts["ipynbDownloads"]:
        with urllib.request.urlopen(url, timeout=30) as response:
            nb = nbformat.reads(response.read().decode("utf-8"), as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code, f"{url} has no code cells"
        assert all(cell.execution_count for cell in code), f"{url} is not the executed notebook"


def test_search_finds_wasserstein(browser, base_url):
    browser.get(base_url + "search.html?q=Wasserstein")
    results = WebDriverWait(browser, 30).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "ul.search li a"))
    pages = {urlsplit(a.get_attribute("href")).path for a in results}
    assert any(path.startswith("/book/") for path in pages), pages


def test_no_sideways_scrolling_at_400_pixels(narrow, page):
    overflow = narrow(page)
    assert overflow["page"] <= overflow["width"] and overflow["body"] <= overflow["width"], overflow
