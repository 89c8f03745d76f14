"""Making a trained model smaller and faster: pruning, int8 quantization and the engines that run them on a CPU
(introduced in 09_compress_and_deploy).

Pruning

* :func:`prune_unstructured` zeroes the smallest weights (``torch.nn.utils.prune``): the file compresses, but dense
  CPU kernels multiply zeros as fast as any other number, so it does not run faster; :func:`to_sparse` stores and
  multiplies only the non-zero weights (CSR sparse kernels) to measure what the zeros are worth.
* :func:`prune_channels` removes whole channels inside each stage and returns a physically narrower network:
  fewer FLOPs, so it does run faster. :func:`reestimate_batchnorm` then gives its BatchNorm layers the statistics
  of what they now see, and :func:`sensitivity_scan` measures how much each stage can lose.

Deployment engines, each with an fp32 and an int8 version

* PyTorch: :func:`compile_fp32` and :func:`compile_int8` capture the model with ``torch.export`` and compile it
  with ``torch.compile`` (Inductor, with weight freezing). int8 is post-training static quantization with torchao's
  PT2E flow and ``X86InductorQuantizer`` (:func:`quantize_pt2e`, :func:`quantization_config`: 8-bit weights, or
  4-bit ones that simulate a harsher quantization on the same kernels), which Inductor lowers to oneDNN int8
  convolutions fused with their neighbours. :func:`prepare_qat` and :func:`convert_qat` are the quantization-aware
  version: fine-tune the fake-quantized model (e.g. with :func:`labkit.train.distill`), then compile the same int8
  kernels. The uncompiled :class:`QuantizedModel` has the same numbers, for accuracy without a compilation;
  :func:`quantized_weight` reads the int8 weight and scales it stores for one layer.
* ONNX Runtime, the portable engine: :func:`export_onnx`, :func:`quantize_onnx_int8` (static QDQ quantization,
  per-channel weights) and :class:`OnnxModel`, which runs a file like a module.

Every deployed model takes images as the eager models do (uint8 in 0..255, or float in [0, 1]; any batch size;
:func:`labkit.models.as_model_input`) and returns float logits, so :mod:`labkit.evaluate` and
:mod:`labkit.speed` measure them like any other model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from labkit.atomic import atomic_path
from labkit.evaluate import accuracy, predict_logits
from labkit.loader import to_float
from labkit.models import CifarNet, ConvGroup, as_model_input, count_parameters, forward_flops, whitening_stem
from labkit.speed import latency_ms, throughput


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every convolution and linear layer but a whitening stem (set from the data by
    :func:`labkit.models.init_whitening`, not learned). Whether a weight trains does not matter: a frozen model
    (``requires_grad`` off) prunes like a trainable one."""
    stem = whitening_stem(model)
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not stem]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the prunable weights."""
    weights = [getattr(m, name) for m, name in prunable_weights(model)]
    if not weights:
        raise ValueError("the model has no convolution or linear weights")
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def prune_unstructured(model: nn.Module, amount: float) -> nn.Module:
    """A copy of ``model`` whose ``amount`` fraction of smallest-magnitude weights (globally) are zero."""
    if not 0 <= amount < 1:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    params = prunable_weights(pruned)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in params:
        prune.remove(module, name)  # make the zeros permanent: a plain weight tensor again
    return pruned


def _store_csr(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Keep ``weight`` (a matrix) as the three dense arrays of its CSR form: plain buffers copy, save and move like
    any others, which a sparse tensor does not."""
    with warnings.catch_warnings():  # PyTorch marks CSR as beta; the test suite checks these results
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        csr = weight.to_sparse_csr()
    module.register_buffer("crow_indices", csr.crow_indices())
    module.register_buffer("col_indices", csr.col_indices())
    module.register_buffer("values", csr.values())
    module.register_buffer("bias", None if bias is None else bias.detach().clone())
    module.weight_shape = tuple(weight.shape)


def _csr(module: nn.Module) -> torch.Tensor:
    return torch.sparse_csr_tensor(module.crow_indices, module.col_indices, module.values, module.weight_shape,
                                   check_invariants=False)


class SparseConv2d(nn.Module):
    """A convolution (groups 1, stride 1, dilation 1) whose weight is a CSR sparse matrix, applied as im2col
    followed by a sparse-dense matrix product: only the non-zero weights are stored and multiplied. Inference only
    (see :func:`to_sparse`)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError("SparseConv2d takes a plain convolution (groups 1, stride 1, dilation 1, zero padding)")
        k = conv.kernel_size
        if conv.padding == "same" and (k[0] % 2 == 0 or k[1] % 2 == 0):
            raise ValueError(f"SparseConv2d takes 'same' padding only with odd kernels, got {k}")
        self.kernel_size, self.out_channels = k, conv.out_channels
        self.padding = {"same": (k[0] // 2, k[1] // 2), "valid": (0, 0)}.get(conv.padding, conv.padding)
        _store_csr(self, conv.weight.detach().reshape(conv.out_channels, -1), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        patches = F.pad(x, (pw, pw, ph, ph)).unfold(2, kh, 1).unfold(3, kw, 1)  # n, c, h_out, w_out, kh, kw (a view)
        n, c, h_out, w_out = patches.shape[:4]
        # im2col as one copy in the weight's (c, ky, kx) order; F.unfold measured ~20x slower here
        cols = patches.permute(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * h_out * w_out)
        out = (_csr(self) @ cols).reshape(self.out_channels, n, h_out, w_out).transpose(0, 1)
        return out if self.bias is None else out + self.bias[:, None, None]


class SparseLinear(nn.Module):
    """A linear layer whose weight is a CSR sparse matrix (inference only, see :func:`to_sparse`)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        _store_csr(self, linear.weight.detach(), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (_csr(self) @ x.T).T
        return out if self.bias is None else out + self.bias


def to_sparse(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` (e.g. after :func:`prune_unstructured`) in which every prunable convolution
    and linear layer stores and multiplies only its non-zero weights (CSR, PyTorch's sparse CPU kernels):
    the honest test of whether zeros become speed on this CPU (introduced in 09_compress_and_deploy). It predicts
    what ``model`` predicts; it cannot be trained."""
    sparse = copy.deepcopy(model).eval()
    targets = [name for name, m in sparse.named_modules() if any(m is p for p, _ in prunable_weights(sparse))]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = sparse.get_submodule(parent_name) if parent_name else sparse
        layer = getattr(parent, child)
        setattr(parent, child, SparseLinear(layer) if isinstance(layer, nn.Linear) else SparseConv2d(layer))
    return sparse.requires_grad_(False)


def _keep_channels(group: ConvGroup, amount: float) -> torch.Tensor:
    """Indices of the inner channels to keep: the largest L1 norms of conv1's filters, scaled by BN's gain."""
    bn = group.norm1
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()
    score = group.conv1.weight.detach().abs().sum((1, 2, 3)) * gain.detach()
    keep = max(1, round(len(score) * (1 - amount)))
    return score.topk(keep).indices.sort().values


def prune_channels(model: CifarNet, amount: float | Sequence[float]) -> CifarNet:
    """A narrower copy of ``model`` with ``amount`` of the inner channels of every stage removed, or with
    ``amount[i]`` removed from stage ``i`` when a sequence (one fraction per stage) is given.

    Inside a stage (conv1 -> pool -> BN -> GELU -> conv2) the channels between the two convolutions can be cut
    without touching the rest of the network: conv1 loses output filters, BN the matching entries, conv2 the
    matching input channels. The copy is a real, smaller ``CifarNet`` (fewer FLOPs). Its conv2 now sums fewer
    inputs, so the BatchNorm after it sees other statistics than it stored: :func:`reestimate_batchnorm` before
    measuring it, and fine-tune it afterwards.
    """
    if not isinstance(model, CifarNet):
        raise ValueError(f"prune_channels needs a labkit CifarNet, got {type(model).__name__}")
    amounts = [amount] * len(model.layers) if isinstance(amount, (int, float)) else list(amount)
    if len(amounts) != len(model.layers):
        raise ValueError(f"give one amount per stage: the model has {len(model.layers)} stages, got {len(amounts)}")
    if not all(0 <= a < 1 for a in amounts):
        raise ValueError(f"every amount must be in [0, 1), got {amounts}")
    keeps = [_keep_channels(group, a) for group, a in zip(model.layers, amounts)]
    config = {**model.config, "mid_widths": tuple(len(k) for k in keeps)}
    small = CifarNet(**config)
    state = model.state_dict()
    for i, keep in enumerate(keeps):
        p = f"layers.{i}."
        state[p + "conv1.weight"] = state[p + "conv1.weight"][keep]
        for key in ("weight", "bias", "running_mean", "running_var"):
            state[p + f"norm1.{key}"] = state[p + f"norm1.{key}"][keep]
        state[p + "conv2.weight"] = state[p + "conv2.weight"][:, keep]
    small.load_state_dict(state)
    small.name = getattr(model, "name", "cifarnet")
    return small.train(model.training)


def _floats(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1], channels_last, from uint8 or float images."""
    x = to_float(images) if images.dtype == torch.uint8 else images.float()
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Recompute every BatchNorm layer's running mean and variance from ``images`` (uint8 or float; a few thousand
    training images, no labels); returns ``model``, changed in place and in eval mode.

    The images must be a fair sample of the data (e.g. ``data.subset(train_per_class=200).train_images``): the
    local CIFAR-10 copy is sorted by class, and the statistics of its first images, all airplanes, break the model.

    After a cut (:func:`prune_channels`) or any other change to the layers before it, a BatchNorm layer still
    normalises with the statistics of the old network. Here only the BatchNorm layers run in training mode, with
    ``momentum=None`` (PyTorch's cumulative average: each batch counts equally, whatever the order), and nothing is
    trained: the weights and every other layer stay as they are.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer to re-estimate")
    if len(images) == 0 or batch_size < 1:
        raise ValueError(f"need images and batch_size >= 1, got {len(images)} images and batch_size={batch_size}")
    momenta = [bn.momentum for bn in norms]
    device = next(model.parameters()).device
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for chunk in images.split(batch_size):
            model(_floats(chunk).to(device))
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.eval()
    return model


def sensitivity_scan(model: CifarNet, fractions: Sequence[float], eval_images: torch.Tensor,
                     eval_labels: torch.Tensor, calibration_images: torch.Tensor | None = None,
                     stages: Sequence[int] | None = None) -> list[dict]:
    """Accuracy on ``eval_images`` when one stage at a time loses each fraction of its inner channels.

    One row per (stage, fraction): ``stage``, ``fraction``, ``channels`` kept in that stage, ``mflops_per_image``
    and ``accuracy``. ``stages`` defaults to all of them. With ``calibration_images`` (training images) every pruned
    copy gets :func:`reestimate_batchnorm` before it is measured; without, it keeps the old statistics, which
    shows how much of the loss is the stale BatchNorm rather than the missing channels. ``model`` is not changed.
    """
    if not isinstance(model, CifarNet):
        raise ValueError(f"sensitivity_scan needs a labkit CifarNet, got {type(model).__name__}")
    stages = list(range(len(model.layers))) if stages is None else list(stages)
    if not set(stages) <= set(range(len(model.layers))):
        raise ValueError(f"stages must be among {list(range(len(model.layers)))}, got {stages}")
    rows = []
    for stage in stages:
        for fraction in fractions:
            amounts = [0.0] * len(model.layers)
            amounts[stage] = fraction
            pruned = prune_channels(model, amounts).eval()
            if calibration_images is not None:
                reestimate_batchnorm(pruned, calibration_images)
            rows.append({"stage": stage, "fraction": fraction, "channels": pruned.layers[stage].conv1.out_channels,
                         "mflops_per_image": round(forward_flops(pruned) / 1e6, 1),
                         "accuracy": accuracy(predict_logits(pruned, eval_images), eval_labels)})
    return rows


class InferenceModel(nn.Module):
    """Base of the deployed models: they only predict. ``train()``/``eval()`` are accepted and ignored, moving
    (``.to(...)``) does nothing and a deep copy is the model itself: what they hold is frozen into a compiled graph
    or a runtime session, and the timing functions copy and move the models they measure. Their number format is
    what is being measured, so labkit never runs them under bfloat16 autocast (``fixed_precision``)."""

    fixed_precision = "fp32"

    def train(self, mode: bool = True) -> "InferenceModel":
        return self

    def _apply(self, fn, recurse=True):
        return self

    def __deepcopy__(self, memo) -> "InferenceModel":
        return self


@contextlib.contextmanager
def _quiet_backends():
    """Silences the backends' messages about themselves, which a learner can do nothing about: Inductor's int8
    lowering warns about its own tensor copy, torch logs that no CUDA runtime is found while compiling for the CPU,
    and ONNX Runtime's quantizer logs that BatchNorm weights have no channel axis (they are folded away)."""
    loggers = [logging.getLogger(name) for name in ("", "torch.utils.cpp_extension", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


MAX_BATCH_SIZES = 64  # distinct input shapes one compiled model compiles for


class CompiledModel(InferenceModel):
    """An exported graph (fp32, or int8 from PT2E) compiled by Inductor for CPU inference; see :func:`compile_fp32`
    and :func:`compile_int8`. Inputs are made channels_last, and each new batch size compiles once (seconds)."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        # dynamic=False: kernels specialised to each batch size, the fastest, and the same whichever sizes ran before
        self.compiled = torch.compile(graph, dynamic=False)
        self._compiled_for: set[tuple] = set()

    @property
    def graph(self) -> torch.fx.GraphModule:
        """The exported graph before compilation (int8 weights and their scales, for an int8 model)."""
        return self.compiled._orig_mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_model_input(x, check_range=False).contiguous(memory_format=torch.channels_last)
        signature = (tuple(x.shape), x.dtype, x.device)
        with torch.inference_mode():
            if signature in self._compiled_for:
                return self.compiled(x)
            # Freezing (weights become constants, prepacked for oneDNN: what lets Inductor fuse the int8 kernels) is
            # read when a graph compiles, so it is set only for the call that compiles. Set globally, as torchao's
            # tutorial does, it would also freeze the weights of a model compiled for evaluation during training.
            # One compile thread: more start worker processes, each with its own copy of torch (hundreds of MiB),
            # which a Binder-sized memory limit does not hold.
            # Dynamo stops compiling a graph after 8 shapes and sends every new one, silently, through the slow
            # uncompiled graph: a notebook meets more batch sizes than that. The limit is read on a cache miss only,
            # so the calls above, already compiled, need no patch (which costs ~80 us, a batch-1 call ~600).
            with torch._inductor.config.patch(freezing=True, compile_threads=1), \
                    torch._dynamo.config.patch(recompile_limit=MAX_BATCH_SIZES), _quiet_backends():
                out = self.compiled(x)
            self._compiled_for.add(signature)
            return out


class QuantizedModel(InferenceModel):
    """A converted PT2E graph (:func:`quantize_pt2e`, :func:`convert_qat`) run as it is: quantize / dequantize
    steps around float operations, so the int8 model's predictions at float speed or slower. For measuring
    accuracy without a compilation; ``CompiledModel(quantized.graph)`` is the fast version of the same numbers."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.graph(as_model_input(x, check_range=False).contiguous(memory_format=torch.channels_last))


def _exported(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` captured by ``torch.export`` with a dynamic batch dimension, as a graph module."""
    batch = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
    return torch.export.export(model, (example,), dynamic_shapes=batch).module()


def _quantizable(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` whose convolutions the X86 quantizer recognises.

    It finds convolutions by their exact class, so labkit's ``Conv`` (an ``nn.Conv2d`` that changes only the
    initialisation) becomes a plain ``nn.Conv2d``; and by the op ``aten.conv2d.default``, so ``padding="same"``
    (exported as another op) becomes the equal number. Otherwise every convolution would silently stay float32.
    """
    plain = copy.deepcopy(model).cpu()
    for m in plain.modules():
        if isinstance(m, nn.Conv2d):
            if type(m).forward is nn.Conv2d.forward:
                m.__class__ = nn.Conv2d
            if m.padding == "same" and all(k % 2 for k in m.kernel_size):
                m.padding = tuple(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation))
    return plain


WEIGHT_BITS = (8, 4)  # 8: what oneDNN's int8 kernels are for; 4: the same kernels with weights in -8..7


def default_reduce_range() -> bool:
    """Whether this CPU needs 7-bit activations for int8 (09_compress_and_deploy): True without an int8
    dot-product instruction (VNNI or AMX). Such CPUs multiply uint8 by int8 with an instruction that adds pairs
    of products into 16 bits and saturates, so full-range activations can overflow and silently change results;
    PyTorch's and ONNX Runtime's documentation both advise a reduced range there."""
    from labkit.speed import cpu_int8_flags

    flags = cpu_int8_flags()
    return flags["flags_known"] and not flags["int8_dot_product"]


def quantization_config(weight_bits: int = 8, is_qat: bool = False, reduce_range: bool | None = None):
    """The PT2E quantization scheme of :func:`quantize_pt2e` and :func:`prepare_qat` (09_compress_and_deploy):
    torchao's default for ``X86InductorQuantizer`` (weights int8 per output channel, symmetric; activations uint8
    per tensor), with the weights' integer range narrowed to ``weight_bits`` bits (4: -8..7) and, with
    ``reduce_range``, activations in 0..127 (default: :func:`default_reduce_range`, this CPU's need).

    4-bit weights are stored and multiplied as int8 by the same kernels: they simulate the accuracy of a 4-bit
    model, not its size or speed. They give quantization-aware training something to recover where post-training
    int8 costs the model almost nothing.
    """
    from dataclasses import replace

    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import get_default_x86_inductor_quantization_config

    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, got {weight_bits}")
    if reduce_range is None:
        reduce_range = default_reduce_range()
    config = get_default_x86_inductor_quantization_config(is_qat=is_qat, reduce_range=reduce_range)
    if weight_bits == 8:
        return config
    half = 2 ** (weight_bits - 1)
    return replace(config, weight=replace(config.weight, quant_min=-half, quant_max=half - 1))


def _x86_quantizer(weight_bits: int, is_qat: bool, reduce_range: bool | None = None):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer
    return X86InductorQuantizer().set_global(quantization_config(weight_bits, is_qat, reduce_range))


def compile_fp32(model: nn.Module, image_size: tuple[int, int, int] = (3, 32, 32)) -> CompiledModel:
    """``model`` in float32, exported and compiled exactly like :func:`compile_int8` but without quantization:
    the fair fp32 arm of an int8 comparison (eager PyTorch pays Python and unfused-kernel costs that compiled code
    does not). ``model`` is not changed; the compiled copy keeps its weights as they are now."""
    example = torch.rand(2, *image_size).contiguous(memory_format=torch.channels_last)
    return CompiledModel(_exported(copy.deepcopy(model).cpu().eval(), example))


def quantize_pt2e(model: nn.Module, calibration_images: torch.Tensor, weight_bits: int = 8,
                  batch_size: int = 500, reduce_range: bool | None = None) -> QuantizedModel:
    """Post-training static quantization of ``model`` (not changed) with torchao's PT2E flow and
    ``X86InductorQuantizer`` (:func:`quantization_config`): the converted graph, not compiled.

    ``model`` is captured with ``torch.export`` and observed on ``calibration_images`` (uint8 or float; a few
    thousand training images of every class are plenty, e.g. ``data.subset(train_per_class=200).train_images``:
    the local copy is sorted by class) to fix the activation ranges; ``reduce_range`` (default: what this CPU
    needs, :func:`default_reduce_range`) quantizes activations to 7 bits. Returns a :class:`QuantizedModel`: the int8
    model's predictions without waiting for a compilation (:func:`compile_int8` makes it fast).
    """
    with _quiet_backends():  # torchao's first import registers enums that torch logs it no longer needs
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calibration_images) == 0:
        raise ValueError("quantization needs calibration images: pass a few thousand training images")
    prepared = prepare_pt2e(_exported(_quantizable(model).eval(), _floats(calibration_images[:batch_size])),
                            _x86_quantizer(weight_bits, is_qat=False, reduce_range=reduce_range))
    with torch.no_grad():
        for chunk in calibration_images.split(batch_size):
            prepared(_floats(chunk))
    return QuantizedModel(convert_pt2e(prepared))


def compile_int8(model: nn.Module, calibration_images: torch.Tensor, weight_bits: int = 8,
                 batch_size: int = 500, reduce_range: bool | None = None) -> CompiledModel:
    """Post-training static int8 quantization of ``model`` for x86 CPUs, compiled: a :class:`CompiledModel` that
    takes the same float images (any batch size) and returns float logits.

    :func:`quantize_pt2e` (int8 weights per channel, uint8 activations, calibrated on ``calibration_images``),
    then Inductor with freezing, which replaces each quantize-convolution-dequantize pattern by one oneDNN int8
    convolution and fuses the elementwise work around it. int8 is faster only where the CPU multiplies int8
    quickly (:func:`labkit.speed.cpu_int8_flags`).
    """
    return CompiledModel(quantize_pt2e(model, calibration_images, weight_bits, batch_size, reduce_range).graph)


_WEIGHTED_OPS = ("aten.conv2d.default", "aten.linear.default")


def _layer_path(node: torch.fx.Node) -> str | None:
    """The module path (e.g. ``"layers.0.conv1"``) of the layer that an exported graph's node comes from."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else None


def quantized_weight(model: QuantizedModel | CompiledModel | torch.fx.GraphModule,
                     layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(int8 weight, scales, zero points)`` that PT2E's ``convert_pt2e`` stored for the convolution or linear
    layer ``layer`` (its module path, e.g. ``"layers.0.conv1"``) of a converted model (:func:`quantize_pt2e`,
    :func:`compile_int8`, :func:`convert_qat`); one scale and zero point per output channel
    (09_compress_and_deploy, where the learner computes the same scales by hand).

    A convolution directly followed by its BatchNorm was folded with it before quantization: its stored weight is
    the folded one, not the trained ``weight`` of the module.
    """
    graph = model if isinstance(model, torch.fx.GraphModule) else getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.GraphModule):
        raise ValueError(f"quantized_weight needs a converted PT2E model, got {type(model).__name__}")
    weighted = [n for n in graph.graph.nodes if n.op == "call_function" and str(n.target) in _WEIGHTED_OPS]
    for node in weighted:
        dequantize = node.args[1]
        if _layer_path(node) == layer and isinstance(dequantize, torch.fx.Node) \
                and "dequantize_per_channel" in str(dequantize.target):
            return tuple(functools.reduce(getattr, arg.target.split("."), graph) for arg in dequantize.args[:3])
    raise ValueError(f"no int8 weight of layer {layer!r} in this graph; its quantized layers: "
                     f"{[_layer_path(n) for n in weighted if 'dequantize' in str(getattr(n.args[1], 'target', ''))]}")


class QatModel(nn.Module):
    """A model prepared for quantization-aware training by :func:`prepare_qat`: its forward pass rounds weights and
    activations to int8 and back (fake quantization), so fine-tuning learns weights that survive int8.

    It trains like any module, e.g. with :func:`labkit.train.distill`. An exported graph has no train/eval mode of
    its own, so :meth:`train` switches its BatchNorm layers between batch and running statistics and turns the
    fake quantizers' range observers on (training) or off (evaluation must not move the int8 ranges). It computes
    in float32 around its fake quantizers whatever :func:`labkit.settings.precision` says (``fixed_precision``).
    """

    fixed_precision = "fp32"

    def __init__(self, graph: torch.fx.GraphModule, batchnorms: Sequence[str] = ()):
        super().__init__()
        self.graph = graph
        self.batchnorms = set(batchnorms)

    def batchnorm_parameters(self) -> list[nn.Parameter]:
        """The BatchNorm layers' weights and biases inside the graph. An exported graph has no BatchNorm modules,
        so :func:`labkit.train.make_optimizer` asks for them here: they then learn at the rate the float recipe
        gives them, as when the same network fine-tunes in float."""
        return [p for name, p in self.graph.named_parameters() if name.rpartition(".")[0] in self.batchnorms]

    def train(self, mode: bool = True) -> "QatModel":
        from torchao.quantization.pt2e import (disable_observer, enable_observer, move_exported_model_to_eval,
                                               move_exported_model_to_train)
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(as_model_input(x, check_range=False))


def prepare_qat(model: nn.Module, example_images: torch.Tensor, weight_bits: int = 8) -> QatModel:
    """A :class:`QatModel` of ``model`` (which is not changed), in training mode; ``example_images`` (a batch of
    at least 2, uint8 or float) only fix the input's shape. Fine-tune it, then :func:`convert_qat`.

    torchao's ``prepare_qat_pt2e`` with ``X86InductorQuantizer`` and :func:`quantization_config` ``(weight_bits,
    is_qat=True)``: the scheme of :func:`quantize_pt2e`, whose ranges now move with training. It rebuilds the
    BatchNorm layers with its own ``eps`` (1e-5 instead of labkit's 1e-12) and ``momentum`` (0.1 instead of 0.4);
    with running variances above 0.01 this moves the outputs by < 0.1%.
    """
    with _quiet_backends():  # torchao's first import registers enums that torch logs it no longer needs
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    if len(example_images) < 2:
        raise ValueError("prepare_qat needs a batch of at least 2 example images (BatchNorm trains on batches)")
    graph = _exported(_quantizable(model).train(), _floats(example_images[:64]))
    batchnorms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return QatModel(prepare_qat_pt2e(graph, _x86_quantizer(weight_bits, is_qat=True)), batchnorms).train()


def convert_qat(prepared: QatModel) -> QuantizedModel:
    """The quantized model of a fine-tuned :class:`QatModel` (``prepared`` is not changed and can train on), as
    :func:`quantize_pt2e` returns one: ``CompiledModel(convert_qat(prepared).graph)`` is its fast version."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if not isinstance(prepared, QatModel):
        raise ValueError(f"convert_qat needs the QatModel that prepare_qat returned, got {type(prepared).__name__}")
    return QuantizedModel(convert_pt2e(move_exported_model_to_eval(copy.deepcopy(prepared.graph))))


def export_onnx(model: nn.Module, path: str | Path, image_size: tuple[int, int, int] = (3, 32, 32)) -> Path:
    """Write ``model`` (in eval mode; it is not changed) as an ONNX file with a dynamic batch dimension: input
    ``images`` (float, N x 3 x 32 x 32, in [0, 1]), output ``logits``. Uses ``torch.onnx.export``'s
    ``torch.export``-based exporter; returns the path."""
    example = torch.rand(2, *image_size)
    batch = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
    with atomic_path(path) as tmp:
        torch.onnx.export(copy.deepcopy(model).cpu().eval(), (example,), tmp, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=batch, external_data=False, verbose=False)
    return Path(path)


class _Calibration:
    """ONNX Runtime's calibration data reader protocol (``get_next``) over batches of images."""

    def __init__(self, input_name: str, images: torch.Tensor, batch_size: int):
        self.batches = iter(images.split(batch_size))
        self.input_name = input_name

    def get_next(self) -> dict | None:
        chunk = next(self.batches, None)
        return None if chunk is None else {self.input_name: _floats(chunk).contiguous().numpy()}


def quantize_onnx_int8(onnx_path: str | Path, calibration_images: torch.Tensor, out_path: str | Path,
                       batch_size: int = 100, reduce_range: bool | None = None) -> Path:
    """Static int8 quantization of an ONNX file (from :func:`export_onnx`) with ONNX Runtime; returns ``out_path``.

    QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op, which ONNX Runtime fuses into int8
    kernels): int8 weights per output channel, uint8 activations whose ranges are the minimum and maximum seen on
    ``calibration_images`` (uint8 or float training images of every class; a few thousand are plenty).
    ``reduce_range`` (default: :func:`default_reduce_range`) stores the weights in 7 bits, ONNX Runtime's advice
    for CPUs without VNNI, whose int8 instruction can saturate.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_images) == 0:
        raise ValueError("quantize_onnx_int8 needs calibration images: pass a few thousand training images")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out_path) as out_tmp:
        ready = Path(tmp) / "preprocessed.onnx"
        # ONNX Runtime's symbolic shape inference cannot follow the exporter's ReduceMax (the global max-pool);
        # ONNX's own shape inference, which the pre-processing still runs, is enough for these static shapes.
        quant_pre_process(str(onnx_path), str(ready), skip_symbolic_shape=True)
        reader = _Calibration(_input_name(ready), calibration_images, batch_size)
        with _quiet_backends():
            quantize_static(str(ready), str(out_tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            reduce_range=default_reduce_range() if reduce_range is None else reduce_range)
    return out_path


def _input_name(onnx_path: str | Path) -> str:
    import onnx
    return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name


class OnnxModel(InferenceModel):
    """An ONNX file run by ONNX Runtime on the CPU, called like a module: images in (uint8, or float in
    [0, 1]), float logits out.

    The session uses as many threads as PyTorch (``torch.get_num_threads()``, unless ``threads`` is given), so the
    two engines are timed on the same share of the machine.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX file at {self.path}; write one with labkit.compress.export_onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001  (onnxruntime's own exception types, e.g. InvalidProtobuf)
            raise ValueError(f"{self.path} is not a readable ONNX model ({type(error).__name__}: "
                             f"{str(error).splitlines()[0]}): write it again with labkit.compress.export_onnx") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime reads plain (N, C, H, W) arrays: a channels_last batch is copied to that layout first.
        # On the CPU the range check is a few microseconds, little beside a session run.
        images = as_model_input(x.detach().cpu()).float().contiguous()
        (logits,) = self.session.run(None, {self.input_name: images.numpy()})
        logits = torch.from_numpy(logits)
        unreadable = images.isnan().flatten(1).any(1)  # an int8 graph's QuantizeLinear turns NaN into a number
        if unreadable.any():
            logits[unreadable] = math.nan
        return logits


def _graph_constants(graph: torch.fx.GraphModule) -> list[torch.Tensor]:
    """The distinct tensors a graph reads (its ``get_attr`` nodes): weights it no longer uses are not counted."""
    used = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = graph
            for part in node.target.split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                used[id(value)] = value
    return list(used.values())


def stored_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model computes with, as deployed: float32 weights (and BatchNorm statistics) for
    a float model; for a :class:`CompiledModel` or :class:`QuantizedModel`, the constants its graph reads (int8
    weights plus float scales and biases for an int8 one); for an :class:`OnnxModel`, the size of its file."""
    if isinstance(model, OnnxModel):
        return model.path.stat().st_size
    graphed = isinstance(model, (CompiledModel, QuantizedModel))
    tensors = _graph_constants(model.graph) if graphed else model.state_dict().values()
    return sum(t.numel() * t.element_size() for t in tensors)


def deployment_row(model: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor, *,
                   float_model: nn.Module | None = None, latency_repeats: int = 100,
                   throughput_repeats: int = 10) -> dict:
    """Accuracy, stored size, CPU latency (batch 1) and throughput (batch 256) of one deployable model.

    For a deployed model (:class:`CompiledModel`, :class:`OnnxModel`) pass the ``float_model`` it came from:
    parameters and FLOPs are counted on it (int8 does the same arithmetic in another number format). For timings
    that can be compared across models, prefer :func:`labkit.speed.time_interleaved`.
    """
    if isinstance(model, InferenceModel) and float_model is None:
        raise ValueError(f"a {type(model).__name__} cannot count its parameters and FLOPs: pass float_model=, the "
                         "float model it was made from")
    counted = float_model if float_model is not None else model
    nonzero = sum(int((getattr(m, n) != 0).sum()) for m, n in prunable_weights(counted))
    return {"test_acc": accuracy(predict_logits(model, test_images), test_labels),
            "params": count_parameters(counted), "nonzero_weights": nonzero,
            "mflops_per_image": round(forward_flops(counted) / 1e6, 1), "stored_kb": round(stored_bytes(model) / 1024, 1),
            # int8 kernels are CPU kernels: every row of a deployment table is timed on the CPU
            "latency_ms": round(latency_ms(model, 1, latency_repeats, warmup=10, device="cpu"), 3),
            "images_per_s": round(throughput(model, 256, throughput_repeats, warmup=2, device="cpu"), 1),
            "threads": torch.get_num_threads()}
