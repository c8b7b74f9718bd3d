from __future__ import annotations

import hashlib

import pytest
from helpers import shared_file

import scflowlm
from scflowlm.data import fetch


def test_fetch_downloads_once_and_checks(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"hello cells")
    digest = hashlib.sha256(b"hello cells").hexdigest()
    cache = tmp_path / "cache"
    path = fetch(src.as_uri(), filename="f.bin", sha256=digest, cache_dir=cache)
    assert path.read_bytes() == b"hello cells"
    src.unlink()  # a second call reads the cache, no download
    assert fetch(src.as_uri(), filename="f.bin", sha256=digest, cache_dir=cache) == path
    with pytest.raises(OSError, match="Checksum mismatch"):
        fetch(src.as_uri(), filename="f.bin", sha256="0" * 64, cache_dir=cache)


def test_fetch_pins_unknown_checksum(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"v1")
    cache = tmp_path / "c"
    path = fetch(src.as_uri(), filename="a.bin", sha256=None, cache_dir=cache)
    path.write_bytes(b"tampered")
    with pytest.raises(OSError, match="Checksum mismatch"):
        fetch(src.as_uri(), filename="a.bin", sha256=None, cache_dir=cache)


@pytest.mark.data
def test_perturbench_devel_local_file_is_verified():
    adata = scflowlm.data.perturbench_devel(shared_file("data", "perturbench_devel", "devel.h5ad"))
    assert adata.shape == (5961, 500)
    assert {"cell_type", "condition"} <= set(adata.obs.columns)


@pytest.mark.data
def test_kang_local_file():
    adata = scflowlm.data.kang2018(
        shared_file("data", "kang2018_muscat_example", "kang2018_muscat_example_sce.h5ad")
    )
    assert adata.n_obs == 1556


def _dong_like(path):
    """A small file with the columns of Dong et al. 2023."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    obs = pd.DataFrame(
        {
            "cell_type0528": ["CD4 T", "B", "Monocyte", "CD4 T"],
            "perturbation": ["IFNb", "No stimulation", "IFNb+ IFNg", "No stimulation"],
            "chronicity": ["acute", "acute", "chronic", "chronic"],
        },
        index=[f"c{i}" for i in range(4)],
    )
    ad.AnnData(np.arange(8, dtype=np.float32).reshape(4, 2), obs=obs).write_h5ad(path)
    return path


def test_dong2023_reads_a_local_file_and_keeps_the_paper_columns(tmp_path):
    adata = scflowlm.data.dong2023(_dong_like(tmp_path / "dong.h5ad"))
    assert list(adata.obs["cell_type"]) == ["CD4 T", "B", "Monocyte", "CD4 T"]
    assert {"perturbation", "chronicity", "cell_type0528"} <= set(adata.obs.columns)
    scflowlm.data.PromptBuilder(
        "Generate a {cell_type} cell stimulated with {perturbation} and exposure {chronicity}:",
        perturbation_key="perturbation",
    )  # the docstring's template parses on these columns


def test_dong2023_download_is_cached_pinned_and_refuses_another_checksum(tmp_path):
    src = _dong_like(tmp_path / "published.h5ad")
    cache = tmp_path / "cache"
    first = scflowlm.data.dong2023(cache_dir=cache, url=src.as_uri())
    assert (cache / "dong2023.h5ad.sha256").exists()
    assert first.n_obs == 4
    with pytest.raises(OSError, match="Checksum mismatch"):
        scflowlm.data.dong2023(cache_dir=cache, url=src.as_uri(), sha256="0" * 64)
    with pytest.raises(OSError, match="SHA-256 differs"):
        scflowlm.data.dong2023(src, sha256="0" * 64)


def test_dong2023_rejects_another_file(tmp_path):
    import anndata as ad
    import numpy as np

    other = tmp_path / "other.h5ad"
    ad.AnnData(np.zeros((2, 2), dtype=np.float32)).write_h5ad(other)
    with pytest.raises(ValueError, match=r"not the Dong et al. 2023 file: obs lacks \['cell_type0528'"):
        scflowlm.data.dong2023(other)


def test_fetch_never_keeps_a_file_that_failed_its_checksum(tmp_path):
    """Bug 8: the failed file stayed in the cache, and the next call with sha256=None pinned and returned it."""
    src = tmp_path / "good.bin"
    src.write_bytes(b"the real data")
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="Checksum mismatch .*The file was removed"):
        fetch(src.as_uri(), filename="f.bin", sha256="1" * 64, cache_dir=cache)
    assert not (cache / "f.bin").exists()
    src.write_bytes(b"the data, fixed upstream")
    path = fetch(src.as_uri(), filename="f.bin", sha256=None, cache_dir=cache)  # downloaded anew, then pinned
    assert path.read_bytes() == b"the data, fixed upstream"


@pytest.mark.parametrize(
    "loader", [scflowlm.data.kang2018, scflowlm.data.dong2023, scflowlm.data.perturbench_devel]
)
def test_loaders_name_a_folder_or_a_non_h5ad_file(loader, tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; pass the path of the .h5ad file"):
        loader(tmp_path)
    csv = tmp_path / "cells.csv"
    csv.write_text("cell,gene\na,1\n")
    match = (
        "is not an .h5ad file" if loader is not scflowlm.data.perturbench_devel else "not the expected file"
    )
    with pytest.raises((ValueError, OSError), match=match):
        loader(csv)
