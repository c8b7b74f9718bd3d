"""Gene vectors made offline, for perturbations never measured: gene text embeddings and PCA loadings.

Both kinds return what ``setup_anndata(..., perturbation_embeddings=...)`` takes: a float32 DataFrame with one
row per gene, indexed by the gene's name. Nothing is downloaded: the gene descriptions come from the NCBI Gene
table that ships inside the ``goatools`` wheel, and the text embedding model's weights and tokenizer ship inside
the ``wordllama`` wheel (both in the optional extra ``genes``). The loadings need the data only.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scflowlm._warnings import ScflowlmWarning

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import anndata as ad

__all__ = ["gene_descriptions", "gene_loading_embeddings", "gene_text_embeddings"]

_EXTRA = 'pip install "scflowlm[genes]"'
#: the goatools module of each species' NCBI protein-coding genes
_TABLES = {"human": "goatools.test_data.genes_NCBI_9606_ProteinCoding"}
#: most characters of a description
_MAX_CHARS = 400
#: the wordllama model: its 256-d static token embeddings, shipped in the wheel
_WORDLLAMA = {"config": "l2_supercat", "dim": 256}
#: most names a warning lists
_SHOW = 10


def _import(name: str, package: str):
    """Import an optional module; a missing package raises an ImportError that names the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"Gene vectors from text need the optional package {package!r}, which is not installed: {_EXTRA}."
        ) from err


def _names(genes: Iterable[str] | str, arg: str = "genes") -> list[str]:
    """The requested names as strings, each once, in the order given (a single string is one name)."""
    if isinstance(genes, str):
        genes = [genes]
    try:
        names = [str(g) for g in genes]
    except TypeError as err:
        raise TypeError(
            f"{arg} must be a list of gene names (or one name), got {type(genes).__name__}."
        ) from err
    return list(dict.fromkeys(names))


def _warn_left_out(names: list[str], why: str, *, stacklevel: int) -> None:
    """One warning naming (up to ``_SHOW`` of) the genes left out and why."""
    if not names:
        return
    shown = ", ".join(names[:_SHOW]) + (f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")
    warnings.warn(
        f"{len(names)} gene(s) left out ({why}): {shown}.", ScflowlmWarning, stacklevel=stacklevel + 1
    )


def _describe(symbol: str, description: str, designations: str) -> str:
    """``"SYMBOL: full name; designation; ..."``, designations added while the text stays within the limit."""
    text = f"{symbol}: {description}".strip()
    seen = {description.strip().lower()}
    for part in designations.split("|"):
        part = part.strip()
        if not part or part.lower() in seen:
            continue
        if len(text) + 2 + len(part) > _MAX_CHARS:
            break
        seen.add(part.lower())
        text += f"; {part}"
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3].rstrip() + "..."


@functools.lru_cache(maxsize=4)
def _gene_table(species: str) -> tuple[dict[str, str], dict[str, str]]:
    """``({SYMBOL: text}, {ALIAS: symbol})`` of a species' NCBI table, upper-case keys; parsed once per process.

    An alias that is also a symbol is not kept; an alias of several genes belongs to the lowest NCBI GeneID.
    """
    _import("goatools", "goatools")
    try:
        records = importlib.import_module(_TABLES[species]).GENEID2NT
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"This goatools version lacks the NCBI gene table {_TABLES[species]!r}; reinstall the extra: "
            f"{_EXTRA}."
        ) from err
    texts, aliases = {}, {}
    for gene_id in sorted(records):
        nt = records[gene_id]
        texts[nt.Symbol.upper()] = _describe(nt.Symbol, nt.description, nt.other_designations)
        for alias in nt.Aliases.split(","):
            aliases.setdefault(alias.strip().upper(), nt.Symbol)
    aliases.pop("", None)
    return texts, {a: s for a, s in aliases.items() if a not in texts}


def _descriptions(genes, species: str, *, stacklevel: int) -> pd.Series:
    if species not in _TABLES:
        raise ValueError(f"species={species!r} is not supported; choose one of {sorted(_TABLES)}.")
    names = _names(genes)
    texts, aliases = _gene_table(species)
    found, missing, renamed = {}, [], {}
    for name in names:
        key = name.strip().upper()
        via = "another case" if key in texts else "an alias"
        key = key if key in texts else aliases.get(key, "").upper()
        if key in texts:
            found[name] = texts[key]
            symbol = texts[key].split(":", 1)[0]
            if symbol != name.strip():
                renamed[name] = f"{symbol} ({via})"
        else:
            missing.append(name)
    if renamed:
        shown = ", ".join(f"{n!r} -> {s}" for n, s in list(renamed.items())[:_SHOW])
        warnings.warn(
            f"{len(renamed)} name(s) are not official symbols as written and were read as these genes: {shown}"
            f"{' ...' if len(renamed) > _SHOW else ''}. Check that they name genes (a short label such as 'ctrl' "
            "or 'NT' can resolve to an unrelated gene); leave out the ones that do not.",
            ScflowlmWarning,
            stacklevel=stacklevel + 1,
        )
    _warn_left_out(
        missing,
        f"neither a symbol nor an alias in the NCBI table of {species} protein-coding genes of 2016; check the "
        "spelling, or give gene_text_embeddings(descriptions=...) texts of your own",
        stacklevel=stacklevel + 1,
    )
    return pd.Series(found, index=pd.Index(list(found)), dtype=object, name="description")


def gene_descriptions(genes: Iterable[str] | str, *, species: str = "human") -> pd.Series:
    """A short text describing each gene, from the NCBI Gene table that ships with ``goatools`` (offline).

    The text is ``"SYMBOL: full name; other designation; ..."`` (for example ``"KLF1: Kruppel-like factor 1
    (erythroid); erythroid Kruppel-like factor; ..."``), the other designations (often functional names) added in
    the table's order while it stays within 400 characters. The table is NCBI Gene's 20,913 live human
    protein-coding genes of 2016-02-22 (``goatools.test_data.genes_NCBI_9606_ProteinCoding``), so symbols
    renamed since then are found under their 2016 symbol only when it lists the new one as an alias (``MAP3K21``,
    for example, is not found: it was ``KIAA1804`` then).

    Parameters
    ----------
    genes
        Gene symbols (or one symbol). Each is looked up case-insensitively, first among the official symbols,
        then among the aliases (``"MEK6"`` finds ``MAP2K6``). An official symbol always wins over an alias; an
        alias of several genes resolves to the one with the lowest NCBI GeneID. A name given twice is kept once.
    species
        Only ``"human"`` for now.

    Returns
    -------
    The texts, indexed by the requested names as given (the text itself starts with the official symbol). Names
    not found are left out, and one :class:`~scflowlm.ScflowlmWarning` names them.

    Notes
    -----
    The first call imports the table (about 0.2 s with goatools' compiled bytecode, about 3 s without it) and
    indexes it (about 0.1 s); the parsed table is cached for the rest of the process. ``goatools`` is
    BSD-3-Clause licensed; the NCBI Gene data are a work of the US government, in the public domain.
    """
    return _descriptions(genes, species, stacklevel=2)


@functools.lru_cache(maxsize=1)
def _text_model():
    """The 256-d static model of wordllama, from its own wheel, strictly offline; loaded once per process.

    ``WordLlama.load()`` looks for the tokenizer in a folder that the wheel does not have and would download it:
    with ``cache_dir`` set to the package's own folder, both files are found there, and ``disable_download``
    makes a missing file an error instead of a download. wordllama sets up the root logger at INFO level when
    imported; that setup is undone.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        wordllama = _import("wordllama", "wordllama")
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    try:
        return wordllama.WordLlama.load(
            **_WORDLLAMA, cache_dir=Path(wordllama.__file__).parent, disable_download=True
        )
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"The wordllama wheel lacks its bundled {_WORDLLAMA['config']} model files ({err}); reinstall it: "
            f"{_EXTRA}."
        ) from err


def gene_text_embeddings(
    genes: Iterable[str] | str, *, descriptions: pd.Series | Mapping[str, str] | None = None
) -> pd.DataFrame:
    """A 256-d vector of each gene from a text describing it, for ``setup_anndata(perturbation_embeddings=...)``.

    Each gene's description (:func:`gene_descriptions`, or your own) is embedded by wordllama's ``l2_supercat``
    model (static embeddings: the mean of its tokens' 256-d vectors) and scaled to unit length. The model's weights and tokenizer ship inside the
    wordllama wheel and are loaded from there; nothing is downloaded. Genes with related names and functions get
    similar vectors (``MAP2K3`` and ``MAP2K6`` are far closer than ``MAP2K3`` and ``HBB``), so a perturbation
    never measured borrows from measured ones that resemble it.

    Parameters
    ----------
    genes
        Gene names (or one name), as in the perturbation column; a name given twice is kept once.
    descriptions
        Your own texts (gene name -> text) to embed instead of :func:`gene_descriptions`: genes of other species,
        newer annotations, or richer texts. Genes without a non-empty text in it are left out.

    Returns
    -------
    float32, one row per gene with a description (index: its name as given), 256 columns. Genes left out are
    named in one :class:`~scflowlm.ScflowlmWarning`.

    Notes
    -----
    Loading the model takes about 0.5 s (once per process, cached), embedding 20 genes a few milliseconds; the
    first call without ``descriptions`` also loads the gene table (see :func:`gene_descriptions`). The vectors are
    deterministic.

    Licences: ``goatools`` is BSD-3-Clause; the NCBI Gene data are in the public domain; the wordllama code is
    MIT licensed, and its weights derive from the token embeddings of Llama 2, so the Llama 2 Community License
    Agreement's terms apply to them.
    """
    if descriptions is None:
        texts = _descriptions(genes, "human", stacklevel=2)
    else:
        if not isinstance(descriptions, pd.Series):
            try:
                descriptions = pd.Series(dict(descriptions), dtype=object)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    "descriptions must be a pandas Series (or dict) of gene name -> text, got "
                    f"{type(descriptions).__name__}."
                ) from err
        if not descriptions.index.is_unique:
            dup = descriptions.index[descriptions.index.duplicated()].unique()
            raise ValueError(
                f"descriptions has duplicate gene names: {list(dup[:_SHOW])}; keep one text each."
            )
        lookup = {str(k): v for k, v in descriptions.items()}
        names = _names(genes)
        ok = [n for n in names if isinstance(lookup.get(n), str) and lookup[n].strip()]
        kept = set(ok)
        _warn_left_out([n for n in names if n not in kept], "no text in descriptions", stacklevel=2)
        texts = pd.Series([lookup[n].strip() for n in ok], index=pd.Index(ok), dtype=object)
    dim = _WORDLLAMA["dim"]
    model = _text_model()
    values = model.embed(list(texts), norm=True) if len(texts) else np.zeros((0, dim))
    values = np.asarray(values, dtype=np.float32)
    return pd.DataFrame(values, index=pd.Index(texts.index.astype(str)), columns=_labels(values.shape[1]))


def gene_loading_embeddings(
    adata: ad.AnnData,
    *,
    genes: Iterable[str] | str | None = None,
    varm_key: str = "PCs",
    n_components: int | None = None,
) -> pd.DataFrame:
    """Each gene's PCA loadings: the data's own co-expression vector of the gene, for perturbation embeddings.

    Row ``g`` of ``adata.varm[varm_key]`` says how gene ``g`` weighs in each principal component, so genes that
    vary together get similar vectors. For a perturbation of gene ``g`` with no cells, these vectors let the model
    borrow from measured perturbations of co-expressed genes.

    Parameters
    ----------
    adata
        Cells x genes, with the loadings in ``adata.varm[varm_key]`` (``sc.pp.pca`` stores them there).
    genes
        The genes (perturbation names) to return; ``None``: every gene of ``adata.var_names``. Genes not in
        ``var_names`` are left out; a name given twice is kept once.
    varm_key
        The key of the loadings in ``adata.varm``.
    n_components
        Keep the first ``n_components`` columns (components); ``None``: all of them.

    Returns
    -------
    float32, one row per gene (index: its name), one column per component, equal to the rows of
    ``adata.varm[varm_key]``. Genes left out (not in ``var_names``, or whose loadings are all zero, as scanpy
    writes for genes outside the PCA's ``mask_var``/highly variable genes, or not finite) are named in one
    :class:`~scflowlm.ScflowlmWarning`.
    """
    if varm_key not in adata.varm:
        raise KeyError(
            f"varm_key={varm_key!r} is not in adata.varm (keys: {list(adata.varm)[:_SHOW]}): run "
            "sc.pp.pca(adata) first (it stores the loadings in adata.varm['PCs']), or pass the varm_key of yours."
        )
    loadings = np.asarray(adata.varm[varm_key], dtype=np.float64)
    if loadings.ndim != 2 or loadings.shape[1] == 0:
        raise ValueError(f"adata.varm[{varm_key!r}] must be a 2-D table with at least one column.")
    if n_components is not None:
        if not isinstance(n_components, int | np.integer) or not 1 <= n_components <= loadings.shape[1]:
            raise ValueError(
                f"n_components must be an integer from 1 to {loadings.shape[1]} (the columns of "
                f"adata.varm[{varm_key!r}]), got {n_components!r}."
            )
        loadings = loadings[:, :n_components]
    var_names = pd.Index(adata.var_names.astype(str))
    if not var_names.is_unique:
        raise ValueError("adata.var_names has duplicate gene names: run adata.var_names_make_unique() first.")
    names = list(var_names) if genes is None else _names(genes)
    rows = var_names.get_indexer(names)
    _warn_left_out(
        [n for n, r in zip(names, rows, strict=True) if r < 0], "not in adata.var_names", stacklevel=2
    )
    names, rows = [n for n, r in zip(names, rows, strict=True) if r >= 0], rows[rows >= 0]
    values = loadings[rows]
    usable = np.isfinite(values).all(1) & (values != 0).any(1)
    _warn_left_out(
        [n for n, ok in zip(names, usable, strict=True) if not ok],
        f"their adata.varm[{varm_key!r}] loadings are all zero (outside the PCA's genes) or not finite",
        stacklevel=2,
    )
    index = pd.Index([n for n, ok in zip(names, usable, strict=True) if ok])
    return pd.DataFrame(values[usable].astype(np.float32), index=index, columns=_labels(values.shape[1]))


def _labels(n: int) -> pd.Index:
    """Column labels ``"0" .. "n-1"``: text, so a table kept in ``adata.uns`` can be written to h5ad."""
    return pd.Index([str(i) for i in range(n)])
