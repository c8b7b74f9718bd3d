"""The house style, checked by machine: signatures of tl/pl, plotting arguments, layering of nn/ and module/."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from scflowlm import pl, tl

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "scflowlm"
#: public functions whose first argument is not AnnData, and why
NOT_ANNDATA_FIRST = {
    "pl.history": "plots a model's training history (or that history dict)",
    "tl.compare": "compares tables of scores of several predictors (no AnnData)",
    "pl.compare": "plots the table of tl.compare",
}


def _public_functions(module, prefix: str):
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            yield f"{prefix}.{name}", obj


@pytest.mark.parametrize(("name", "fn"), [*_public_functions(tl, "tl"), *_public_functions(pl, "pl")])
def test_first_argument_adata_then_keyword_only(name, fn):
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if name not in NOT_ANNDATA_FIRST:
        assert positional, f"{name} takes no positional argument"
        assert positional[0].name.startswith("adata"), (
            f"{name}: first argument {positional[0].name!r}, not adata"
        )
    extra = [p.name for p in positional[1:] if not p.name.startswith("adata")]
    assert not extra, f"{name}: {extra} should be keyword-only (after *)"


@pytest.mark.parametrize(("name", "fn"), list(_public_functions(pl, "pl")))
def test_plots_take_ax_show_return_fig(name, fn):
    params = inspect.signature(fn).parameters
    for arg in ("ax", "show", "return_fig"):
        assert arg in params, f"{name} lacks {arg}="
    assert params["ax"].default is None
    assert params["show"].default is None
    assert params["return_fig"].default is False


@pytest.mark.parametrize("package", ["nn", "module"])
def test_torch_layers_import_no_anndata(package):
    """nn/ and module/ are pure torch: no anndata, scanpy or scvi AnnData machinery (module/ may use scvi's base)."""
    for path in (SRC / package).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for n in names:
                assert n.split(".")[0] not in ("anndata", "scanpy"), f"{path.name} imports {n}"
                assert not n.startswith(("scvi.data", "scvi.model")), f"{path.name} imports {n}"


def test_public_modules_list_their_names():
    """Every subpackage re-exports its names with __all__, and each name exists."""
    import scflowlm

    for sub in scflowlm.__all__:
        mod = getattr(scflowlm, sub)
        if inspect.ismodule(mod):
            assert hasattr(mod, "__all__"), f"scflowlm.{sub} has no __all__"
            for name in mod.__all__:
                assert hasattr(mod, name), f"scflowlm.{sub}.{name} is listed but missing"


def test_no_source_file_is_too_long_to_read_at_once():
    long = {
        p.relative_to(SRC).as_posix(): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"files over 400 lines: {long}"


def _imports(path: Path, src: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every ``from ... import`` of a source file under ``src``."""
    package = ["scflowlm", *path.relative_to(src).parent.parts]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((module, [a.name for a in node.names]))
    return out


def cross_package_private_imports(src: Path = SRC) -> list[str]:
    """Imports that reach into another subpackage's private modules or names.

    A subpackage (``tl``, ``pl``, ``model``, ...) may import another's public names only. Package-level private
    modules (``scflowlm._utils``, ``scflowlm._constants``, ...) exist to be shared; their names are public.
    """
    bad = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        own = rel.parts[0] if len(rel.parts) > 1 else None
        for module, names in _imports(path, src):
            parts = module.split(".")
            if parts[0] != "scflowlm" or len(parts) < 2 or parts[1] == own:
                continue
            shared = parts[1].startswith("_")  # a package-level private module
            private = [n for n in names if n.startswith("_")]
            if not shared:
                private += [p for p in parts[2:] if p.startswith("_")]
            if private:
                bad.append(f"{rel.as_posix()}: from {module} import {', '.join(names)}")
    return bad


def test_only_public_names_cross_subpackage_borders():
    """A subpackage imports another's public names; what several share lives in scflowlm._utils."""
    bad = cross_package_private_imports()
    assert not bad, "imports of another subpackage's private names:\n" + "\n".join(bad)


def _allowed_imports() -> dict[str, set[str]]:
    """The "may import" table of docs/contributing.md: subpackage -> the scflowlm subpackages it may import."""
    table = {}
    for line in (ROOT / "docs" / "contributing.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`scflowlm."):
            package = cells[0].strip("`").split(".", 1)[1]
            table[package] = {m.strip("`") for m in re.findall(r"`[^`]+`", cells[2])}
    return table


def subpackage_imports_outside_the_table(src: Path = SRC) -> list[str]:
    """Imports of a scflowlm subpackage that the "may import" table does not allow (package-level leaf modules such
    as ``_constants`` and ``_warnings`` may be imported by all)."""
    allowed, bad = _allowed_imports(), []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if len(rel.parts) < 2:
            continue
        own = rel.parts[0]
        for module, _ in _imports(path, src):
            parts = module.split(".")
            if parts[0] != "scflowlm" or len(parts) < 2 or parts[1] == own:
                continue
            target = parts[1]
            if target.startswith("_") and target != "_utils":
                continue
            if target not in allowed.get(own, set()):
                bad.append(f"{rel.as_posix()} imports scflowlm.{target}")
    return bad


def test_subpackages_import_only_what_the_contributing_page_allows():
    """The "may import" table of docs/contributing.md, checked: it would have caught _utils/_obs.py importing data
    before the table said so."""
    assert set(_allowed_imports()) >= {
        "data",
        "_utils",
        "nn",
        "module",
        "train",
        "metrics",
        "model",
        "tl",
        "pl",
    }
    bad = subpackage_imports_outside_the_table()
    assert not bad, "imports the contributing page does not allow:\n" + "\n".join(sorted(set(bad)))


def test_the_import_check_catches_an_import_the_table_forbids(tmp_path):
    fake = tmp_path / "scflowlm"
    (fake / "nn").mkdir(parents=True)
    (fake / "nn" / "_x.py").write_text(
        "from scflowlm.data import ConditionTable\nfrom .._warnings import W\n"
    )
    (fake / "_utils").mkdir()
    (fake / "_utils" / "_y.py").write_text("from ..tl import evaluate\n")
    assert subpackage_imports_outside_the_table(fake) == [
        "_utils/_y.py imports scflowlm.tl",
        "nn/_x.py imports scflowlm.data",
    ]
