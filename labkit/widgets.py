"""Interactive explorers for the notebooks (introduced in 02_temperature and 11_decision_boundaries).

:func:`temperature_explorer` builds a small ipywidgets panel: a log-scale temperature slider and an image
picker, redrawing the teacher's softened distribution ``soft_targets(logits, T)`` and its entropy. The
computation lives in plain attributes (``probabilities``, ``entropy``), so the panel can be driven and
checked from code and tests as well as by hand.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.figure import Figure

from labkit.distillation import entropy, soft_targets
from labkit.toy import accuracy_on, fit, grid, grid_probabilities, mlp
from labkit.validate import check_alpha, check_temperature

T_MIN, T_MAX = 0.1, 20.0


class TemperatureExplorer:
    """A temperature slider and an image picker over fixed logits, with a bar plot and an entropy readout.

    Introduced in 02_temperature; build one with :func:`temperature_explorer` and show ``.widget``.
    Attributes: ``slider`` (``FloatLogSlider``, T from 0.1 to 20), ``picker`` (``Dropdown`` of image indices),
    ``readout`` (``HTML`` with the entropy), ``output`` (``Output`` holding the plot, fixed height),
    ``widget`` (the ``VBox`` to display), ``figure`` (the last matplotlib figure drawn) and the current
    ``T``, ``index``, ``probabilities`` (``soft_targets(logits[index], T)``) and ``entropy`` (bits).
    """

    def __init__(self, logits: torch.Tensor, images: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, T: float = 2.0,
                 labels: Sequence[str] | None = None, height: str = "330px") -> None:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
            raise ValueError("logits must be a tensor of shape (n_images, n_classes) with n_images >= 1, n_classes >= 2")
        n, c = logits.shape
        if images is not None and (not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) != n
                                   or images.shape[1] not in (1, 3)):
            raise ValueError(f"images must be None or a tensor of shape ({n}, 1 or 3, H, W) matching the logits")
        class_names = [str(i) for i in range(c)] if class_names is None else list(class_names)
        if len(class_names) != c:
            raise ValueError(f"{len(class_names)} class names for {c} classes")
        labels = [f"image {i}" for i in range(n)] if labels is None else list(labels)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} picker labels for {n} images")
        T = check_temperature(T)
        if not T_MIN <= T <= T_MAX:
            raise ValueError(f"T must lie in [{T_MIN}, {T_MAX}], the slider's range, got {T}")

        self.logits = logits.detach().float().cpu()
        self.images = None if images is None else images.detach().cpu()
        self.class_names = class_names
        self.figure: Figure | None = None
        self.slider = widgets.FloatLogSlider(
            value=T, base=10, min=math.log10(T_MIN), max=math.log10(T_MAX), step=0.01, description="T",
            readout_format=".2f", continuous_update=False, layout=widgets.Layout(width="420px"))
        self.picker = widgets.Dropdown(options=[(label, i) for i, label in enumerate(labels)], value=0,
                                       description="image")
        self.readout = widgets.HTML()
        self.output = widgets.Output(layout=widgets.Layout(height=height, overflow="hidden"))
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.picker]), self.readout, self.output])
        self.slider.observe(self._on_change, names="value")
        self.picker.observe(self._on_change, names="value")
        self.update()

    @property
    def T(self) -> float:
        """The temperature currently on the slider."""
        return float(self.slider.value)

    @property
    def index(self) -> int:
        """The row of ``logits`` currently picked."""
        return int(self.picker.value)

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self) -> None:
        """Recompute the distribution and entropy for the current T and image, then redraw (called on every change)."""
        self.probabilities = soft_targets(self.logits[self.index], self.T)
        self.entropy = float(entropy(self.probabilities))
        top = int(self.probabilities.argmax())
        max_bits = math.log2(len(self.class_names))
        self.readout.value = (
            f"<b>T = {self.T:.2f}</b>: entropy <b>{self.entropy:.3f} bits</b> "
            f"(one-hot 0, uniform {max_bits:.3f}); top class <i>{self.class_names[top]}</i> "
            f"{self.probabilities[top]:.1%}, the other {len(self.class_names) - 1} classes "
            f"{1 - self.probabilities[top]:.1%}")
        self._draw()

    def _draw(self) -> None:
        if self.images is None:
            fig, bars_ax = plt.subplots(figsize=(6.5, 3.2))
        else:
            fig, (img_ax, bars_ax) = plt.subplots(1, 2, figsize=(8.5, 3.2), width_ratios=(1, 2.6))
            img = self.images[self.index]
            img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
            img_ax.imshow(img.permute(1, 2, 0).clamp(0, 1).squeeze(-1).numpy(), interpolation="nearest",
                          cmap="gray" if img.shape[0] == 1 else None)
            img_ax.set_title(self.picker.label, fontsize=9)
            img_ax.axis("off")
        probs = self.probabilities.numpy()
        colors = ["tab:orange" if i == probs.argmax() else "tab:blue" for i in range(len(probs))]
        bars_ax.bar(range(len(probs)), probs, color=colors)
        bars_ax.axhline(1 / len(probs), color="gray", linestyle=":", linewidth=1, label="uniform")
        bars_ax.set_ylim(0, 1)
        bars_ax.set_xticks(range(len(probs)), self.class_names, rotation=35, ha="right", fontsize=8)
        bars_ax.set_ylabel("probability")
        bars_ax.set_title(f"soft_targets(logits, T={self.T:.2f}): entropy {self.entropy:.2f} bits")
        bars_ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        plt.close(fig)  # keep it out of the notebook's own output: it is shown inside the Output widget only
        self.figure = fig
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)


def temperature_explorer(logits: torch.Tensor, images: torch.Tensor | None = None,
                         class_names: Sequence[str] | None = None, T: float = 2.0,
                         labels: Sequence[str] | None = None) -> TemperatureExplorer:
    """A :class:`TemperatureExplorer` over ``logits`` (n_images x n_classes), introduced in 02_temperature.

    ``images`` (uint8 or float in [0, 1], n_images x C x H x W) are shown next to the bars when given;
    ``labels`` name the images in the picker. Display the result's ``.widget``; move the slider (log scale,
    0.1 to 20, updates on release) or pick another image, and the softened distribution and its entropy
    are recomputed with :func:`labkit.soft_targets`.
    """
    return TemperatureExplorer(logits, images, class_names, T, labels)


CLASS_COLORS = torch.tensor([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                             [0.58, 0.4, 0.74]])


def probability_image(probs: torch.Tensor) -> torch.Tensor:
    """Blend class colours by probability (H x W x classes -> H x W x 3): pure colour where the model is sure,
    mixed where it hesitates (introduced in 11_decision_boundaries)."""
    if probs.shape[-1] > len(CLASS_COLORS):
        raise ValueError(f"at most {len(CLASS_COLORS)} classes can be coloured, got {probs.shape[-1]}")
    return (probs @ CLASS_COLORS[: probs.shape[-1]]).clamp(0, 1)


class BoundaryExplorer:
    """T and alpha sliders that re-distill a tiny 2-D student from a fixed teacher and redraw it.

    Introduced in 11_decision_boundaries; build one with :func:`boundary_explorer` and show ``.widget``. Every
    change retrains the student from the same initial weights (``labkit.toy.fit`` with
    ``labkit.distillation_loss``) and draws the teacher's soft-probability landscape at T next to the student's
    decision regions. Attributes: ``T_slider``, ``alpha_slider``, ``readout``, ``output``, ``widget``,
    ``figure``, and after each update ``student``, ``accuracy`` (on the clean test points) and ``seconds``
    (the time the re-distillation took).
    """

    def __init__(self, teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, *, hidden: Sequence[int] = (16,), steps: int = 300, T: float = 2.0,
                 alpha: float = 0.9, seed: int = 0, resolution: int = 120, height: str = "360px") -> None:
        T, alpha = check_temperature(T), check_alpha(alpha)
        if not T_MIN <= T <= T_MAX:
            raise ValueError(f"T must lie in [{T_MIN}, {T_MAX}], the slider's range, got {T}")
        self.teacher, self.x, self.y, self.x_test, self.y_test = teacher.eval(), x, y, x_test, y_test
        self.hidden, self.steps, self.seed = tuple(hidden), steps, seed
        with torch.no_grad():
            self.teacher_logits = teacher(x)
        self.classes = self.teacher_logits.shape[1]
        self.xx, self.yy = grid(torch.cat([x, x_test]), resolution)
        self.figure: Figure | None = None
        self.T_slider = widgets.FloatLogSlider(value=T, base=10, min=math.log10(T_MIN), max=math.log10(T_MAX),
                                               step=0.01, description="T", readout_format=".2f",
                                               continuous_update=False)
        self.alpha_slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="alpha",
                                                readout_format=".2f", continuous_update=False)
        self.readout = widgets.HTML()
        self.output = widgets.Output(layout=widgets.Layout(height=height, overflow="hidden"))
        self.widget = widgets.VBox([widgets.HBox([self.T_slider, self.alpha_slider]), self.readout, self.output])
        self.T_slider.observe(self._on_change, names="value")
        self.alpha_slider.observe(self._on_change, names="value")
        self.update()

    @property
    def T(self) -> float:
        return float(self.T_slider.value)

    @property
    def alpha(self) -> float:
        return float(self.alpha_slider.value)

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self) -> None:
        """Re-distill the student for the current T and alpha, measure it, and redraw."""
        started = time.perf_counter()
        self.student = fit(mlp(self.hidden, self.classes, self.seed), self.x, self.y,
                           teacher_logits=self.teacher_logits, T=self.T, alpha=self.alpha, steps=self.steps)
        self.seconds = time.perf_counter() - started
        self.accuracy = accuracy_on(self.student, self.x_test, self.y_test)
        self.readout.value = (f"<b>T = {self.T:.2f}, alpha = {self.alpha:.2f}</b>: student test accuracy "
                              f"<b>{self.accuracy:.1%}</b> (re-distilled in {self.seconds:.2f} s)")
        self._draw()

    def _draw(self) -> None:
        extent = (float(self.xx.min()), float(self.xx.max()), float(self.yy.min()), float(self.yy.max()))
        teacher_probs = grid_probabilities(self.teacher, self.xx, self.yy, self.T)
        student_probs = grid_probabilities(self.student, self.xx, self.yy)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        panels = ((teacher_probs, f"teacher, soft targets at T = {self.T:.2f}"),
                  (torch.nn.functional.one_hot(student_probs.argmax(-1), self.classes).float() * 0.55
                   + student_probs * 0.45, f"student: regions (alpha = {self.alpha:.2f})"))
        for ax, (probs, title) in zip(axes, panels):
            ax.imshow(probability_image(probs).numpy(), origin="lower", extent=extent, interpolation="bilinear")
            ax.scatter(self.x[:, 0], self.x[:, 1], c=CLASS_COLORS[self.y].numpy(), s=6, edgecolors="k",
                       linewidths=0.2)
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        plt.close(fig)
        self.figure = fig
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)


def boundary_explorer(teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                      y_test: torch.Tensor, **options) -> BoundaryExplorer:
    """A :class:`BoundaryExplorer` (introduced in 11_decision_boundaries): display its ``.widget``."""
    return BoundaryExplorer(teacher, x, y, x_test, y_test, **options)
