"""The built book (after `make book`): every page is there, with its figures and glued numbers."""

import re
from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parents[1] / "_build" / "html"
pytestmark = pytest.mark.skipif(not (HTML / "index.html").exists(), reason="book not built (run `make book` first)")


def page(name: str) -> str:
    return (HTML / name).read_text()


def test_principle_a_page_has_figures_glued_numbers_and_verdicts():
    html = page("notebooks/01_stable_forward.html")
    assert len(re.findall(r"<img[^>]+(src=\"data:image/png|\.png)", html)) >= 2
    text = re.sub(r"<[^>]+>", "", html)
    # glued numbers render as numbers, not as the role's source
    assert "{glue:" not in text
    assert re.search(r"grows at most\s+\d\.\d\d×", text)
    assert re.search(r"Verdict\.\s+(All \d+ checks|\d+ of \d+ checks)", text)
    assert "reproduced" in text


def test_intro_bibliography_and_reproduce_pages():
    assert "Beyond BatchNorm" in page("book/intro.html")
    assert "Lindley" in page("book/bibliography.html")
    assert "register_norm" in page("book/reproduce.html")


def test_every_chapter_page_has_figures_and_a_verdict():
    from normlib.experiments import EXPERIMENTS

    for stem in EXPERIMENTS:
        html = page(f"notebooks/{stem}.html")
        assert len(re.findall(r"<img[^>]+(src=\"data:image/png|\.png)", html)) >= 2, stem
        text = re.sub(r"<[^>]+>", "", html)
        assert "{glue:" not in text, stem
        assert re.search(r"Verdict\.\s+(All \d+ checks|\d+ of \d+ checks)", text), stem
        # no plumbing: the parameters cell is collapsed, and no raw configuration or provenance dict is printed
        assert "tag_parameters" in html and ".tag_parameters .cell_input'" in html, stem  # folded by togglebutton
        assert "'preset':" not in text and "'parameters':" not in text, stem
        assert "parameters set" in text, stem


def test_scorecard_lists_every_notebook():
    from normlib.experiments import EXPERIMENTS

    text = re.sub(r"<[^>]+>", "", page("book/scorecard.html"))
    for stem in EXPERIMENTS:
        assert stem in text


def test_math_is_served_from_the_build_not_a_cdn():
    mathjax = HTML / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.exists(), "MathJax is not bundled into _build/html/_static (sphinx-mathjax-offline)"
    for path in HTML.rglob("*.html"):
        scripts = re.findall(r"<script[^>]+src=\"([^\"]*mathjax[^\"]*)\"", path.read_text())
        assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), (path, scripts)


def test_math_is_typeset_in_a_headless_browser_without_network():
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    target = (HTML / "notebooks" / "03_stable_backward.html").as_uri()
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", target],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "mjx-container" in dom
    text = re.sub(r"<[^>]+>", "", re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S))
    assert "\\(" not in text and "$$" not in text
