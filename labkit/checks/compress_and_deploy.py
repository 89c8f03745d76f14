"""Checks for the exercises of 09_compress_and_deploy."""

from __future__ import annotations

from labkit.checks._base import CheckFailed, _passed, _given


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
