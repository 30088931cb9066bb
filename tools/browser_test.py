"""Open every page of the built book in headless Chromium and check what a reader would see.

``python tools/browser_test.py`` (``make browser-test``, after ``make book``) serves ``_build/html`` over a local
``http.server`` on a free port and drives Debian's ``chromium`` through ``chromedriver`` (Selenium), JavaScript on.
For every page of the build (``*.html`` outside ``_static``, ``_sources``, ``_images``; every page ``_toc.yml``
names must be there) it checks:

* the page loads and the browser log has no SEVERE message (an uncaught exception, a resource that failed to load),
  except the few harmless ones in ``IGNORED_CONSOLE``, each with its reason;
* every formula is typeset: each ``.math`` element Sphinx wrote holds a rendered ``mjx-container``, no ``mjx-merror``
  (a TeX error), and no raw ``\\(``, ``\\[`` or ``$$`` is left in the visible text outside code blocks (and
  outside the search page's results, whose snippets Sphinx writes as plain text);
* every image has loaded (``img.complete && img.naturalWidth > 0``; lazy images are made eager first);
* every internal link resolves: a relative ``href``/``src`` names a file under the build, and a ``#fragment`` is an
  ``id`` (or ``<a name>``) on the target page (checked on the HTML files, without the browser);
* ``search.html?q=GroupNorm`` lists at least one result once Sphinx's JavaScript search has run.

``index.html`` is not opened: it is a meta-refresh redirect to the root page, which is checked itself; its redirect
target is checked like a link. External links are not followed (CI has no network). Why a server and not
``file://``: the search page fetches every result page for its snippet, which Chromium blocks on ``file://`` (CORS),
so the search page would log errors a reader of the published book never sees.

Each page gets a screenshot ``_build/screenshots/<path with / as __>.png``, 1280 px wide and as tall as the page up
to ``--max-shot-height`` (the API page is ~80 000 px; a full capture takes 40 s and 13 MB). One line per page, then a
summary; the exit status is 1 when any page fails (each failure named with its page), 2 when nothing can be checked
(no build, no browser).
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {"_static", "_sources", "_images"}
#: Pages not opened in the browser, with the reason (their links are still checked).
NOT_OPENED = {"index.html": "a meta-refresh redirect to the root page, which is checked itself"}
#: SEVERE browser messages that are not the book's fault: (pattern, reason).
IGNORED_CONSOLE = (
    (re.compile(r"/favicon\.ico - Failed to load resource"), "Chromium asks every server for /favicon.ico"),
    (
        re.compile(r"Got invalid theme mode: \. Resetting to auto"),
        "pydata-sphinx-theme on a first visit (no saved light/dark mode); it then picks auto",
    ),
)
RAW_MATH = ("\\(", "\\[", "$$")
EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")
LINK_ATTRIBUTES = {"a": "href", "area": "href", "link": "href", "img": "src", "script": "src", "source": "src"}
SEARCH_PAGE = "search.html"
WIDTH = 1280


# ---------------------------------------------------------------------------------------------------------------------
# The HTML files: links, anchors, raw math (no browser)


class _LinkParser(HTMLParser):
    """Collects the ids (and ``<a name>``) of a page and the URLs it points to (tag, URL)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.ids.add(values["name"])
        url = values.get(LINK_ATTRIBUTES.get(tag, ""))
        if url is not None:
            self.links.append((tag, url))
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            match = re.search(r"url\s*=\s*['\"]?([^'\"]+)", values.get("content", ""), re.IGNORECASE)
            if match:
                self.links.append(("meta refresh", match.group(1).strip()))


@functools.cache
def parse_page(path: Path) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """The ids and the (tag, URL) links of the HTML file ``path`` (cached: a target page is parsed once)."""
    parser = _LinkParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids), tuple(parser.links)


def resolve_link(page: Path, url: str, root: Path) -> tuple[Path, str] | None:
    """The file under ``root`` that ``url`` on ``page`` points to and its fragment ('' when none), or None when the
    URL is external (a scheme such as https: or mailto:, or //host). A directory means its index.html."""
    if EXTERNAL.match(url):
        return None
    parts = urlsplit(url)
    path, fragment = unquote(parts.path), unquote(parts.fragment)
    if not path:
        return page, fragment
    base = root if path.startswith("/") else page.parent
    target = Path(os.path.normpath(base / path.lstrip("/")))
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, fragment


def link_problems(page: Path, root: Path) -> list[str]:
    """What is wrong with the internal links of ``page``: a target outside ``root`` or missing, or a fragment that
    is no id on an HTML target. An empty fragment (``href="#"``) is the top of the page and always resolves."""
    root = root.resolve()
    problems = []
    _, links = parse_page(page.resolve())
    for tag, url in links:
        resolved = resolve_link(page.resolve(), url, root)
        if resolved is None:
            continue
        target, fragment = resolved
        if not target.is_relative_to(root):
            problems.append(f"{tag} {url!r} points outside the build")
        elif not target.is_file():
            problems.append(f"{tag} {url!r}: no file {target.relative_to(root).as_posix()}")
        elif fragment and target.suffix == ".html" and fragment not in parse_page(target)[0]:
            problems.append(f"{tag} {url!r}: no id {fragment!r} on {target.relative_to(root).as_posix()}")
    return sorted(set(problems))


def raw_math(text: str, context: int = 30) -> list[str]:
    """The TeX delimiters ``\\(``, ``\\[`` and ``$$`` left in ``text`` (the visible text of a page), each with how
    often and the text around its first occurrence: MathJax replaces every delimited formula it typesets."""
    found = []
    for delimiter in RAW_MATH:
        start = text.find(delimiter)
        if start >= 0:
            around = " ".join(text[max(0, start - context) : start + len(delimiter) + context].split())
            found.append(f"raw {delimiter} ({text.count(delimiter)}x), e.g. '{around}'")
    return found


def severe_messages(log: list[dict]) -> tuple[list[str], int]:
    """The SEVERE entries of a Chromium browser log, less the ``IGNORED_CONSOLE`` ones, and how many were ignored."""
    errors, ignored = [], 0
    for entry in log:
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        if any(pattern.search(message) for pattern, _ in IGNORED_CONSOLE):
            ignored += 1
        else:
            errors.append(message)
    return errors, ignored


def toc_pages(toc: Path) -> list[str]:
    """The HTML pages ``_toc.yml`` makes (``root`` and every ``file``), e.g. ``notebooks/01_stable_forward.html``."""
    import yaml

    def files(node) -> list[str]:
        if isinstance(node, dict):
            own = [node[key] for key in ("root", "file") if isinstance(node.get(key), str)]
            return own + [f for value in node.values() for f in files(value)]
        if isinstance(node, list):
            return [f for item in node for f in files(item)]
        return []

    stems = files(yaml.safe_load(toc.read_text()))
    return [re.sub(r"\.(md|ipynb|rst)$", "", stem) + ".html" for stem in dict.fromkeys(stems)]


def site_pages(root: Path) -> list[str]:
    """Every HTML page of the build, relative to ``root``, outside ``_static``, ``_sources`` and ``_images``."""
    pages = (p.relative_to(root) for p in root.rglob("*.html"))
    return sorted(p.as_posix() for p in pages if not SKIPPED_DIRS & set(p.parts[:-1]))


def screenshot_name(page: str) -> str:
    """``notebooks/01_stable_forward.html`` -> ``notebooks__01_stable_forward.png``."""
    return page.removesuffix(".html").replace("/", "__") + ".png"


# ---------------------------------------------------------------------------------------------------------------------
# The browser

_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1], deadline = Date.now() + arguments[0] * 1000;
(function wait() {
  const mj = window.MathJax;
  if (!document.querySelector('.math')) done('no math');
  else if (!mj && !document.querySelector('script[src*="mathjax"]')) done('no MathJax script on a page with math');
  else if (mj && mj.startup && mj.startup.promise) mj.startup.promise.then(() => done('typeset'), e => done('' + e));
  else if (Date.now() > deadline) done('MathJax did not start');
  else setTimeout(wait, 100);
})();
"""
_MATH_STATUS = """
const maths = Array.from(document.querySelectorAll('.math'));
const missing = maths.filter(m => !m.querySelector('mjx-container'));
return {formulas: maths.length,
        untypeset: missing.map(m => m.textContent.trim().slice(0, 60)),
        errors: Array.from(document.querySelectorAll('mjx-merror'))
          .map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 60))};
"""
# innerText with code blocks hidden (a notebook may show '$$' or '\\(' in code on purpose) and the search results
# (Sphinx's snippets are plain text, so a formula in one shows as TeX whatever the page does).
_VISIBLE_TEXT = """
const style = document.createElement('style');
style.textContent = 'pre, code, #search-results { display: none !important; }';
document.head.appendChild(style);
const text = document.body.innerText;
style.remove();
return text;
"""
_BROKEN_IMAGES = """
const done = arguments[arguments.length - 1], deadline = Date.now() + arguments[0] * 1000;
const images = Array.from(document.images);
images.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
(function wait() {
  if (images.every(i => i.complete) || Date.now() > deadline) {
    done({count: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0))
      .map(i => (i.getAttribute('src') || '').slice(0, 80) + (i.alt ? ' (alt: ' + i.alt.slice(0, 40) + ')' : ''))});
  } else setTimeout(wait, 100);
})();
"""
_SEARCH_RESULTS = """
const done = arguments[arguments.length - 1], deadline = Date.now() + arguments[0] * 1000;
(function wait() {
  const results = document.querySelectorAll('#search-results ul.search li a');
  const summary = document.querySelector('#search-results .search-summary, #search-results p');
  const finished = summary && /Search finished|did not match/.test(summary.textContent);
  if (results.length || finished || Date.now() > deadline)
    done({results: results.length, summary: summary ? summary.textContent.trim() : 'no search summary'});
  else setTimeout(wait, 200);
})();
"""


def find_executable(variable: str, names: tuple[str, ...]) -> str | None:
    """``$variable`` if set, else the first of ``names`` on PATH (or in /usr/lib/chromium)."""
    if os.environ.get(variable):
        return os.environ[variable]
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/lib/chromium")
        if found:
            return found
    return None


def start_server(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A quiet ``http.server`` for ``root`` on a free port of 127.0.0.1, in a daemon thread; and its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def start_browser(chromium: str, chromedriver: str, timeout: float):
    """Headless Chromium with JavaScript on, a 1280 px wide viewport and the browser log kept at every level."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout + 10)
    _viewport(driver, 900)
    return driver


def _viewport(driver, height: int) -> None:
    """Emulate a 1280 px wide viewport of ``height`` px (at scale 1)."""
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def take_screenshot(driver, path: Path, max_height: int) -> str:
    """A PNG of the page, 1280 px wide and as tall as the page up to ``max_height``; says what it captured. The
    viewport is made as tall as the shot (capturing beyond a short viewport draws the theme's sticky sidebars
    wrongly), then set back."""
    height = driver.execute_script("return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
    shot = min(height, max_height)
    _viewport(driver, shot)
    try:
        data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        _viewport(driver, 900)
    path.write_bytes(base64.b64decode(data["data"]))
    return f"{path.name}" + (f" (top {shot} of {height} px)" if shot < height else "")


@dataclass
class PageReport:
    """What the checks found on one page: problems fail it, notes only describe it."""

    page: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line: ok/FAIL, the page, the problems, then the notes."""
        if self.problems:
            notes = f" [{', '.join(self.notes)}]" if self.notes else ""
            return f"FAIL {self.page}: " + "; ".join(self.problems) + notes
        return f"ok   {self.page}: " + ", ".join(self.notes)


def check_in_browser(driver, url: str, report: PageReport, timeout: float) -> None:
    """Load ``url`` and add to ``report`` what the browser sees: console errors, formulas, images."""
    driver.get_log("browser")  # empty the log of the previous page
    started = time.monotonic()
    driver.get(url)
    state = driver.execute_script("return document.readyState")
    if state != "complete" or not driver.title:
        report.problems.append(f"did not load (readyState {state}, title {driver.title!r})")
    mathjax = driver.execute_async_script(_WAIT_FOR_MATHJAX, timeout)
    if mathjax not in ("typeset", "no math"):
        report.problems.append(f"MathJax: {mathjax}")
    math = driver.execute_script(_MATH_STATUS)
    if math["untypeset"]:
        report.problems.append(f"{len(math['untypeset'])} of {math['formulas']} formulas not typeset, e.g. "
                               f"{math['untypeset'][0]!r}")  # fmt: skip
    if math["errors"]:
        report.problems.append(f"{len(math['errors'])} TeX errors, e.g. {math['errors'][0]!r}")
    report.problems += raw_math(driver.execute_script(_VISIBLE_TEXT))
    images = driver.execute_async_script(_BROKEN_IMAGES, timeout)
    report.problems += [f"image not loaded: {src}" for src in images["broken"]]
    errors, ignored = severe_messages(driver.get_log("browser"))
    report.problems += [f"console: {message}" for message in errors]
    report.notes += [f"{math['formulas']} formulas", f"{images['count']} images"]
    if ignored:
        report.notes.append(f"{ignored} harmless console messages ignored")
    report.notes.append(f"{time.monotonic() - started:.1f} s")


def check_search(driver, report: PageReport, query: str, timeout: float) -> None:
    """On the search page already loaded with ``?q=query``: at least one result link once the search has run."""
    found = driver.execute_async_script(_SEARCH_RESULTS, timeout)
    if found["results"]:
        report.notes.insert(0, f"search {query!r}: {found['results']} results")
    else:
        report.problems.append(f"search for {query!r} found nothing ({found['summary']!r})")


def check_page(driver, base: str, root: Path, page: str, options: argparse.Namespace) -> PageReport:
    """Every check on one page: its links (from the file), then, unless in ``NOT_OPENED``, the browser's checks, the
    search (on the search page) and the screenshot. An exception in the browser is a problem of that page."""
    report = PageReport(page)
    links = link_problems(root / page, root)
    report.problems += links
    if page in NOT_OPENED:
        report.notes.append(f"links only, not opened: {NOT_OPENED[page]}")
        return report
    url = f"{base}/{page}" + (f"?q={options.query}" if page == SEARCH_PAGE else "")
    try:
        check_in_browser(driver, url, report, options.timeout)
        if page == SEARCH_PAGE:
            check_search(driver, report, options.query, options.timeout)
        shot = take_screenshot(driver, options.screenshots / screenshot_name(page), options.max_shot_height)
        report.notes.append(f"screenshot {shot}")
    except Exception as error:  # a timeout or a crashed tab fails this page, not the run
        report.problems.append(f"browser: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built site")
    parser.add_argument("--screenshots", type=Path, default=None, help="default: _build/screenshots next to --html")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml", help="its pages must all be in the build")
    parser.add_argument("--query", default="GroupNorm", help="what the search page must find")
    parser.add_argument("--max-shot-height", type=int, default=16384, help="screenshots stop there (px)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for a page, MathJax or the search")
    parser.add_argument("pages", nargs="*", help="only these pages (paths under --html); default every page")
    options = parser.parse_args(argv)
    options.screenshots = options.screenshots or options.html.parent / "screenshots"
    return options


def main(argv: list[str] | None = None) -> int:
    """Check every page; print a line per page and a summary; 0 when all pass, 1 when any fails, 2 when nothing can
    be checked."""
    options = parse_args(argv)
    root = options.html.resolve()
    if not (root / "index.html").is_file():
        print(f"browser-test: no built book in {root} (run `make book` first)", file=sys.stderr)
        return 2
    chromium = find_executable("CHROMIUM", ("chromium", "chromium-browser", "google-chrome"))
    chromedriver = find_executable("CHROMEDRIVER", ("chromedriver",))
    if not chromium or not chromedriver:
        print("browser-test: needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
              file=sys.stderr)  # fmt: skip
        return 2
    pages = options.pages or site_pages(root)
    missing = [p for p in toc_pages(options.toc) if not (root / p).is_file()] if options.toc.is_file() else []
    options.screenshots.mkdir(parents=True, exist_ok=True)
    for old in options.screenshots.glob("*.png"):
        old.unlink()
    server, base = start_server(root)
    driver = start_browser(chromium, chromedriver, options.timeout)
    print(f"browser-test: {len(pages)} pages of {root} at {base}, Chromium {driver.capabilities.get('browserVersion')}")
    reports = [PageReport(p, problems=["in _toc.yml but not built"]) for p in missing]
    for report in reports:
        print(report.line())
    try:
        for page in pages:
            reports.append(check_page(driver, base, root, page, options))
            print(reports[-1].line(), flush=True)
    finally:
        driver.quit()
        server.shutdown()
    failed = [r for r in reports if r.problems]
    print(f"\nbrowser-test: {len(reports)} pages, {len(reports) - len(failed)} passed, {len(failed)} failed; "
          f"screenshots in {options.screenshots}")  # fmt: skip
    for report in failed:
        for problem in report.problems:
            print(f"  {report.page}: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
