"""The executed notebook behind each chapter's download button.

myst-nb writes every notebook page to jupyter_execute/, which the theme's download button offers as
the page's .ipynb; for a page whose outputs come from the execution cache, it writes the notebook
as read, without the outputs the page shows. Put them back from the same cache entry.
"""

from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from sphinx.application import Sphinx


def restore_outputs(app: Sphinx, doctree) -> None:
    config = app.env.mystnb_config
    path = Path(config.output_folder, *f"{app.env.docname}.ipynb".split("/"))
    if config.execution_mode != "cache" or not path.is_file():
        return
    notebook = nbformat.read(path, as_version=4)
    try:
        _, executed = get_cache(config.execution_cache_path).merge_match_into_notebook(notebook)
    except KeyError:
        return  # not in the cache: excluded from execution, as the experiment pages are
    nbformat.write(executed, path)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", restore_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
