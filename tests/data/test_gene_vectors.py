"""Gene vectors made offline: NCBI descriptions, their wordllama embeddings, PCA loadings. No network at all."""

from __future__ import annotations

import socket
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import _gene_vectors as gv
from scflowlm.data import check_gene_vectors, gene_descriptions, gene_loading_embeddings, gene_text_embeddings


def _no_network(*args, **kwargs):
    raise AssertionError("gene vectors must not touch the network")


@pytest.fixture(autouse=True, scope="module")
def no_sockets():
    """Any download attempt fails the test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        yield


def _cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ------------------------------------------------------------------ descriptions
def test_descriptions_hold_symbol_and_full_name():
    s = gene_descriptions(["KLF1", "MAP2K6", "hbb"])
    assert list(s.index) == ["KLF1", "MAP2K6", "hbb"]  # the names as given
    assert s["KLF1"].startswith("KLF1: Kruppel-like factor 1")
    assert "mitogen-activated protein kinase kinase 6" in s["MAP2K6"]
    assert s["hbb"].startswith("HBB: hemoglobin subunit beta")  # case-insensitive
    assert s.map(len).max() <= 400
    assert gene_descriptions("KLF1").equals(s[["KLF1"]])  # one name as a string


def test_every_description_is_short():
    texts, _ = gv._gene_table("human")
    assert len(texts) == 20913
    assert max(map(len, texts.values())) <= 400


def test_alias_resolves_and_symbol_wins():
    s = gene_descriptions(["MEK6", "MLK4", "AAC1", "ADCY3"])
    assert s["MEK6"].startswith("MAP2K6:")
    assert s["MLK4"].startswith("KIAA1804: mixed lineage kinase 4")  # the 2016 name of MAP3K21
    assert s["AAC1"].startswith("NAT1:")  # alias of NAT1 (GeneID 9) and SLC25A4 (291): lowest GeneID
    assert s["ADCY3"].startswith("ADCY3:")  # a symbol, and an alias of ADCY8: the symbol wins


def test_unknown_genes_warn_once_and_are_left_out():
    unknown = [f"NOTAGENE{i}" for i in range(12)]
    with pytest.warns(ScflowlmWarning) as record:
        s = gene_descriptions(["KLF1", *unknown, "KLF1"])
    assert len(record) == 1
    message = str(record[0].message)
    assert "NOTAGENE0" in message
    assert "NOTAGENE11" not in message
    assert "2 more" in message
    assert list(s.index) == ["KLF1"]  # a name given twice is kept once


def test_unknown_species_names_the_choices():
    with pytest.raises(ValueError, match="species='yeast'.*human"):
        gene_descriptions(["KLF1"], species="yeast")


def test_missing_goatools_says_how_to_install(monkeypatch):
    gv._gene_table.cache_clear()
    monkeypatch.setitem(sys.modules, "goatools", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "scflowlm\[genes\]"'):
            gene_descriptions(["KLF1"])
    finally:
        gv._gene_table.cache_clear()


# ------------------------------------------------------------------ text embeddings
def test_text_embeddings_are_unit_deterministic_and_accepted_by_setup():
    genes = ["MAP2K3", "MAP2K6", "HBB", "KLF1"]
    a, b = gene_text_embeddings(genes), gene_text_embeddings(genes)
    assert a.shape == (4, 256)
    assert list(a.index) == genes
    assert (a.dtypes == np.float32).all()
    assert np.isfinite(a.to_numpy()).all()
    np.testing.assert_allclose(np.linalg.norm(a.to_numpy(), axis=1), 1.0, rtol=1e-5)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [str(i) for i in range(256)]  # text labels: writable to h5ad from adata.uns
    checked = check_gene_vectors(a)
    pd.testing.assert_frame_equal(checked, a)


def test_related_genes_are_closer():
    e = gene_text_embeddings(["MAP2K3", "MAP2K6", "HBB", "HBA1", "CDK1", "CDK2"])
    assert _cosine(e.loc["MAP2K3"], e.loc["MAP2K6"]) > _cosine(e.loc["MAP2K3"], e.loc["HBB"]) + 0.3
    assert _cosine(e.loc["HBB"], e.loc["HBA1"]) > _cosine(e.loc["HBB"], e.loc["CDK1"])
    assert _cosine(e.loc["CDK1"], e.loc["CDK2"]) > _cosine(e.loc["CDK1"], e.loc["MAP2K6"])


def test_model_loads_from_the_wheel_offline():
    gv._text_model.cache_clear()  # load again, under the blocked network
    e = gene_text_embeddings(["KLF1"])
    assert e.shape == (1, 256)


def test_text_embeddings_warn_for_unknown_genes():
    with pytest.warns(ScflowlmWarning, match="NOTAGENE"):
        e = gene_text_embeddings(["NOTAGENE", "KLF1"])
    assert list(e.index) == ["KLF1"]


def test_own_descriptions_are_embedded():
    own = pd.Series({"Klf1": "Kruppel-like factor 1, erythroid", "Hbb-bs": "hemoglobin beta", "Empty": " "})
    with pytest.warns(ScflowlmWarning, match="Empty, Gata1"):
        e = gene_text_embeddings(["Klf1", "Hbb-bs", "Empty", "Gata1"], descriptions=own)
    assert list(e.index) == ["Klf1", "Hbb-bs"]
    same = gene_text_embeddings(["Klf1"], descriptions=dict(own))
    np.testing.assert_array_equal(same.loc["Klf1"], e.loc["Klf1"])
    ncbi = gene_descriptions(["KLF1"])
    pd.testing.assert_frame_equal(
        gene_text_embeddings(["KLF1"], descriptions=ncbi), gene_text_embeddings(["KLF1"])
    )


def test_own_descriptions_must_be_unique_and_a_table():
    with pytest.raises(ValueError, match="duplicate gene names"):
        gene_text_embeddings(["A"], descriptions=pd.Series(["x", "y"], index=["A", "A"]))
    with pytest.raises(TypeError, match="descriptions must be"):
        gene_text_embeddings(["A"], descriptions=3)


def test_no_genes_found_gives_an_empty_table():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScflowlmWarning)
        e = gene_text_embeddings(["NOTAGENE"])
    assert e.shape == (0, 256)


def test_missing_wordllama_says_how_to_install(monkeypatch):
    gv._text_model.cache_clear()
    monkeypatch.setitem(sys.modules, "wordllama", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "scflowlm\[genes\]"'):
            gene_text_embeddings(["KLF1"])
    finally:
        gv._text_model.cache_clear()


# ------------------------------------------------------------------ loadings
@pytest.fixture
def adata():
    rng = np.random.default_rng(0)
    out = ad.AnnData(
        np.zeros((3, 5), dtype=np.float32), var=pd.DataFrame(index=["G1", "G2", "G3", "G4", "G5"])
    )
    out.varm["PCs"] = rng.normal(size=(5, 4)).astype(np.float32)
    return out


def test_loadings_are_the_varm_rows(adata):
    e = gene_loading_embeddings(adata)
    assert list(e.index) == list(adata.var_names)
    assert (e.dtypes == np.float32).all()
    np.testing.assert_array_equal(e.to_numpy(), adata.varm["PCs"])
    sub = gene_loading_embeddings(adata, genes=["G4", "G2"], n_components=2)
    np.testing.assert_array_equal(sub.to_numpy(), adata.varm["PCs"][[3, 1], :2])
    assert list(sub.index) == ["G4", "G2"]


def test_loadings_leave_out_unknown_and_zero_genes(adata):
    adata.varm["PCs"][2] = 0.0  # outside the PCA's highly variable genes
    with pytest.warns(ScflowlmWarning) as record:
        e = gene_loading_embeddings(adata, genes=["G1", "NOPE", "G3"])
    messages = [str(r.message) for r in record]
    assert len(messages) == 2
    assert "NOPE" in messages[0]
    assert "var_names" in messages[0]
    assert "G3" in messages[1]
    assert "zero" in messages[1]
    assert list(e.index) == ["G1"]


def test_loadings_missing_key_says_run_pca(adata):
    with pytest.raises(KeyError, match=r"sc\.pp\.pca"):
        gene_loading_embeddings(adata, varm_key="X_missing")


def test_loadings_check_their_arguments(adata):
    with pytest.raises(ValueError, match="n_components must be an integer from 1 to 4"):
        gene_loading_embeddings(adata, n_components=5)
    adata.var_names = ["G1", "G1", "G3", "G4", "G5"]
    with pytest.raises(ValueError, match="var_names_make_unique"):
        gene_loading_embeddings(adata)


def test_a_name_read_as_another_symbol_is_said():
    """Aliases resolved short labels silently ('NT' -> NT5E, 'B' -> ELF2)."""
    with pytest.warns(ScflowlmWarning, match=r"not official symbols as written .*'NT' -> NT5E \(an alias\)"):
        texts = gene_descriptions(["KLF1", "NT"])
    assert texts["NT"].startswith("NT5E:")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScflowlmWarning)
        gene_descriptions(["KLF1", "MAP2K6"])  # official symbols: nothing to say
