"""Sphinx configuration for scflowlm."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))

# -- Project ------------------------------------------------------------------------------------------------
project = "scflowlm"
author = "scflowlm developers"
copyright = f"{datetime.now():%Y}, {author}"
try:
    release = _version("scflowlm")
except Exception:
    release = "0.0.0"
version = release

# -- Extensions ---------------------------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
]

templates_path = ["_templates"]
# benchmarks/*.md are written by the benchmark scripts and included into benchmarks.md (see setup below).
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "_static/*.py",
    "benchmarks/*",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"

# -- Autodoc / autosummary / napoleon -----------------------------------------------------------------------
autosummary_generate = True
# stubs of a previous build may name functions that have moved since: start from none
shutil.rmtree(HERE / "generated", ignore_errors=True)
autosummary_imported_members = True
autodoc_member_order = "bysource"
_FOREIGN_BASES = [  # scvi-tools, Lightning, torch and builtin bases whose members are not documented here
    "BaseModelClass",
    "BaseModuleClass",
    "DataSplitter",
    "LightningDataModule",
    "TrainingPlan",
    "LightningModule",
    "_DeviceDtypeModuleMixin",
    "HyperparametersMixin",
    "ModelHooks",
    "DataHooks",
    "CheckpointHooks",
    "Callback",
    "Module",
    "BaseException",
    "Exception",
    "ArithmeticError",
    "FloatingPointError",
    "tuple",
    "dict",
    "object",
]
# Inherited members are shown (CaLMFlowModel's train/predict come from FlowModelBase), except those of the
# scvi-tools, torch and Lightning base classes (and everything after them in the MRO).
autodoc_default_options = {
    "members": True,
    "inherited-members": ",".join(_FOREIGN_BASES),
    "show-inheritance": False,
}
autodoc_typehints = "description"  # types appear once, from the signature
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_custom_sections = [("Attributes", "params_style")]
typehints_defaults = "braces"
always_document_param_types = False
typehints_document_rtype = True
# No intersphinx: the build must work offline; references to third-party types stay plain text.
nitpicky = False
suppress_warnings = [
    "myst.header",  # notebooks start with one H1 and may jump to H3
    "config.cache",  # napoleon_custom_sections et al. are not pickled
]

# -- MyST / notebooks ---------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks render from their stored outputs
nb_output_stderr = "remove"  # Lightning's and scvi's log lines are noise in the rendered pages
nb_merge_streams = True

# -- Bibliography -------------------------------------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- HTML ---------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "scflowlm"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_show_sourcelink = False


# -- Benchmark tables ---------------------------------------------------------------------------------------
BENCHMARK_DIR = HERE / "benchmarks"


def _benchmark_sections() -> str:
    """MyST include directives for every table the benchmark scripts wrote, or a note when there is none."""
    files = sorted(BENCHMARK_DIR.glob("*.md"))
    if not files:
        return (
            "\n```{note}\nNo benchmark results yet: run the scripts in `benchmarks/` (they write "
            "`docs/benchmarks/*.md`) and rebuild the docs.\n```\n"
        )
    parts = []
    for f in files:
        parts.append(f"\n```{{include}} benchmarks/{f.name}\n:heading-offset: 1\n:relative-images:\n```\n")
    return "".join(parts)


def _append_benchmarks(app, docname: str, source: list[str]) -> None:
    if docname == "benchmarks":
        source[0] += _benchmark_sections()


def setup(app):
    """Hook the benchmark tables into benchmarks.md, so the page follows the files that exist."""
    app.connect("source-read", _append_benchmarks)
    # Re-read the page on every build, so that new or changed tables show up.
    app.connect("env-get-outdated", lambda app, env, added, changed, removed: ["benchmarks"])
