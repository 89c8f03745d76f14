"""Making a trained model smaller and faster: pruning and int8 quantization (introduced in 09_compress_and_deploy).

* :func:`prune_unstructured` zeroes the smallest weights (``torch.nn.utils.prune``): the file compresses, but dense
  CPU kernels multiply zeros as fast as any other number, so it does not run faster.
* :func:`prune_channels` removes whole channels inside each stage and returns a physically narrower network:
  fewer FLOPs, so it does run faster.
* :func:`quantize_int8` is post-training static int8 quantization through PyTorch 2 export (torchao's PT2E flow
  with the X86 quantizer, lowered to oneDNN int8 kernels).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from labkit.evaluate import accuracy, predict_logits
from labkit.loader import to_float
from labkit.models import CifarNet, ConvGroup, count_parameters, forward_flops
from labkit.speed import latency_ms, throughput


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every trainable convolution and linear layer (a frozen whitening stem is skipped)."""
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad]


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


def _keep_channels(group: ConvGroup, amount: float) -> torch.Tensor:
    """Indices of the inner channels to keep: the largest L1 norms of conv1's filters, scaled by BN's gain."""
    bn = group.norm1
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()
    score = group.conv1.weight.detach().abs().sum((1, 2, 3)) * gain.detach()
    keep = max(1, round(len(score) * (1 - amount)))
    return score.topk(keep).indices.sort().values


def prune_channels(model: CifarNet, amount: float) -> CifarNet:
    """A narrower copy of ``model`` with ``amount`` of the inner channels of every stage removed.

    Inside a stage (conv1 -> pool -> BN -> GELU -> conv2) the channels between the two convolutions can be cut
    without touching the rest of the network: conv1 loses output filters, BN the matching entries, conv2 the
    matching input channels. The copy is a real, smaller ``CifarNet`` (fewer FLOPs); fine-tune it afterwards.
    """
    if not isinstance(model, CifarNet):
        raise ValueError(f"prune_channels needs a labkit CifarNet, got {type(model).__name__}")
    if not 0 <= amount < 1:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    keeps = [_keep_channels(group, amount) for group in model.layers]
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


class Int8Model(nn.Module):
    """A lowered int8 graph behind the usual module interface. It only predicts: ``train()``/``eval()`` are
    accepted and ignored (an exported graph has no training mode), and inputs are made channels_last."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> "Int8Model":
        return self

    def _apply(self, fn, recurse=True):  # e.g. .to(memory_format=...): the frozen int8 weights stay as lowered
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x.contiguous(memory_format=torch.channels_last))

    def __deepcopy__(self, memo) -> "Int8Model":  # the frozen graph holds non-leaf tensors; it is never changed
        return self


def quantize_int8(model: nn.Module, calibration_images: torch.Tensor, batch_size: int = 500) -> Int8Model:
    """Post-training static int8 quantization of ``model`` for x86 CPUs, as an :class:`Int8Model` that takes the
    same float images (any batch size) and returns float logits.

    ``model`` is captured with ``torch.export``, observed on ``calibration_images`` (uint8 or float; a few
    thousand training images are plenty) to fix the activation ranges, converted (torchao's PT2E flow with
    ``X86InductorQuantizer``), and lowered to oneDNN's int8 kernels the way torchao's
    ``lower_pt2e_quantized_to_x86`` does, but keeping the batch dimension dynamic.
    """
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes
    from torch.export import Dim, export
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    if len(calibration_images) == 0:
        raise ValueError("quantize_int8 needs calibration images")
    model = copy.deepcopy(model).eval()
    example = (to_float(calibration_images[:batch_size], channels_last=True),)
    batch = ({0: Dim("batch", min=1, max=1 << 16)},)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with torch.no_grad():
        prepared = prepare_pt2e(export(model, example, dynamic_shapes=batch).module(), quantizer)
        for start in range(0, len(calibration_images), batch_size):
            prepared(to_float(calibration_images[start:start + batch_size], channels_last=True))
        converted = convert_pt2e(prepared)
        decompositions = {op: fn for op, fn in torch.export.default_decompositions().items()
                          if torch._export.utils._is_cia_op(op)}
        graph = export(converted, example, dynamic_shapes=batch, strict=True).run_decompositions(decompositions).module()
        freezing_passes(graph, example)
        constant_fold(graph)
    return Int8Model(graph)


def stored_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model computes with, as deployed: float32 weights for a float model; for an
    :class:`Int8Model`, the constants its graph reads (int8 weights plus float scales, biases and statistics)."""
    if not isinstance(model, Int8Model):
        return sum(t.numel() * t.element_size() for t in model.state_dict().values())
    graph, used = model.graph, {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = graph
            for part in node.target.split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                used[id(value)] = value
    # oneDNN's prepacked int8 convolution weights are opaque tensors that report float32: one byte each.
    return sum(t.numel() * (1 if t.is_mkldnn else t.element_size()) for t in used.values())


def deployment_row(model: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor, *,
                   float_model: nn.Module | None = None, latency_repeats: int = 100,
                   throughput_repeats: int = 10) -> dict:
    """Accuracy, stored size, CPU latency (batch 1) and throughput (batch 256) of one deployable model.

    For an :class:`Int8Model` pass the ``float_model`` it came from: parameters and FLOPs are counted on it
    (the int8 graph does the same arithmetic in another number format).
    """
    counted = float_model if float_model is not None else model
    nonzero = sum(int((getattr(m, n) != 0).sum()) for m, n in prunable_weights(counted))
    return {"test_acc": accuracy(predict_logits(model, test_images), test_labels),
            "params": count_parameters(counted), "nonzero_weights": nonzero,
            "mflops_per_image": round(forward_flops(counted) / 1e6, 1), "stored_kb": round(stored_bytes(model) / 1024, 1),
            # int8 kernels are CPU kernels: every row of a deployment table is timed on the CPU
            "latency_ms": round(latency_ms(model, 1, latency_repeats, warmup=10, device="cpu"), 3),
            "images_per_s": round(throughput(model, 256, throughput_repeats, warmup=2, device="cpu"), 1),
            "threads": torch.get_num_threads()}
