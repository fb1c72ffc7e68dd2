"""Each inline script once per page.

Sphinx 7 adds an inline script registered after the builder started (sphinx-thebe's and
sphinx-togglebutton's settings) to every page twice; the second copy of sphinx-thebe's
``const THEBE_JS_URL`` then raises a SyntaxError in the browser. Sphinx 8.2 fixed this;
the book is on Sphinx 7, which Jupyter Book 1 requires.
"""

from sphinx.application import Sphinx


def drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        # The two copies differ only in a filename of None against "".
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
