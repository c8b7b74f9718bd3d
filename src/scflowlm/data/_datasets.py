"""Loaders for real perturbation data sets: download once, check the checksum, cache."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from pathlib import Path

import anndata as ad

__all__ = [
    "DONG2023_COLUMNS",
    "DONG2023_SHA256",
    "DONG2023_URL",
    "dong2023",
    "fetch",
    "kang2018",
    "perturbench_devel",
]

logger = logging.getLogger(__name__)

_PERTURBENCH_URL = (
    "https://raw.githubusercontent.com/altoslabs/perturbench/"
    "d357dfae3b50968e800e9f5f273ff145080ae67c/src/perturbench/data/resources/devel.h5ad"
)
_PERTURBENCH_SHA256 = "220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b"
_KANG_URL = "https://figshare.com/ndownloader/files/34464122"  # Kang 2018, ~25k PBMCs (pertpy's kang_2018)
_KANG_MUSCAT_SHA256 = "5bfd1cc338e7e98d29067cf271cc47a42ff13ab21f22537fb622b75e8806aa43"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_dir() -> Path:
    return Path(os.environ.get("SCFLOWLM_CACHE", Path.home() / ".cache" / "scflowlm"))


def fetch(url: str, *, filename: str, sha256: str | None, cache_dir: str | Path | None = None) -> Path:
    """Download ``url`` into the cache once and check its SHA-256.

    Parameters
    ----------
    url
        Where the file lives (``https://`` or ``file://``).
    filename
        Name of the cached file.
    sha256
        Expected checksum; ``None`` records the checksum of the first download beside the file and checks
        later reads against it.
    cache_dir
        Cache folder; defaults to ``$SCFLOWLM_CACHE`` or ``~/.cache/scflowlm``.

    Returns
    -------
    Path of the verified cached file.
    """
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / filename
    pinned = cache / (filename + ".sha256")
    if sha256 is None and pinned.exists():
        sha256 = pinned.read_text().strip()
    if not target.exists():
        logger.info("Downloading %s to %s", url, target)
        tmp = target.with_suffix(target.suffix + ".part")
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        tmp.replace(target)
    digest = _sha256(target)
    if sha256 is None:
        pinned.write_text(digest)
    elif digest != sha256:
        target.unlink()  # never keep (or later pin) a file that failed its check
        raise OSError(
            f"Checksum mismatch for {url} (cached as {target.name}): expected {sha256}, got {digest}. The file was "
            "removed; check sha256= and the URL, then call again to download it anew."
        )
    return target


def _read_local(path: str | Path, sha256: str | None) -> ad.AnnData:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No data file at {path}.")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of the .h5ad file in it.")
    if sha256 is not None and _sha256(path) != sha256:
        raise OSError(f"{path} is not the expected file (SHA-256 differs from {sha256}).")
    return _read_h5ad(path)


def _read_h5ad(path: Path) -> ad.AnnData:
    """``anndata.read_h5ad``, with a ValueError naming the file when it is not an h5ad file (a CSV, a text)."""
    try:
        return ad.read_h5ad(path)
    except OSError as err:  # h5py: "Unable to open file (file signature not found)"
        raise ValueError(
            f"{path} is not an .h5ad file ({err}); pass an AnnData file written by anndata (adata.write_h5ad)."
        ) from err


def perturbench_devel(path: str | Path | None = None, *, cache_dir: str | Path | None = None) -> ad.AnnData:
    """Norman 2019 K562 CRISPRa singles and pairs + sci-Plex-GxE glioblastoma lines (PerturBench devel set).

    5,961 cells x 500 log1p-normalised highly variable genes; ``obs["cell_type"]`` and ``obs["condition"]``
    (``"control"``, single genes, ``"A+B"`` pairs).

    Parameters
    ----------
    path
        A local copy of ``devel.h5ad`` (checked against the published checksum). ``None`` downloads it
        from the PerturBench repository into the cache.
    cache_dir
        Cache folder for the download.
    """
    if path is not None:
        return _read_local(path, _PERTURBENCH_SHA256)
    return _read_h5ad(
        fetch(
            _PERTURBENCH_URL,
            filename="perturbench_devel.h5ad",
            sha256=_PERTURBENCH_SHA256,
            cache_dir=cache_dir,
        )
    )


def kang2018(path: str | Path | None = None, *, cache_dir: str | Path | None = None) -> ad.AnnData:
    """Kang et al. 2018 PBMCs, control vs IFN-beta stimulation (raw counts).

    Parameters
    ----------
    path
        A local h5ad. The muscat example subset (1,556 cells, 5 cell types x 2 conditions x 2 donors;
        ``obs["cell_type"]``, ``obs["condition"]``) is recognised by its checksum; any other file is read as is.
    cache_dir
        Cache folder. ``path=None`` downloads the full data set (about 25k cells) that pertpy also uses; its
        checksum is pinned on the first download.
    """
    if path is not None:
        adata = _read_local(path, None)
        if _sha256(Path(path)) == _KANG_MUSCAT_SHA256:
            logger.info("Read the muscat example subset of Kang 2018.")
        return adata
    return _read_h5ad(fetch(_KANG_URL, filename="kang2018.h5ad", sha256=None, cache_dir=cache_dir))


#: Dong et al. 2023 (CINEMA-OT) PBMC cytokine stimulations, as pertpy's ``dong_2023`` serves it.
DONG2023_URL = "https://figshare.com/ndownloader/files/43068190"
#: Neither the authors nor pertpy publish a checksum, and the file cannot be fetched where this package is built:
#: without ``sha256=``, the checksum of the first download is pinned beside the cached file and checked on
#: every later read (see :func:`fetch`).
DONG2023_SHA256: str | None = None
#: obs columns of the paper's conditions: cell type (annotation of 2023-05-28), stimulation, exposure
DONG2023_COLUMNS = ("cell_type0528", "perturbation", "chronicity")


def dong2023(
    path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    sha256: str | None = DONG2023_SHA256,
    url: str = DONG2023_URL,
) -> ad.AnnData:
    """Dong et al. 2023 PBMCs (CINEMA-OT): cell types x cytokine stimulations x acute or chronic exposure.

    The real data set of the CaLMFlow paper (:cite:p:`he2024calmflow`): peripheral blood mononuclear cells
    stimulated with single cytokines or combinations, or left unstimulated (``"No stimulation"``), for a short
    (acute) or long (chronic) time. The paper's obs columns are kept: ``cell_type0528`` (also copied to
    ``cell_type``), ``perturbation`` (combinations written as in the source, e.g. ``"IFNb+ IFNg"``) and
    ``chronicity``. ``X`` is as published (raw counts: normalise and log1p before a PCA).

    Parameters
    ----------
    path
        A local copy of the h5ad (checked against ``sha256`` when given). ``None`` downloads it from ``url``
        into the cache once.
    cache_dir
        Cache folder for the download (default ``$SCFLOWLM_CACHE`` or ``~/.cache/scflowlm``).
    sha256
        Expected checksum; ``None`` pins the checksum of the first download (see :data:`DONG2023_SHA256`).
    url
        Where to download from (a mirror, or ``file://`` for a local copy to cache).

    Returns
    -------
    The AnnData, with ``obs["cell_type"]`` added when the file has only ``cell_type0528``.

    Examples
    --------
    The paper's prompt, with the unstimulated cells as controls:

    >>> import scanpy as sc
    >>> import scflowlm
    >>> adata = scflowlm.data.dong2023()
    >>> sc.pp.normalize_total(adata)
    >>> sc.pp.log1p(adata)
    >>> sc.pp.highly_variable_genes(adata, n_top_genes=2000, subset=True)
    >>> sc.pp.pca(adata, n_comps=50)
    >>> scflowlm.CaLMFlowModel.setup_anndata(
    ...     adata,
    ...     prompt_template="Generate a {cell_type} cell stimulated with {perturbation} and exposure {chronicity}:",
    ...     control_template="Generate a {cell_type} cell with no stimulation and exposure {chronicity}:",
    ...     perturbation_key="perturbation",
    ...     control_value="No stimulation",
    ... )
    """
    if path is not None:
        adata = _read_local(path, sha256)
    else:
        adata = _read_h5ad(fetch(url, filename="dong2023.h5ad", sha256=sha256, cache_dir=cache_dir))
    missing = [c for c in DONG2023_COLUMNS if c not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"This is not the Dong et al. 2023 file: obs lacks {missing} (it has {list(adata.obs.columns)[:10]})."
        )
    if "cell_type" not in adata.obs.columns:
        adata.obs["cell_type"] = adata.obs["cell_type0528"]
    return adata
