"""Sphinx extension: no Thebe scripts in the pages.

Jupyter Book always loads sphinx-thebe, which adds its settings as an inline script declaring
``const THEBE_JS_URL`` (a CDN address), once per read of the sources; a page carrying it twice
raises a SyntaxError in the browser. The book has no live kernels (launch buttons are off), so the
scripts are dropped from every page.
"""


def _drop_thebe(app, pagename, templatename, context, doctree):
    context["script_files"] = [js for js in context.get("script_files", [])
                               if "thebe" not in str(js.filename or "") and "THEBE_JS_URL" not in js.attributes.get("body", "")]


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
