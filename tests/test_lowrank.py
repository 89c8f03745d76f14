"""Low-rank factorization against its oracles: the original layer at full rank, the Eckart-Young error below it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from labkit import models
from labkit.lowrank import (LowRankError, factorizable_layers, factorize, factorize_conv, factorize_linear, full_rank,
                            rank_for_energy, singular_values)
from labkit.pretrained import load_pretrained


def _conv_weight(pair: nn.Sequential) -> torch.Tensor:
    """The k x k weight that the vertical-then-horizontal pair computes."""
    vertical, horizontal = pair
    return torch.einsum("riy,orx->oiyx", vertical.weight[..., 0].double(), horizontal.weight[:, :, 0].double())


def _tail(values: torch.Tensor, rank: int) -> float:
    return float(values[rank:].pow(2).sum().sqrt())


def test_linear_at_full_rank_is_the_layer():
    torch.manual_seed(0)
    layer = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    assert torch.allclose(factorize_linear(layer, full_rank(layer))(x), layer(x), atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_linear_truncation_error_is_the_dropped_singular_values(rank):
    torch.manual_seed(1)
    layer = nn.Linear(10, 8, bias=False)
    first, second = factorize_linear(layer, rank)
    with torch.no_grad():
        error = torch.linalg.matrix_norm(layer.weight.double() - second.weight.double() @ first.weight.double())
    assert float(error) == pytest.approx(_tail(singular_values(layer), rank), rel=1e-4, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(c_in=st.integers(1, 6), c_out=st.integers(1, 6), k=st.sampled_from([1, 2, 3, 5]),
       padding=st.sampled_from(["same", "valid", 0, 1, 2]), bias=st.booleans())
def test_conv_at_full_rank_is_the_convolution(c_in, c_out, k, padding, bias):
    torch.manual_seed(c_in * 31 + c_out)
    conv = nn.Conv2d(c_in, c_out, k, padding=padding, bias=bias)
    x = torch.randn(2, c_in, 9, 8)
    pair = factorize_conv(conv, full_rank(conv))
    assert torch.allclose(pair(x), conv(x), atol=1e-5)


@pytest.mark.parametrize("rank", [1, 4, 10])
def test_conv_truncation_meets_the_eckart_young_bound(rank):
    torch.manual_seed(2)
    conv = models.Conv(6, 5)  # the course's 3x3 'same' convolution
    nn.init.normal_(conv.weight)
    pair = factorize_conv(conv, rank).requires_grad_(False)
    error = torch.linalg.vector_norm(conv.weight.detach().double() - _conv_weight(pair))
    assert float(error) == pytest.approx(_tail(singular_values(conv), rank), rel=1e-4, abs=1e-6)
    # and the pair computes the convolution with that reconstructed weight, padding included
    x = torch.randn(2, 6, 7, 7)
    expected = nn.functional.conv2d(x.double(), _conv_weight(pair), padding="same")
    assert torch.allclose(pair(x).double(), expected, atol=1e-5)


def test_rank_for_energy_on_a_hand_made_spectrum():
    values = torch.tensor([4.0, 3.0])  # squares 16, 9: the first keeps 64%
    assert rank_for_energy(values, 0.64) == 1
    assert rank_for_energy(values, 0.65) == 2
    assert rank_for_energy(values, 1.0) == 2
    with pytest.raises(LowRankError, match="energy"):
        rank_for_energy(values, 0)


@pytest.mark.parametrize("rank", [0, -1, 19])
def test_bad_ranks_say_the_allowed_range(rank):
    conv = nn.Conv2d(6, 4, 3)  # full rank min(6 * 3, 4 * 3) = 12; 19 is above it
    with pytest.raises(LowRankError, match="between 1 and the layer's full rank 12"):
        factorize_conv(conv, rank if rank != 19 else 13)
    with pytest.raises(LowRankError, match="full rank 4"):
        factorize_linear(nn.Linear(4, 9), 5 if rank == 19 else rank)


@pytest.mark.parametrize("layer, words", [
    (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
    (nn.Conv2d(4, 4, 3, stride=2), "stride=(2, 2)"),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode=reflect"),
    (nn.BatchNorm2d(4), "BatchNorm2d"),
])
def test_layers_it_cannot_factorize_are_named(layer, words):
    with pytest.raises(LowRankError, match=words.replace("(", r"\(").replace(")", r"\)")):
        full_rank(layer)


def test_non_finite_weights_are_refused():
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(LowRankError, match="NaN or infinity"):
        factorize_linear(layer, 1)


def test_factorize_needs_exactly_one_of_ranks_and_energy():
    model = models.create("student_small")
    with pytest.raises(LowRankError, match="either ranks"):
        factorize(model)
    with pytest.raises(LowRankError, match="either ranks"):
        factorize(model, ranks={"head": 1}, energy=0.9)
    with pytest.raises(LowRankError, match="no factorizable layer named"):
        factorize(model, ranks={"pool": 1})


def test_factorizable_layers_skip_the_whitening_stem_even_of_a_frozen_teacher():
    teacher = models.create("teacher")
    names = set(factorizable_layers(teacher))
    assert "stem" not in names and {"layers.0.conv1", "layers.2.conv2", "head"} <= names
    assert set(factorizable_layers(teacher.requires_grad_(False))) == names, "distillation freezes its teacher"


def test_a_trained_student_at_full_rank_predicts_as_before_and_keeps_batchnorm():
    student = load_pretrained("student_small_scratch").eval()
    ranks = {name: full_rank(layer) for name, layer in factorizable_layers(student).items()}
    copy_ = factorize(student, ranks=ranks).eval()
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(copy_(x), student(x), atol=1e-4)
    assert copy_.lowrank_ranks == ranks
    assert torch.equal(copy_.layers[1].norm1.running_var, student.layers[1].norm1.running_var)
    assert isinstance(student.layers[0].conv1, nn.Conv2d)  # the original is left alone


def test_factorized_by_energy_is_cheaper_and_trains():
    student = load_pretrained("student_small_scratch")
    small = factorize(student, energy=0.8)
    assert small.lowrank_ranks and models.count_parameters(small) < models.count_parameters(student)
    assert models.forward_flops(small) < models.forward_flops(student)
    small.train()
    loss = nn.functional.cross_entropy(small(torch.rand(8, 3, 32, 32)), torch.arange(8))
    loss.backward()
    grads = [p.grad for p in small.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
