"""Checks for the labs and exercises of 09_compress_and_deploy."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from labkit.checks._base import CheckFailed, _call, _compare, _given, _number, _passed, _tensor


def check_pruned_int8_row(row: dict, rows: dict[str, dict]) -> None:
    """Exercise 1 of 09_compress_and_deploy: the deployment row of the fine-tuned, channel-pruned student in int8."""
    keys = {"test_acc", "params", "stored_kb", "images_per_s"}
    if not isinstance(_given(row, "pruned_int8_row"), dict) or not keys <= set(row):
        raise CheckFailed("`pruned_int8_row` should be the dict that labkit.compress.deployment_row returns")
    pruned, int8 = rows["distilled, 50% channels removed"], rows["student, distilled, int8"]
    if row["params"] == rows["student, distilled"]["params"]:
        raise CheckFailed("`pruned_int8_row` measures the unpruned student: quantize the channel-pruned, "
                          "fine-tuned model")
    if row["params"] != pruned["params"]:
        raise CheckFailed(f"`pruned_int8_row` counts {row['params']:,} parameters, the channel-pruned student has "
                          f"{pruned['params']:,}: pass `float_model=` the pruned float model it came from")
    if row["stored_kb"] > 0.5 * pruned["stored_kb"]:
        raise CheckFailed("`pruned_int8_row` stores float32 weights: measure the int8 model "
                          "(`compile_int8(model, calibration)`), with `float_model=model`")
    _passed(f"pruned + int8: {row['test_acc']:.1%}, {row['stored_kb']:.0f} KB, {row['images_per_s']:.0f} img/s "
            f"(int8 distilled: {int8['test_acc']:.1%}, {int8['stored_kb']:.0f} KB, {int8['images_per_s']:.0f} img/s)")


# The labs of 09_compress_and_deploy: int8 by hand (section 1) and the pruning recipe by hand (section 3). Each
# check recomputes the answer in float64 (or asks labkit's own function) and names the usual mistake it matches.

UINT8, INT8 = (0, 255), (-128, 127)


def _affine_oracle(x: torch.Tensor) -> tuple[float, list[int]]:
    """Scale and the zero point(s) mapping [min(x, 0), max(x, 0)] onto 0..255: float64 and float32 arithmetic may
    round a zero point on a .5 boundary differently, so both are accepted."""
    lo, hi = min(x.double().min().item(), 0.0), max(x.double().max().item(), 0.0)
    scale = (hi - lo) / 255
    zeros = {int(min(max(round(-lo / scale), 0), 255)),
             int(torch.clamp(torch.round(-torch.tensor(lo, dtype=torch.float32) / torch.tensor(scale, dtype=torch.float32)), 0, 255))}
    return scale, sorted(zeros)


def _pair(answer: Any, name: str) -> tuple[float, float]:
    """``answer`` as (scale, zero_point): two numbers (floats, ints or 0-d tensors)."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise CheckFailed(f"`{name}` should return two numbers, (scale, zero_point), got {type(answer).__name__}")
    return _number(answer[0], f"{name}'s scale"), _number(answer[1], f"{name}'s zero point")


def _quantized(x: torch.Tensor, scale: Any, zero: Any, qmin: int, qmax: int) -> torch.Tensor:
    """The reference q = clamp(round(x / scale) + zero_point, qmin, qmax), in x's own precision (float32 for
    weights, as the learner computes), returned as float64."""
    return torch.clamp(torch.round(x / scale) + zero, qmin, qmax).double()


def _check_qparams(affine_qparams: Callable, x: torch.Tensor, what: str) -> tuple[float, int]:
    scale, zeros = _affine_oracle(x)
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    got_scale, got_zero = _pair(_call(affine_qparams, "affine_qparams", x.clone()), "affine_qparams")
    _compare(got_scale, scale, f"affine_qparams({what})'s scale", {
        "the scale comes from the maximum alone: spread the 255 steps over the whole range, (max - min) / 255":
            hi / 255,
        "255 steps separate 256 levels: divide (max - min) by 255, not 256": (hi - lo) / 256,
        "that is the symmetric scale, max|x| / 127.5: here the range is [min, max], asymmetric, on 0..255":
            max(-lo, hi) / 127.5,
        "the range must include 0 (min(x.min(), 0) and max(x.max(), 0)), so that 0 is exactly one of the levels":
            (x.max().item() - x.min().item()) / 255,
    }, rtol=1e-5)
    if got_zero in zeros:
        return scale, int(got_zero)
    if got_zero != round(got_zero):
        raise CheckFailed(f"the zero point is {got_zero:g}: it must be an integer, a level of 0..255 "
                          "(round -min / scale)")
    if round(got_zero) == -zeros[0]:
        raise CheckFailed(f"the zero point has the wrong sign ({got_zero:g}): it is the level that stands for 0, "
                          "round(-min / scale), between 0 and 255")
    raise CheckFailed(f"the zero point of {what} should be {zeros[0]} (the level of 0: round(-min / scale)), "
                      f"got {got_zero:g}")


def check_affine_quantization(affine_qparams: Callable, quantize: Callable, weight: torch.Tensor) -> None:
    """Lab of 09_compress_and_deploy, section 1: per-tensor affine uint8 quantization by hand.

    ``affine_qparams(x)`` returns ``(scale, zero_point)`` mapping [min(x, 0), max(x, 0)] onto 0..255;
    ``quantize(x, scale, zero_point, qmin, qmax)`` returns clamp(round(x / scale) + zero_point, qmin, qmax).
    Both are tried on ``weight`` (a layer's weights), on all-positive values and on values beyond the range.
    """
    weight = _tensor(weight, "weight").float()
    scale, zero = _check_qparams(affine_qparams, weight, "the weights")
    _check_qparams(affine_qparams, 0.5 + torch.rand(200, generator=torch.Generator().manual_seed(0)),
                   "values between 0.5 and 1.5")
    wide = torch.cat([weight.flatten(), 1.5 * weight.flatten()])  # half of these lie beyond the range: clamped
    cases = [(weight, scale, zero, *UINT8, "the weights"), (wide, scale, zero, *UINT8, "values beyond the range"),
             (weight, weight.abs().amax((1, 2, 3), keepdim=True) / 127.5, 0, *INT8,
              "one scale per output channel (a (C, 1, 1, 1) tensor) and zero point 0 on -128..127")]
    for x, s, z, qmin, qmax, what in cases:
        raw = x / s
        out = _call(quantize, "quantize", x.clone(), s.clone() if isinstance(s, torch.Tensor) else s, z, qmin, qmax)
        expected = _quantized(x, s, z, qmin, qmax)
        # x / scale in float64 may round a value on a .5 boundary the other way: either precision is right
        in_double = _quantized(x.double(), s.double() if isinstance(s, torch.Tensor) else s, z, qmin, qmax)
        answer = _tensor(out, f"quantize({what})", shape=tuple(expected.shape))
        if ((answer == expected) | (answer == in_double)).all():
            continue
        _compare(answer, expected, f"quantize({what})", {
            "not rounded: q must be an integer level, torch.round(x / scale) + zero_point":
                torch.clamp(raw + z, qmin, qmax),
            "the fraction was cut off (a cast to int truncates, floor rounds down): round to the nearest level "
            "with torch.round": torch.clamp(torch.trunc(raw) + z, qmin, qmax),
            "rounded down: use torch.round, not torch.floor": torch.clamp(torch.floor(raw) + z, qmin, qmax),
            f"not clamped: values beyond the range must saturate at {qmin}..{qmax} (torch.clamp)": torch.round(raw) + z,
            "converted to uint8 before clamping: values beyond 0..255 wrapped around instead of saturating":
                torch.remainder(torch.round(raw) + z, 256),
            "the zero point is subtracted: q = round(x / scale) + zero_point (and x = scale * (q - zero_point))":
                torch.clamp(torch.round(raw) - z, qmin, qmax),
            "multiplied by the scale: divide, q = round(x / scale) + zero_point":
                torch.clamp(torch.round(x * s) + z, qmin, qmax),
        }, rtol=0, atol=1e-6)
    err = (weight - scale * (_quantized(weight, scale, zero, *UINT8).float() - zero)).abs().max().item()
    _passed(f"scale {scale:.3g} and zero point {zero} for these weights; the largest rounding error, {err:.2g}, "
            f"is {err / scale:.2f} of a step")


def _scale_mistakes(w: torch.Tensor) -> dict[str, torch.Tensor]:
    dims = tuple(range(1, w.dim()))
    m = w.abs().amax(dims)
    return {
        "one scale for the whole tensor: per-channel means one scale per output channel (reduce over every "
        "dimension but 0)": torch.full_like(m, m.max().item() / 127.5),
        "divided by 127: here, as in PT2E, the 255 steps of -128..127 span [-max|w|, max|w|], scale = max|w| / 127.5":
            m / 127,
        "divided by 128: the 255 steps of -128..127 span [-max|w|, max|w|], scale = max|w| / 127.5": m / 128,
        "divided by 255: the symmetric range [-max|w|, max|w|] is 2 max|w| wide, scale = 2 max|w| / 255": m / 255,
        "the largest weight, not the largest magnitude: take max |w| (abs first), the negative side counts too":
            w.amax(dims) / 127.5,
        "that is the affine per-channel scale, (max - min) / 255: the symmetric one uses max|w| and zero point 0":
            (w.amax(dims) - w.amin(dims)) / 255,
    }


def _fake_quant_errors(w: torch.Tensor, channel_range: tuple[int, int] = INT8) -> tuple[float, float]:
    """Mean |w - dequantized w|: per-tensor affine uint8, and per-channel symmetric on ``channel_range``."""
    scale, (zero, *_) = _affine_oracle(w)
    tensor = (w - scale * (_quantized(w, scale, zero, *UINT8).float() - zero)).abs().mean().item()
    s = w.abs().amax(tuple(range(1, w.dim())), keepdim=True) / 127.5
    channel = (w - s * _quantized(w, s, 0, *channel_range).float()).abs().mean().item()
    return tensor, channel


def check_channel_scales(symmetric_scales: Callable, errors: Any, weight: torch.Tensor,
                         stored: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """Lab of 09_compress_and_deploy, section 1: per-channel symmetric int8 scales of a layer's weights, the
    rounding error of both schemes, and the scales PT2E stored for the same layer.

    ``symmetric_scales(w)`` returns one scale per output channel, max|w_c| / 127.5 (zero point 0, levels
    -128..127); ``errors`` is ``(per-tensor affine error, per-channel symmetric error)``, each the mean of
    |w - dequantized w|; ``stored`` is ``labkit.compress.quantized_weight(...)`` of the same layer.
    """
    weight = _tensor(weight, "weight").float()
    channels, dims = weight.shape[0], tuple(range(1, weight.dim()))
    expected = weight.double().abs().amax(dims) / 127.5
    out = _tensor(_call(symmetric_scales, "symmetric_scales", weight.clone()), "symmetric_scales(weight)")
    if out.numel() == 1:
        raise CheckFailed("`symmetric_scales` returned one number: per-channel means one scale per output channel, "
                          f"{channels} here (reduce over every dimension but 0)")
    if out.numel() != channels:
        raise CheckFailed(f"`symmetric_scales` returned {out.numel()} numbers for {channels} output channels: "
                          "reduce over every dimension but 0, the output channels")
    _compare(out.flatten(), expected, "symmetric_scales(weight)", _scale_mistakes(weight.double()), rtol=1e-5)
    tensor_error, channel_error = _fake_quant_errors(weight)
    as_uint8 = _fake_quant_errors(weight, UINT8)[1]
    _compare(errors, [tensor_error, channel_error], "errors", {
        "per-tensor and per-channel are swapped: (per-tensor affine error, per-channel symmetric error)":
            [channel_error, tensor_error],
        "the per-channel levels are -128..127 with zero point 0: on 0..255 every negative weight is clipped to 0":
            [tensor_error, as_uint8],
    }, rtol=1e-3)
    try:
        q, pt_scale, pt_zero = (torch.as_tensor(t) for t in stored)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed("`stored` should be the (int8 weight, scales, zero points) of "
                          "labkit.compress.quantized_weight") from None
    mine = out.flatten().float()
    if pt_scale.shape != mine.shape or q.shape != weight.shape:
        raise CheckFailed(f"`stored` holds {tuple(pt_scale.shape)} scales for a weight of shape {tuple(q.shape)}: "
                          "read the same layer as `weight` with quantized_weight")
    gap = ((mine.double() - pt_scale.double()).abs() / pt_scale.double()).max().item()
    steps = weight / mine.view(-1, *[1] * len(dims))
    differ = torch.clamp(torch.round(steps), *INT8) != q.float()
    same = (f"equal the {channels} scales PT2E stored" if gap == 0 else
            f"differ from the {channels} scales PT2E stored by at most {gap:.1e} (relative)")
    levels = f"round(w / scale) gives PT2E's int8 weight for {weight.numel() - int(differ.sum()):,} of {weight.numel():,}"
    if differ.any() and bool((steps[differ] == -127.5).all()):
        levels += (f"; the other {int(differ.sum())} sit exactly halfway, at -127.5 steps (a channel's largest "
                   "weight), which PT2E, multiplying by 1 / scale, rounds to -127")
    _passed(f"mean rounding error: per-tensor affine {tensor_error:.3g}, per-channel symmetric {channel_error:.3g} "
            f"({tensor_error / channel_error:.2f}x smaller). Your scales {same}, with zero points "
            f"{'all 0' if not pt_zero.any() else 'not all 0'}; {levels}")


def _wrapped(acc: torch.Tensor, bits: int, signed: bool = True) -> torch.Tensor:
    """``acc`` as a ``bits``-bit register holds it: what a sum accumulated in int8 (or uint8, int16) ends as."""
    span = 1 << bits
    low = -(span >> 1) if signed else 0
    return torch.remainder(acc - low, span) + low


def check_int8_matmul(int8_matmul: Callable, weight_2d: torch.Tensor, patches: torch.Tensor) -> None:
    """Lab of 09_compress_and_deploy, section 1: a layer's product computed in integers.

    ``int8_matmul(q_w, q_x, zero_x, scale_w, scale_x)`` takes int8 weights (C_out, K) with per-channel scales
    (C_out,) and zero point 0, uint8 inputs (K, L) with one scale and zero point, and returns the float (C_out, L)
    product scale_w[c] * scale_x * sum_k q_w[c, k] (q_x[k, l] - zero_x), the sum accumulated in int32.
    """
    w, x = _tensor(weight_2d, "weight_2d").float(), _tensor(patches, "patches").float()
    if w.dim() != 2 or x.dim() != 2 or w.shape[1] != x.shape[0]:
        raise CheckFailed("`weight_2d` (C_out, K) and `patches` (K, L) should be the flattened filters and the "
                          "columns of F.unfold")
    scale_w = w.abs().amax(1) / 127.5
    q_w = torch.clamp(torch.round(w / scale_w[:, None]), *INT8).to(torch.int8)
    scale_x, (zero_x, *_) = _affine_oracle(x)
    q_x = torch.clamp(torch.round(x / scale_x) + zero_x, *UINT8).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    extreme_w = torch.where(torch.rand(4, w.shape[1], generator=g) < 0.9, 127, -128).to(torch.int8)
    extreme_x = torch.full((w.shape[1], 6), 255, dtype=torch.uint8)
    extreme_x[:, 0] = 0
    cases = [(q_w, q_x, zero_x, scale_w, scale_x, "this layer"),
             (extreme_w, extreme_x, 3, torch.full((4,), 0.01), 0.02, "extreme levels (weights 127 and -128, inputs 0 "
                                                                          "and 255)")]
    for qw, qx, z, sw, sx, what in cases:
        # Integer sums computed in float64, exact below 2**53 and far faster than an integer matmul
        w64, x64 = qw.double(), qx.double()
        acc = w64 @ (x64 - z)
        rescale = sw.double()[:, None] * sx

        def float_of(sums: torch.Tensor) -> torch.Tensor:
            return sums * rescale

        out = _call(int8_matmul, "int8_matmul", qw.clone(), qx.clone(), z, sw.clone(), sx)
        _compare(out, float_of(acc), f"int8_matmul on {what}", {
            "the sums overflowed int8: accumulate in int32 (convert q_w and q_x with .to(torch.int32) first)":
                float_of(_wrapped(acc, 8)),
            "the sums overflowed 8 bits (uint8): accumulate in int32": float_of(_wrapped(acc, 8, signed=False)),
            "the sums overflowed int16 (a sum of K products of up to 128 x 255 needs more than 16 bits): "
            "accumulate in int32": float_of(_wrapped(acc, 16)),
            "q_x - zero_x was computed in uint8, where values below the zero point wrap around: convert q_x to "
            "int32 before subtracting": float_of(w64 @ torch.remainder(x64 - z, 256)),
            "the zero point is missing: sum q_w * (q_x - zero_x), since x = scale_x * (q_x - zero_x)":
                float_of(w64 @ x64),
            "the zero point is added: sum q_w * (q_x - zero_x)": float_of(w64 @ (x64 + z)),
            "these are the integer sums: rescale them to floats, times scale_w[c] * scale_x": acc,
            "rescaled by scale_w only: multiply by scale_x too": acc * sw.double()[:, None],
            "rescaled by scale_x only: multiply row c by scale_w[c] too": acc * sx,
        }, rtol=1e-4, atol=1e-6)
    exact, sums = w.double() @ x.double(), q_w.double() @ (q_x.double() - zero_x)
    rel = ((sums * scale_w.double()[:, None] * scale_x - exact).norm() / exact.norm()).item()
    largest = int(sums.abs().max().item())
    fits = ("int8 (up to 127) and int16 (up to 32,767)" if largest > 32767 else
            "int8 (up to 127) but not int16 (up to 32,767)")
    _passed(f"the int8 product differs from the float one by {rel:.2%} (relative, {exact.numel():,} outputs); "
            f"its largest sum here, {largest:,}, overflows {fits}; a sum of {w.shape[1]} products can reach "
            f"{w.shape[1] * 128 * 255:,}, which int32 holds")


def _kept_by_prune_channels(model: nn.Module, amount: float) -> list[set[int]]:
    """The inner channels of each stage that labkit's prune_channels keeps, read off the narrower copy's weights."""
    from labkit.compress import prune_channels

    pruned = prune_channels(model, amount)
    kept = []
    for group, small in zip(model.layers, pruned.layers):
        full, rows = group.conv1.weight.detach().flatten(1), small.conv1.weight.detach().flatten(1)
        kept.append({int((full == row).all(1).nonzero()[0]) for row in rows})
    return kept


def _ranked(scores: list[torch.Tensor], counts: list[int], largest: bool = True) -> list[set[int]]:
    return [set(s.topk(k, largest=largest).indices.tolist()) for s, k in zip(scores, counts)]


def _channel_sets(answer: Any, stages: list[int]) -> list[set[int]]:
    """``answer`` (one collection of channel indices, or a boolean mask, per stage) as sets of indices."""
    _given(answer, "channels_to_keep(...)")
    if not isinstance(answer, (list, tuple)) or len(answer) != len(stages):
        raise CheckFailed(f"`channels_to_keep` should return one collection of channel indices per stage, "
                          f"{len(stages)} here, got {type(answer).__name__}")
    sets = []
    for i, (kept, width) in enumerate(zip(answer, stages)):
        try:
            t = torch.as_tensor(kept)
        except (TypeError, ValueError, RuntimeError):
            raise CheckFailed(f"stage {i}: expected channel indices (a tensor or list of ints), "
                              f"got {type(kept).__name__}") from None
        if t.dtype == torch.bool and t.shape == (width,):
            t = t.nonzero().flatten()
        if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise CheckFailed(f"stage {i}: expected a 1-D collection of integer channel indices, got dtype "
                              f"{t.dtype} and shape {tuple(t.shape)}")
        if len(t) and (t.min() < 0 or t.max() >= width):
            raise CheckFailed(f"stage {i}: channel indices must lie in 0..{width - 1}")
        if len(set(t.tolist())) != len(t):
            raise CheckFailed(f"stage {i}: some channel is listed twice")
        sets.append(set(t.tolist()))
    return sets


def check_channels_to_keep(channels_to_keep: Callable, model: nn.Module, amount: float) -> None:
    """Lab of 09_compress_and_deploy, section 3: the channels that ``prune_channels(model, amount)`` keeps.

    ``channels_to_keep(model, amount)`` returns, for each stage, the indices of the inner channels to keep: the
    round(C (1 - amount)) largest scores |conv1 filter|_1 * |gamma| / sqrt(running_var + eps) of that stage's
    conv1 and norm1, ranked within the stage, at least one per stage. Tried at ``amount``, at 0.3 and at 0.99 (where
    rounding alone would keep nothing), and compared with prune_channels.
    """
    groups = list(getattr(model, "layers", []))
    if not groups:
        raise CheckFailed("`model` should be the labkit CifarNet that prune_channels prunes")
    widths = [g.conv1.out_channels for g in groups]
    for a in dict.fromkeys((float(amount), 0.3, 0.99)):
        counts = [max(1, round(c * (1 - a))) for c in widths]
        expected = _kept_by_prune_channels(model, a)
        got = _channel_sets(_call(channels_to_keep, "channels_to_keep", copy.deepcopy(model), a), widths)
        if got == expected:
            continue
        w = [g.conv1.weight.detach().double() for g in groups]
        bn = [g.norm1 for g in groups]
        sigma = [(n.running_var.double() + n.eps).sqrt() for n in bn]
        gamma = [n.weight.detach().double().abs() for n in bn]
        l1 = [f.abs().sum((1, 2, 3)) for f in w]
        score = [s * g / v for s, g, v in zip(l1, gamma, sigma)]
        flat = torch.cat(score)
        top = set(flat.topk(sum(counts)).indices.tolist())
        starts = [sum(widths[:i]) for i in range(len(widths))]
        global_sets = [{j - s for j in top if s <= j < s + c} for s, c in zip(starts, widths)]
        mistakes = {
            "these are the least important channels, the ones prune_channels removes: keep the largest scores "
            "(topk, or sort in descending order)": _ranked(score, counts, largest=False),
            "ranked by the L2 norm of the filters: prune_channels uses the L1 norm, sum |w|":
                _ranked([f.pow(2).sum((1, 2, 3)).sqrt() * g / v for f, g, v in zip(w, gamma, sigma)], counts),
            "the BatchNorm factor is missing: multiply each filter's L1 norm by |gamma| / sqrt(running_var + eps) "
            "of norm1, which scales that channel before anything else sees it": _ranked(l1, counts),
            "the BatchNorm factor divides by the variance: it is |gamma| / sqrt(running_var + eps), the standard "
            "deviation": _ranked([s * g / (v * v) for s, g, v in zip(l1, gamma, sigma)], counts),
            "ranked across all stages at once: prune_channels ranks the channels of each stage separately and "
            "keeps the same fraction in each": global_sets,
        }
        for hint, sets in mistakes.items():
            if got == sets:
                raise CheckFailed(f"`channels_to_keep(model, {a:g})`: {hint}")
        sizes = [len(s) for s in got]
        if 0 in sizes and 0 not in counts:
            raise CheckFailed(f"`channels_to_keep(model, {a:g})` keeps no channel in some stage: keep at least one, "
                              "max(1, round(C * (1 - amount))), as prune_channels does")
        if sizes != counts:
            raise CheckFailed(f"`channels_to_keep(model, {a:g})` keeps {sizes} channels per stage; prune_channels "
                              f"keeps round(C * (1 - amount)) = {counts} of {widths}")
        wrong = [i for i, (s, e) in enumerate(zip(got, expected)) if s != e]
        raise CheckFailed(f"`channels_to_keep(model, {a:g})` keeps other channels than prune_channels in stage(s) "
                          f"{wrong}: score = L1 norm of conv1's filter x |gamma| / sqrt(running_var + eps), "
                          "largest first")
    counts = [max(1, round(c * (1 - amount))) for c in widths]
    _passed(f"the same channels as prune_channels(model, {amount:g}) in all {len(widths)} stages: "
            + ", ".join(f"{k} of {c}" for k, c in zip(counts, widths)))


def _statistics(model: nn.Module) -> list[torch.Tensor]:
    return [torch.cat([m.running_mean, m.running_var]).double() for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-3, atol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))


def check_bn_reestimation(reestimate_by_hand: Callable, model: nn.Module, images: torch.Tensor,
                          test_images: torch.Tensor, test_labels: torch.Tensor) -> None:
    """Lab of 09_compress_and_deploy, section 3: BatchNorm statistics re-estimated by hand.

    ``reestimate_by_hand(model, images)`` resets every BatchNorm layer's statistics, sets ``momentum=None``,
    runs ``images`` through the model in training mode (in batches of 500) and returns it in eval mode; it gets a
    copy of ``model`` and is compared with labkit's ``reestimate_batchnorm`` on another copy.
    """
    from labkit.compress import reestimate_batchnorm
    from labkit.evaluate import accuracy, predict_logits
    from labkit.loader import to_float

    if not isinstance(model, nn.Module) or not _statistics(model):
        raise CheckFailed("`model` should be the pruned network, with its BatchNorm layers")
    out = _call(reestimate_by_hand, "reestimate_by_hand", copy.deepcopy(model), images)
    if not isinstance(out, nn.Module):
        raise CheckFailed(f"`reestimate_by_hand` should return the model, got {type(out).__name__}")
    reference = reestimate_batchnorm(copy.deepcopy(model), images)
    got, expected = _statistics(out), _statistics(reference)
    if len(got) != len(expected):
        raise CheckFailed("`reestimate_by_hand` returned another network than the one it was given")
    if not _same(got, expected):
        reset = [torch.cat([torch.zeros(len(s) // 2), torch.ones(len(s) // 2)]).double() for s in got]
        if _same(got, reset):
            raise CheckFailed("the statistics are still the reset values (mean 0, variance 1): BatchNorm updates "
                              "them only in training mode, so put the model (or its BatchNorm layers) in train() "
                              "for the passes")
        stale, fresh = torch.cat(_statistics(model)), torch.cat(expected)
        if (torch.cat(got) - stale).norm() < 0.1 * (torch.cat(got) - fresh).norm():
            raise CheckFailed("the statistics barely moved from the old ones: call reset_running_stats() first. "
                              "With momentum=None the average would go on over the thousands of batches the "
                              "network was trained on, and a few new batches hardly count")
        ema = copy.deepcopy(model).eval()
        for m in ema.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.train()
        with torch.no_grad():
            for chunk in images.split(500):
                ema(to_float(chunk))
        if _same(got, _statistics(ema)):
            raise CheckFailed("each batch was averaged in with the layer's momentum, which favours the last "
                              "batches: set every BatchNorm layer's momentum to None for the plain average")
        gap = max(((a - b).abs() / (b.abs() + 1e-3)).max().item() for a, b in zip(got, expected))
        raise CheckFailed(f"the statistics differ from reestimate_batchnorm's by up to {gap:.2g} (relative): reset, "
                          "momentum=None, train mode, then every image once in batches of 500")
    if out.training or any(m.training for m in out.modules()):
        raise CheckFailed("the statistics are right, but the model is left in training mode: call model.eval(). "
                          "In training mode BatchNorm normalises each batch with that batch's own statistics (and "
                          "keeps changing the stored ones), so predictions depend on the other images of the batch")
    mine, theirs = (accuracy(predict_logits(m, test_images), test_labels) for m in (out, reference))
    _passed(f"the same statistics as reestimate_batchnorm; accuracy on {len(test_labels):,} test images {mine:.2%} "
            f"(reestimate_batchnorm: {theirs:.2%}). torch.no_grad() only saves memory here; eval() is what the "
            "predictions need")


def _composed(vertical: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
    """The k x k weight that a vertical (rank, c_in, k, 1) and a horizontal (c_out, rank, 1, k) filter compute."""
    return torch.einsum("riy,orx->oiyx", vertical[..., 0].double(), horizontal[:, :, 0].double())


def check_spatial_svd(spatial_svd: Callable, conv: nn.Conv2d, rank: int) -> None:
    """Lab of 09_compress_and_deploy, low-rank section: ``spatial_svd(conv, rank)`` returns the weights
    ``(vertical, horizontal)`` of a k x 1 convolution to ``rank`` channels and a 1 x k one back to ``conv``'s
    outputs, from the truncated SVD of conv's weight read as the matrix M[(i, y), (o, x)]. Compared, as the one
    k x k weight the pair computes, with :func:`labkit.lowrank.factorize_conv`."""
    from labkit.lowrank import factorize_conv

    c_out, c_in, k, _ = conv.weight.shape
    answer = _call(spatial_svd, "spatial_svd", copy.deepcopy(conv), rank)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise CheckFailed("`spatial_svd` should return two weight tensors, (vertical, horizontal)")
    vertical = _tensor(answer[0], "vertical", (rank, c_in, k, 1))
    horizontal = _tensor(answer[1], "horizontal", (c_out, rank, 1, k))
    expected = _composed(*(layer.weight.detach() for layer in factorize_conv(conv, rank)))
    w = conv.weight.detach().double()
    m = w.permute(1, 2, 0, 3).reshape(c_in * k, c_out * k)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    no_s = (u[:, :rank] @ vh[:rank]).reshape(c_in, k, c_out, k).permute(2, 0, 1, 3)
    wrong_layout = w.reshape(c_out * k, c_in * k)  # rows (o, i) mixed up: not a spatial split
    u2, s2, vh2 = torch.linalg.svd(wrong_layout, full_matrices=False)
    wrong = ((u2[:, :rank] * s2[:rank]) @ vh2[:rank]).reshape(c_out, c_in, k, k)
    _compare(_composed(vertical, horizontal), expected, "the k x k weight your two filters compute", {
        "the singular values are missing: scale the factors by S (sqrt(S) on each side, or S on one)": no_s,
        "the matrix pairs the wrong axes: read the weight as M[(i, y), (o, x)], i.e. "
        "w.permute(1, 2, 0, 3).reshape(c_in * k, c_out * k)": wrong,
    }, rtol=1e-3, atol=1e-5)
    error = (w - expected).norm().item()
    _passed(f"rank {rank} of {min(m.shape)}: the weight's error is {error:.4f}, exactly the norm of the dropped "
            f"singular values ({s[rank:].norm().item():.4f}, Eckart-Young); the pair costs "
            f"{rank * k * (c_in + c_out):,} multiply-adds per pixel against {k * k * c_in * c_out:,}")
