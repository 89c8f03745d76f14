"""Tests for labkit.widgets: the temperature explorer of 02_temperature, driven from code as a learner would by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import entropy  # noqa: E402

from labkit import soft_targets  # noqa: E402
from labkit.data import CIFAR10_CLASSES  # noqa: E402
from labkit.widgets import TemperatureExplorer, temperature_explorer  # noqa: E402


@pytest.fixture
def logits() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, 10, generator=gen) * 3


@pytest.fixture
def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 3, 32, 32), generator=gen, dtype=torch.uint8)


def bar_heights(explorer: TemperatureExplorer) -> torch.Tensor:
    """The heights of the bars in the explorer's current figure (its last axes holds the bar plot)."""
    bars = explorer.figure.axes[-1].patches
    return torch.tensor([b.get_height() for b in bars], dtype=torch.float32)


def test_initial_state_is_soft_targets_at_the_given_T(logits, images):
    ex = temperature_explorer(logits, images, CIFAR10_CLASSES, T=2.0)
    assert isinstance(ex.widget, widgets.Box)
    torch.testing.assert_close(ex.probabilities, soft_targets(logits[0], 2.0))
    assert ex.entropy == pytest.approx(entropy(soft_targets(logits[0], 2.0).double().numpy(), base=2), rel=1e-5)
    assert "T = 2.00" in ex.readout.value and f"{ex.entropy:.3f} bits" in ex.readout.value
    torch.testing.assert_close(bar_heights(ex), ex.probabilities)


def test_moving_the_slider_recomputes_distribution_entropy_and_readout(logits, images):
    ex = temperature_explorer(logits, images, CIFAR10_CLASSES, T=2.0)
    before_entropy, before_text = ex.entropy, ex.readout.value
    ex.slider.value = 8.0
    assert ex.T == pytest.approx(8.0)
    torch.testing.assert_close(ex.probabilities, soft_targets(logits[0], 8.0))
    assert ex.entropy > before_entropy
    assert ex.readout.value != before_text and "T = 8.00" in ex.readout.value
    torch.testing.assert_close(bar_heights(ex), ex.probabilities)
    ex.slider.value = 0.5
    torch.testing.assert_close(ex.probabilities, soft_targets(logits[0], 0.5))
    assert ex.entropy < before_entropy


def test_picking_another_image_changes_the_distribution(logits, images):
    ex = temperature_explorer(logits, images, CIFAR10_CLASSES, T=3.0, labels=["a", "b", "c"])
    first = ex.probabilities.clone()
    ex.picker.value = 2
    assert ex.index == 2
    torch.testing.assert_close(ex.probabilities, soft_targets(logits[2], 3.0))
    assert not torch.allclose(ex.probabilities, first)
    assert ex.figure.axes[0].get_title() == "c"


def test_slider_and_layout_settings(logits):
    ex = temperature_explorer(logits)  # no images: bars only
    assert isinstance(ex.slider, widgets.FloatLogSlider)
    assert ex.slider.continuous_update is False
    assert 10**ex.slider.min == pytest.approx(0.1) and 10**ex.slider.max == pytest.approx(20.0)
    assert ex.output.layout.height  # a fixed height, so the page does not jump as plots redraw
    assert len(ex.figure.axes) == 1


@pytest.mark.parametrize("kwargs", [
    dict(logits=torch.zeros(10)),
    dict(logits=torch.zeros(2, 10), class_names=["a"] * 9),
    dict(logits=torch.zeros(2, 10), images=torch.zeros(3, 3, 32, 32, dtype=torch.uint8)),
    dict(logits=torch.zeros(2, 10), T=50.0),
    dict(logits=torch.zeros(2, 10), T=0.0),
])
def test_bad_inputs_raise(kwargs):
    with pytest.raises(ValueError):
        temperature_explorer(**kwargs)


@pytest.fixture(scope="module")
def spiral_problem():
    from labkit import toy
    x, y, _ = toy.spirals(n_per_class=80, seed=0)
    x_test, _, y_test = toy.spirals(n_per_class=80, seed=1, label_noise=0.0)
    teacher = toy.fit(toy.mlp((32, 32), seed=0), x, y, steps=200)
    return teacher, x, y, x_test, y_test


def test_boundary_explorer_redistills_when_the_sliders_move(spiral_problem):
    from labkit.widgets import boundary_explorer
    ex = boundary_explorer(*spiral_problem, steps=60, resolution=40, T=2.0, alpha=0.9)
    first = [p.detach().clone() for p in ex.student.parameters()]
    assert 0 <= ex.accuracy <= 1 and ex.seconds > 0 and "alpha = 0.90" in ex.readout.value
    ex.T_slider.value = 8.0
    assert ex.T == pytest.approx(8.0) and "T = 8.00" in ex.readout.value
    assert any(not torch.equal(a, b) for a, b in zip(first, ex.student.parameters()))
    # With alpha = 0 the teacher weighs nothing: the student no longer depends on T.
    ex.alpha_slider.value = 0.0
    labels_only = [p.detach().clone() for p in ex.student.parameters()]
    ex.T_slider.value = 1.0
    for a, b in zip(labels_only, ex.student.parameters()):
        torch.testing.assert_close(a, b)
    assert len(ex.figure.axes) == 2


def test_boundary_explorer_rejects_bad_settings(spiral_problem):
    from labkit.widgets import boundary_explorer
    with pytest.raises(ValueError):
        boundary_explorer(*spiral_problem, alpha=1.5)
    with pytest.raises(ValueError):
        boundary_explorer(*spiral_problem, T=50.0)
