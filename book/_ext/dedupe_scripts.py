"""Drop repeated <script> and stylesheet entries from every page.

With Sphinx 7.4, an extension that adds a script after the builder exists (sphinx-thebe 0.3.1 does, on
``env-before-read-docs``) has it registered twice, so every page loads its inline configuration twice, and the
second ``const THEBE_JS_URL`` throws "Identifier has already been declared" in the browser. Each page's list of
scripts and stylesheets is made unique here, keeping the first of identical entries (same file, same attributes,
same inline body), which changes nothing else.
"""

from __future__ import annotations

from typing import Any


def _key(asset: Any) -> tuple:
    attributes = getattr(asset, "attributes", {}) or {}
    # The same inline script arrives once with filename None and once with "" (both mean "no file").
    filename = getattr(asset, "filename", str(asset)) or ""
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _unique(assets: list[Any]) -> list[Any]:
    seen, kept = set(), []
    for asset in assets:
        key = _key(asset)
        if key not in seen:
            seen.add(key)
            kept.append(asset)
    return kept


def dedupe(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    for name in ("script_files", "css_files"):
        if isinstance(context.get(name), list):
            context[name] = _unique(context[name])


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
