"""Sphinx configuration of cq's documentation site: ``make docs`` builds it into docs/_build/html.

Pages are Markdown (MyST), like the README they came from; the API reference is reST, since
autodoc's directives and cq's docstrings are. Django is set up here, with settings of its own,
so that autodoc can import cq's public modules; no database is touched.
"""

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

settings.configure(
    SECRET_KEY="cq-docs-only",
    USE_TZ=True,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "cq"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    # cq.backends is documented too: Django's Tasks framework on cq.
    TASKS={"default": {"BACKEND": "cq.backends.CQBackend"}},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

project = "cq"
author = "the cq developers"
copyright = "the cq developers"
release = version = "0.1.0"

# Both extensions of Sphinx's own: napoleon reads the "Raises:" sections of cq's docstrings.
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# Headings up to ### get anchors, so that pages link to sections as the README did: [x](page.md#section).
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# Signatures without annotations: cq's annotations name classes in modules that move (only the
# public import paths are documented, and they stay), and builtins would need intersphinx,
# which needs the network.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# cq's docstrings use ``double backquotes`` for code, as reST means it.
default_role = "literal"

nitpicky = True
napoleon_numpy_docstring = False
# Django's exceptions, which cq's docstrings name in "Raises:", are not documented here.
nitpick_ignore = [("py:exc", "ImproperlyConfigured"), ("py:exc", "ValidationError")]

html_theme = "alabaster"
html_title = "cq"
html_static_path = ["_static"]  # custom.css, which alabaster loads by itself
html_theme_options = {
    "description": "A durable task queue that lives inside Django and Channels.",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "240px",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
