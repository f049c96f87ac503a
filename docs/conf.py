"""Sphinx configuration for the offline docs site (`make docs` -> _site/). Sources are nbdev's processed notebooks,
converted by scripts/build_docs.py into docs/_src; nothing is executed here (the notebooks' committed outputs are shown).
Maths and widgets load from the site itself (npm packages installed by `make docs` into docs/node_modules), no CDN."""
from configparser import ConfigParser
from pathlib import Path

_cfg = ConfigParser(delimiters=["="]); _cfg.read(Path(__file__).resolve().parent.parent / "settings.ini")
_cfg = _cfg["DEFAULT"]

project = _cfg["title"]
author = _cfg["author"]
copyright = _cfg["copyright"]
release = version = _cfg["version"]

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"                      # show the committed outputs; never re-run a notebook
nb_render_markdown_format = "myst"             # show_doc's markdown has tables
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]
myst_heading_anchors = 3                       # nbdev's API links point at heading anchors
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]                 # filled by scripts/build_docs.py from docs/node_modules
html_css_files = ["diffstyler.css"]
html_theme_options = {"repository_url": _cfg["git_url"], "use_repository_button": False, "show_toc_level": 2,
                      "navigation_with_keys": False}
html_context = {"default_mode": "light"}      # the theme logs an error when no mode is set
html_show_sourcelink = False
html_copy_source = False
mathjax_path = "mathjax/tex-chtml.js"          # served from _static, not a CDN
# the ipywidgets HTML manager renders saved widget state (nbs/09_widgets.ipynb metadata) without a kernel;
# embed.js is its self-contained build (no require.js)
nb_ipywidgets_js = {"html-manager/embed.js": {}}
