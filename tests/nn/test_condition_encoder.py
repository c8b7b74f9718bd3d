"""The condition encoder: order-free, built from its parts, covered parts without identity, its own vocabulary."""

from __future__ import annotations

import torch

from scflowlm.nn import ConditionEncoder


def encoder(known=None, vectors=None, **kwargs):
    torch.manual_seed(0)
    enc = ConditionEncoder(4, 8, **kwargs)
    enc.set_vocabulary(torch.ones(4, dtype=torch.bool) if known is None else known, vectors)
    return enc


def test_order_of_the_singles_does_not_matter():
    enc = encoder()
    members = torch.tensor([[0, 2], [2, 0], [1, -1]])
    out = enc(members, torch.zeros_like(members, dtype=torch.bool))
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])


def test_a_pair_is_the_mean_of_its_singles_and_a_control_is_zero():
    enc = encoder()
    members = torch.tensor([[0, 2], [0, -1], [2, -1], [-1, -1]])
    out = enc(members, torch.zeros_like(members, dtype=torch.bool))
    torch.testing.assert_close(out[0], (out[1] + out[2]) / 2)
    torch.testing.assert_close(out[3], torch.zeros(8))


def test_covered_parts_read_alike_and_unseen_singles_have_no_identity():
    enc = encoder(known=torch.tensor([True, False, True, True]))
    with torch.no_grad():
        enc.covered_token.fill_(0.5)
    covered = torch.tensor([[True, True], [True, False], [False, False]])
    out = enc(torch.tensor([[0, 2], [3, -1], [1, -1]]), covered)
    torch.testing.assert_close(out[0], out[1])  # a covered pair reads as a covered single
    torch.testing.assert_close(out[2], torch.zeros(8))  # single 1 was never trained: no embedding


def test_gene_vectors_are_projected():
    vectors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    enc = encoder(
        known=torch.zeros(4, dtype=torch.bool), vectors=vectors, vector_size=3
    )  # the vector alone speaks
    out = enc(torch.tensor([[0], [1]]), torch.zeros(2, 1, dtype=torch.bool))
    torch.testing.assert_close(out, enc.project(vectors[:2]))


def test_the_vocabulary_is_part_of_the_state():
    enc = encoder(known=torch.tensor([True, False, True, False]))
    state = enc.state_dict()
    assert state["known"].tolist() == [True, False, True, False]
    fresh = ConditionEncoder(4, 8)
    fresh.load_state_dict(state)
    assert fresh.known.tolist() == [True, False, True, False]
