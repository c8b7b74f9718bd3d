"""The condition encoder: order-free, built from its parts, head-start parts without identity."""

from __future__ import annotations

import torch

from scflowlm.nn import ConditionEncoder


def encoder(**kwargs):
    torch.manual_seed(0)
    return ConditionEncoder(4, 8, **kwargs)


KNOWN = torch.ones(4, dtype=torch.bool)


def test_order_of_the_singles_does_not_matter():
    enc = encoder()
    members = torch.tensor([[0, 2], [2, 0], [1, -1]])
    out = enc(members, torch.zeros_like(members, dtype=torch.bool), KNOWN)
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])


def test_a_pair_is_the_mean_of_its_singles_and_a_control_is_zero():
    enc = encoder()
    members = torch.tensor([[0, 2], [0, -1], [2, -1], [-1, -1]])
    out = enc(members, torch.zeros_like(members, dtype=torch.bool), KNOWN)
    torch.testing.assert_close(out[0], (out[1] + out[2]) / 2)
    torch.testing.assert_close(out[3], torch.zeros(8))


def test_head_start_parts_read_alike_and_unseen_singles_have_no_identity():
    enc = encoder()
    with torch.no_grad():
        enc.in_prior.fill_(0.5)
    flags = torch.tensor([[True, True], [True, False], [False, False]])
    out = enc(torch.tensor([[0, 2], [3, -1], [1, -1]]), flags, torch.tensor([True, False, True, True]))
    torch.testing.assert_close(out[0], out[1])  # a covered pair reads as a covered single
    torch.testing.assert_close(out[2], torch.zeros(8))  # single 1 was never trained: no embedding


def test_gene_vectors_are_projected():
    enc = encoder(vector_size=3)
    vectors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    unknown = torch.zeros(4, dtype=torch.bool)  # no learned embedding: the vector alone speaks
    out = enc(torch.tensor([[0], [1]]), torch.zeros(2, 1, dtype=torch.bool), unknown, vectors)
    torch.testing.assert_close(out, enc.project(vectors[:2]))
