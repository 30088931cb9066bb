"""The book's local Sphinx extension that makes each page's script list unique (book/_ext/dedupe_scripts.py)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("dedupe_scripts", ROOT / "book" / "_ext" / "dedupe_scripts.py")
dedupe_scripts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dedupe_scripts)


def script(filename, **attributes):
    return SimpleNamespace(filename=filename, attributes=attributes)


def test_an_inline_script_registered_twice_is_kept_once():
    thebe = {"body": 'const THEBE_JS_URL = "x"'}
    context = {
        "script_files": [script(None, **thebe), script("_static/a.js"), script("", **thebe), script("_static/a.js")],
        "css_files": [script("_static/a.css"), script("_static/a.css")],
    }
    dedupe_scripts.dedupe(None, "page", "page.html", context, None)
    assert [(s.filename, s.attributes) for s in context["script_files"]] == [(None, thebe), ("_static/a.js", {})]
    assert len(context["css_files"]) == 1


def test_different_scripts_all_stay_in_order():
    scripts = [script(None, body="var a = 1"), script(None, body="var b = 2"), script("_static/a.js", defer="defer")]
    context = {"script_files": list(scripts)}
    dedupe_scripts.dedupe(None, "page", "page.html", context, None)
    assert context["script_files"] == scripts
