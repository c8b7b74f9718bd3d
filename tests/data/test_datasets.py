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
