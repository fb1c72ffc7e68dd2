"""The built site (_build/html) served on 127.0.0.1 and opened in headless Chromium.

Run by ``make test-site`` only (tests/conftest.py keeps ``pytest tests`` out of this folder): it
checks whatever site ``make test`` (test scale) or ``make book`` (book scale) last built. Chromium
runs with no network, so a formula that needs anything beyond the site cannot render.
"""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
# A headless browser on a machine without a display or a network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE, NARROW, HEIGHT = 1280, 400, 900

# True once the page is loaded and is not a redirect (the site's index.html forwards to the first chapter).
ARRIVED = """
return document.readyState === "complete" && !document.querySelector('meta[http-equiv="refresh" i]');
"""

# Resolves once MathJax has typeset the page (null on a page that does not load MathJax).
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (![...document.scripts].some((script) => /mathjax/i.test(script.src))) return done(null);
const start = Date.now();
(function wait() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done(MathJax.version), (error) => done(`MathJax failed: ${error}`));
  } else if (Date.now() - start > 30000) {
    done("MathJax never started");
  } else {
    setTimeout(wait, 50);
  }
})();
"""

# What a reader sees, once every image has loaded or failed.
PAGE_FACTS = """
const done = arguments[arguments.length - 1];
const images = [...document.images];
for (const image of images) image.loading = "eager";
const settled = images.map((image) => image.complete ? null : new Promise((resolve) => {
  image.addEventListener("load", resolve);
  image.addEventListener("error", resolve);
}));
Promise.all(settled).then(() => {
  // Prose only: code may show TeX on purpose, and typeset math is MathJax's own markup.
  const text = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest("script, style, pre, code, textarea, mjx-container")) text.push(node.nodeValue);
  }
  // TeX errors become merror nodes; an undefined macro (say a lost \\E) becomes red mtext.
  const mathErrors = [];
  if (window.MathJax && MathJax.startup && MathJax.startup.document) {
    for (const item of MathJax.startup.document.math) {
      item.root.walkTree((node) => {
        if (node.isKind("merror")) mathErrors.push(`TeX error in ${item.math}`);
        else if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red") {
          mathErrors.push(`undefined macro in ${item.math}`);
        }
      });
    }
  }
  done({
    formulas: document.querySelectorAll(".math").length,
    untypeset: [...document.querySelectorAll(".math")]
      .filter((element) => !element.querySelector("mjx-container"))
      .map((element) => element.textContent.trim()),
    mathErrors,
    text: text.join(" "),
    brokenImages: images.filter((image) => !(image.complete && image.naturalWidth > 0)).map((image) => image.src),
    links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
    scripts: [...document.scripts].map((script) => script.src).filter(Boolean),
    isNotebook: document.querySelector(".dropdown-launch-buttons") !== null,
    ipynbDownloads: [...document.querySelectorAll('.dropdown-download-buttons a[href$=".ipynb"]')].map((a) => a.href),
  });
});
"""

# Horizontal overflow of the page itself, and the outermost elements that cause it: content inside
# a box that scrolls or clips on its own, or inside a fixed drawer, does not widen the page.
OVERFLOW = """
const width = window.innerWidth;
const widens = (element) => {
  if (element.getBoundingClientRect().right <= width + 1) return false;
  for (let node = element; node && node !== document.body; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (style.position === "fixed" || (node !== element && style.overflowX !== "visible")) return false;
  }
  return true;
};
const culprits = [...document.body.querySelectorAll("*")].filter(
  (element) => widens(element) && !widens(element.parentElement));
return {
  width,
  page: document.documentElement.scrollWidth,
  body: document.body.scrollWidth,
  culprits: culprits.slice(0, 5).map((element) =>
    `<${element.tagName.toLowerCase()} class="${element.className}"> ${element.textContent.trim().slice(0, 60)}`),
};
"""


def site_pages() -> list[str]:
    """Every HTML page, leaving out Sphinx's asset folders (_static, _sources, _images, ...)."""
    return sorted(
        path.relative_to(SITE).as_posix()
        for path in SITE.rglob("*.html")
        if not any(part.startswith("_") for part in path.relative_to(SITE).parts)
    )


def pytest_configure(config):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.exit(f"the site test needs Chromium and its driver ({', '.join(missing)} missing): {INSTALL}", returncode=1)
    if not (SITE / "index.html").exists():
        pytest.exit(f"no site in {SITE}: build it with `make test` (test scale) or `make book`", returncode=1)


def pytest_generate_tests(metafunc):
    if "page" in metafunc.fixturenames:
        metafunc.parametrize("page", site_pages())


@pytest.fixture(scope="session")
def site() -> Path:
    return SITE


@pytest.fixture(scope="session")
def pages() -> list[str]:
    return site_pages()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def base_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=SITE))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(WIDE, HEIGHT)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def load(driver, url: str) -> str | None:
    """Open a page, follow a redirect to its target, and wait until MathJax has typeset it; return
    MathJax's version (None on a page without MathJax) or what went wrong with it."""
    driver.get(url)
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda driver: driver.execute_script(ARRIVED)
    )
    return driver.execute_async_script(WAIT_FOR_MATHJAX)


def open_page(driver, url: str) -> dict:
    """Load a page, wait until its formulas are typeset and its images settled, and return what
    the reader gets: the page's facts, its console errors and every URL it requested."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    mathjax = load(driver, url)
    facts = driver.execute_async_script(PAGE_FACTS)
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return {**facts, "mathjax": mathjax, "requests": requests, "console_errors": errors}


@pytest.fixture(scope="session")
def rendered(browser, base_url):
    """rendered(page): the facts of one page at full width, each page opened once per session."""

    @functools.cache
    def render(page: str) -> dict:
        return open_page(browser, base_url + page)

    return render


@pytest.fixture
def narrow(browser, base_url):
    """narrow(page): horizontal overflow of a page in a 400-pixel-wide window."""

    def measure(page: str) -> dict:
        load(browser, base_url + page)
        return browser.execute_script(OVERFLOW)

    browser.set_window_size(NARROW, HEIGHT)
    yield measure
    browser.set_window_size(WIDE, HEIGHT)
