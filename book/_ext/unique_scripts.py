"""Sphinx extension of the book: every ``<script>`` tag of a page appears once.

With Jupyter Book 1.0.4 (Sphinx 7.4, sphinx-thebe 0.3.1) each page receives sphinx-thebe's inline
configuration script twice, and the second ``const THEBE_JS_URL = ...`` is an error in the
browser console ("Identifier 'THEBE_JS_URL' has already been declared"). Identical script tags
(same file or body, same attributes) are kept once, in their first position.
"""

from __future__ import annotations


def _key(script) -> tuple:
    # An inline script has no file: Sphinx stores that as None or "" depending on the route
    # it was added by (which is how the two copies escape Sphinx's own de-duplication).
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", None) or {}
    return str(filename), tuple(sorted(attributes.items()))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    # Late, after the extensions that add per-page scripts (myst-nb's widget scripts).
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
