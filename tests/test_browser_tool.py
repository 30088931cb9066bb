"""tools/browser_test.py, the headless-browser check of the built book: its link, anchor and raw-math logic on small
HTML files (no browser), and one run of the checker on four pages of _build/html (marked `book`; skipped without a
build or without chromium and chromedriver). Every page is `make browser-test`'s job, which CI runs after the build."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"


def _load():
    spec = importlib.util.spec_from_file_location("browser_test", ROOT / "tools" / "browser_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


bt = _load()


@pytest.fixture
def site(tmp_path):
    """A tiny site: index redirect, book/a.html linking to everything good and bad, book/b.html with anchors."""
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.js").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("<p id='top'>sub</p>")
    (tmp_path / "index.html").write_text('<meta http-equiv="refresh" content="0; url=book/a.html">')
    (tmp_path / "book" / "b.html").write_text('<h2 id="sec">S</h2><a name="old-style"></a>')
    (tmp_path / "book" / "a.html").write_text(
        """<section id="here"><script src="../_static/x.js?v=1"></script>
        <a href="b.html#sec">ok</a> <a href="b.html#old-style">ok</a> <a href="#here">ok</a> <a href="#">top</a>
        <a href="../sub/">dir</a> <a href="/book/b.html">root-relative</a> <a href="b%2Ehtml#sec">escaped</a>
        <a href="https://example.org/x.html#y">external</a> <a href="mailto:a@b.c">mail</a>
        <a href="b.html#nosuch">bad anchor</a> <a href="#gone">bad local anchor</a> <a href="c.html">missing</a>
        <img src="../_images/fig.png"> <a href="../../outside.html">escape</a></section>"""
    )
    return tmp_path


def test_link_problems_name_each_broken_link_and_anchor(site):
    problems = bt.link_problems(site / "book" / "a.html", site)
    assert problems == sorted(
        [
            "a 'b.html#nosuch': no id 'nosuch' on book/b.html",
            "a '#gone': no id 'gone' on book/a.html",
            "a 'c.html': no file book/c.html",
            "img '../_images/fig.png': no file _images/fig.png",
            "a '../../outside.html' points outside the build",
        ]
    )


def test_a_redirect_target_is_checked_like_a_link(site):
    assert bt.link_problems(site / "index.html", site) == []
    (site / "book" / "a.html").unlink()
    assert bt.link_problems(site / "index.html", site) == ["meta refresh 'book/a.html': no file book/a.html"]


def test_resolve_link(site):
    page = site / "book" / "a.html"
    assert bt.resolve_link(page, "https://example.org", site) is None
    assert bt.resolve_link(page, "//cdn.example.org/x.js", site) is None
    assert bt.resolve_link(page, "#here", site) == (page, "here")
    assert bt.resolve_link(page, "../sub/", site) == (site / "sub" / "index.html", "")
    assert bt.resolve_link(page, "../sub", site) == (site / "sub" / "index.html", "")
    assert bt.resolve_link(page, "b.html?highlight=x#sec", site) == (site / "book" / "b.html", "sec")


@pytest.mark.parametrize(
    "text, delimiters",
    [
        ("The norm grows as x^2 and the claim holds.", []),
        ("Inline \\(a^2\\) left raw", ["\\("]),
        ("Display \\[ \\sum_i x_i \\] left raw", ["\\["]),
        ("A dollar display $$x$$ left raw", ["$$"]),
        ("costs $5 and $6", []),  # single dollars are prose, not math
        ("both \\(a\\) and $$b$$", ["\\(", "$$"]),
    ],
)
def test_raw_math_finds_the_tex_delimiters_left_in_the_text(text, delimiters):
    found = bt.raw_math(text)
    assert [f.split(" ")[1] for f in found] == delimiters
    for finding in found:
        assert "e.g." in finding


def test_severe_messages_keep_errors_and_drop_only_the_known_harmless_ones():
    log = [
        {"level": "SEVERE", "message": "http://x/page.html 3:1 Uncaught ReferenceError: f is not defined"},
        {"level": "SEVERE", "message": "http://127.0.0.1:1/favicon.ico - Failed to load resource: 404"},
        {"level": "SEVERE", "message": 'theme.js 0:1 "Got invalid theme mode: . Resetting to auto."'},
        {"level": "WARNING", "message": "something mild"},
        {"level": "INFO", "message": "[togglebutton]: Adding toggle buttons"},
    ]
    errors, ignored = bt.severe_messages(log)
    assert errors == ["http://x/page.html 3:1 Uncaught ReferenceError: f is not defined"]
    assert ignored == 2


def test_toc_pages_and_site_pages(tmp_path, site):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n  - chapters:\n      - file: notebooks/01_x\n")
    assert bt.toc_pages(toc) == ["book/intro.html", "notebooks/01_x.html"]
    (site / "_static" / "skip.html").write_text("")
    assert bt.site_pages(site) == ["book/a.html", "book/b.html", "index.html", "sub/index.html"]


def test_screenshot_names_follow_the_page_path():
    assert bt.screenshot_name("notebooks/01_stable_forward.html") == "notebooks__01_stable_forward.png"
    assert bt.screenshot_name("search.html") == "search.png"


def test_the_checker_needs_a_build(tmp_path, capsys):
    assert bt.main(["--html", str(tmp_path / "nothing")]) == 2
    assert "make book" in capsys.readouterr().err


@pytest.mark.book
@pytest.mark.skipif(not (HTML / "index.html").exists(), reason="book not built (run `make book` first)")
@pytest.mark.skipif(
    not (bt.find_executable("CHROMIUM", ("chromium",)) and bt.find_executable("CHROMEDRIVER", ("chromedriver",))),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)
def test_pages_of_the_built_book_pass_in_the_browser(tmp_path, capsys):
    """The checker end to end in a real browser, on the intro, a chapter, the scorecard and the search page."""
    pytest.importorskip("selenium")
    pages = ["book/intro.html", "notebooks/08_lp_batchnorm_low_precision.html", "book/scorecard.html", "search.html"]
    status = bt.main(["--html", str(HTML), "--screenshots", str(tmp_path), *pages])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "4 pages, 4 passed" in out
    assert (tmp_path / "book__intro.png").is_file()
    shutil.rmtree(tmp_path)
