"""The Sphinx docs build without warnings, and the API page lists every public name."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SUBMODULES = ["data", "metrics", "model", "module", "nn", "pl", "tl", "train"]


def test_api_page_lists_every_public_name():
    """Every name in a public ``__all__`` appears in docs/api.md (a new public name needs a docs entry)."""
    text = (DOCS / "api.md").read_text()
    missing = []
    for sub in SUBMODULES:
        mod = importlib.import_module(f"scflowlm.{sub}")
        for name in mod.__all__:
            pattern = rf"(^\s+{sub}\.{name}$)|(scflowlm\.{sub}\.{name}\b)"
            if not re.search(pattern, text, flags=re.MULTILINE):
                missing.append(f"scflowlm.{sub}.{name}")
    assert not missing, f"public names missing from docs/api.md: {missing}"


def test_no_machine_paths_in_docs():
    """Docs and tutorials carry no absolute paths of the machine they were written or executed on."""
    pattern = re.compile(r"(/work/|/tmp/|/home/\w+|/root/|site-packages)")
    files = [p for p in DOCS.rglob("*") if p.suffix in {".md", ".py", ".bib"} and "_build" not in p.parts]
    files += sorted((ROOT / "tutorials").glob("*.ipynb"))
    leaks = [
        f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in [pattern.search(p.read_text())] if m
    ]
    assert not leaks, f"machine paths in docs: {leaks}"


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    out = tmp_path / "html"
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(out),
    ]
    env = os.environ | {"PYTHONWARNINGS": "ignore"}  # Python deprecation noise of the doc tools themselves
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, (
        f"sphinx-build failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-12000:]}"
    )
    assert (out / "index.html").exists()
    assert (out / "tutorials" / "01_quickstart.html").exists()
    assert (out / "generated" / "scflowlm.CaLMFlowModel.html").exists()
