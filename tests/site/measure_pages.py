"""Measure how long each page of a built site reads and how much of it is visible code.

    python tests/site/measure_pages.py _build/html [--json out.json] [--width 1400] [--height 900]

Opens every page (the pages the site test opens) in headless Chromium with a viewport of the given size, waits
until MathJax has typeset it and its images have settled, and reports per page

* ``screens``: the document's height over the window height, the number of screens a reader scrolls;
* ``code_share``: the summed height of the code-input cells a reader sees without opening a toggle
  (a ``hide-input`` cell shows only its toggle, a ``remove-input`` cell nothing) over the document's height.

The totals weigh each page by its height, so ``code_share`` of the whole site is the share of all
scrolled height that is visible code. The browser is driven as in the site test (tests/site/conftest.py).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import sys
import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, PAGE_FACTS, QuietHandler, load  # noqa: E402

# Heights in CSS pixels. A code input is visible when it is rendered and not inside a closed <details>
# toggle (Chromium still lays out a closed toggle's content, with a height, but does not paint it).
MEASURE = """
const inputs = [...document.querySelectorAll("div.cell div.cell_input")];
const hidden = (element) => {
  const toggle = element.closest("details:not([open])");
  return toggle !== null && !element.closest("summary");
};
const visible = inputs.filter((element) => element.getClientRects().length > 0 && element.getBoundingClientRect().height > 0 && !hidden(element));
const code = visible.reduce((sum, element) => sum + element.getBoundingClientRect().height, 0);
return {
  height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
  code_height: code,
  code_cells: inputs.length,
  visible_code_cells: visible.length,
  title: document.title,
};
"""


def pages(site: Path) -> list[str]:
    """Every HTML page, leaving out Sphinx's asset folders (_static, _sources, _images, ...)."""
    return sorted(
        path.relative_to(site).as_posix()
        for path in site.rglob("*.html")
        if not any(part.startswith("_") for part in path.relative_to(site).parts)
    )


def measure(site: Path, width: int, height: int) -> dict:
    if not (site / "index.html").exists():
        raise SystemExit(f"site: no index.html in {site}; build the site first (make test-build or make book)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    rows = []
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            # The viewport itself, not the window around it, is width x height CSS pixels.
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            driver.set_script_timeout(60)
            viewport = driver.execute_script("return [window.innerWidth, window.innerHeight]")
            for page in pages(site):
                load(driver, base + page)
                if driver.current_url.rstrip("/") != (base + page).rstrip("/"):
                    continue  # a redirect (index.html): its target is measured on its own
                driver.execute_async_script(PAGE_FACTS)  # images loaded, so heights are final
                m = driver.execute_script(MEASURE)
                rows.append({"page": page, "title": m["title"], "height_px": m["height"], "screens": m["height"] / height,
                             "code_px": m["code_height"], "code_share": m["code_height"] / m["height"],
                             "code_cells": m["code_cells"], "visible_code_cells": m["visible_code_cells"]})
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
    total_height = sum(r["height_px"] for r in rows)
    total_code = sum(r["code_px"] for r in rows)
    return {"site": str(site), "window": [width, height], "viewport": viewport, "pages": rows,
            "total": {"pages": len(rows), "screens": total_height / height,
                      "code_share": total_code / total_height if total_height else 0.0}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site's folder (with index.html)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    if args.width < 200 or args.height < 200:
        parser.error(f"--width and --height must be at least 200 pixels (got {args.width} x {args.height})")
    result = measure(args.site.resolve(), args.width, args.height)
    for r in result["pages"]:
        print(f"{r['screens']:6.1f} screens  {r['code_share']:6.1%} code  {r['page']}")
    t = result["total"]
    print(f"{t['screens']:6.1f} screens  {t['code_share']:6.1%} code  all {t['pages']} pages")
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
