"""Sphinx configuration of the rankplug documentation.

Build with warnings as errors, as CI does::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's rankplug, also when it is not installed

project = "rankplug"
author = "the rankplug authors"
copyright = "the rankplug authors, MIT License"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ maths, amsmath environments, and anchors for headings up to ### so that guides can link
# to a section as page.md#slug.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# autodoc: the docstrings are Google style (napoleon). Members in source order, signatures without the type hints
# (they are in the parameter lists), and nothing documented twice.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options: dict[str, object] = {}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The optional dependencies (the "demo", "eval" and "tensorboard" extras) are mocked when they are not installed,
# so that the reference builds with the docs extra alone. Installed ones are used as they are.
_OPTIONAL = [
    "kornia",
    "matplotlib",
    "PIL",
    "scipy",
    "sklearn",
    "tensorboard",
    "torch_fidelity",
    "torchvision",
]
autodoc_mock_imports = [name for name in _OPTIONAL if importlib.util.find_spec(name) is None]

html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = "rankplug"
html_static_path: list[str] = []
napoleon_use_ivar = True  # Attributes: sections as fields, so that a NamedTuple's fields are not documented twice
