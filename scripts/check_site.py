#!/usr/bin/env python3
"""Check the built docs site (_site/) in a real headless browser, as a reader would see it.

Serves _site/ on 127.0.0.1 and opens every page in Debian's Chromium (/usr/bin/chromium, driven by playwright from
PyPI; `playwright install` is never needed). Fails, listing every fault, when:
- a page logs a console error or throws, or asks for anything outside the site (the site must need no CDN);
- a chapter shows fewer loaded pictures (naturalWidth > 0) than its notebook has picture outputs;
- a page whose source has maths shows no typeset maths (MathJax served from the site);
- the widgets chapter's saved InjectionExplorer / FusionExplorer views show no loaded pictures.
Writes screenshots of the index and of the widgets chapter (chapter 9) to _site/screenshot-*.png.
Usage: python scripts/check_site.py [--site _site] [--chromium /usr/bin/chromium]"""
import argparse, functools, http.server, json, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDGETS_PAGE = "widgets.html"


def serve(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def expected(src: Path, page: str) -> tuple[int, bool]:
    "Picture outputs and whether there is maths, in the page's source notebook (docs/_src, what Sphinx rendered)."
    f = src / Path(page).with_suffix(".ipynb")
    if not f.exists(): return 0, False
    nb = json.loads(f.read_text())
    pics = sum(1 for c in nb["cells"] if "remove-output" not in c.get("metadata", {}).get("tags", [])
               for o in c.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {})))
    md = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return pics, ("$$" in md or "\\(" in md or md.count("$") >= 2)


IMAGES_JS = """(sel) => Array.from(document.querySelectorAll(sel)).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth])"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default=str(ROOT / "_site"))
    ap.add_argument("--src", default=str(ROOT / "docs" / "_src"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    site, src = Path(a.site), Path(a.src)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") 
                   if not any(part.startswith("_") for part in p.relative_to(site).parts))   # _static: theme fragments
    if "index.html" not in pages: sys.exit(f"no index.html in {site}: run `make docs` first")
    from playwright.sync_api import sync_playwright
    httpd, base = serve(site)
    faults, t0 = [], time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        events = []
        page.on("console", lambda m: m.type == "error" and events.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: events.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: events.append(f"request failed: {r.url} ({r.failure})"))

        def outside(route):
            events.append(f"asked outside the site: {route.request.url}"); route.abort()
        page.route(lambda url: not url.startswith(base) and not url.startswith(("data:", "blob:", "about:")), outside)
        for name in pages:
            events.clear()
            page.goto(base + name, wait_until="load")
            pics, maths = expected(src, name)
            if maths:
                try: page.wait_for_selector("mjx-container", timeout=15000)
                except Exception: events.append("maths in the source, but MathJax typeset nothing")
            imgs = page.evaluate(IMAGES_JS, "article img")
            loaded = [s for s, ok, w in imgs if ok and w > 0]
            if len(loaded) < pics:
                events.append(f"{len(loaded)} pictures loaded, the notebook has {pics}: "
                              + ", ".join(s for s, ok, w in imgs if not (ok and w > 0))[:300])
            if name == WIDGETS_PAGE:
                try: page.wait_for_selector(".jupyter-widgets img", timeout=20000)
                except Exception: events.append("the saved widget views rendered no pictures")
                page.wait_for_timeout(500)
                wimgs = page.evaluate(IMAGES_JS, ".jupyter-widgets img")
                bad = [s[:60] for s, ok, w in wimgs if not (ok and w > 0)]
                if not wimgs or bad: events.append(f"widget pictures: {len(wimgs)}, not loaded: {bad}")
                print(f"  {name}: {len(wimgs)} widget pictures, {len(loaded)} figures")
                first = page.query_selector(".jupyter-widgets img")
                if first: first.scroll_into_view_if_needed()
                page.screenshot(path=str(site / "screenshot-widgets.png"))
            if name == "index.html": page.screenshot(path=str(site / "screenshot-index.png"))
            faults += [f"{name}: {e}" for e in events]
        browser.close()
    httpd.shutdown()
    print(f"checked {len(pages)} pages in {time.time() - t0:.0f} s; screenshots: _site/screenshot-index.png, "
          f"_site/screenshot-widgets.png")
    if faults:
        print(f"{len(faults)} faults:\n  " + "\n  ".join(faults)); sys.exit(1)
    print("site check: every page loads with no console error, every figure and widget picture shows")


if __name__ == "__main__":
    main()
