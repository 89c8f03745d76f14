"""Checks for the exercises of notebooks 01 to 12: a pass message, or a hint diagnosed from the answer.

Every check recomputes the answer independently (with SciPy, plain PyTorch or labkit's reference functions)
and, when the learner's answer differs, compares it with what the usual mistakes produce (a missing ``T**2``,
``reduction="mean"``, probabilities where log-probabilities are expected, a reversed KL...), so that the
message names the mistake instead of only saying "wrong". A failed check raises :class:`CheckFailed`.

One module per notebook; every check is importable from here (``from labkit.checks import check_...``).
"""

import sys

from labkit.checks._base import AnswerMissing, CheckFailed, recorded
from labkit.checks.dark_knowledge import (
    check_most_torn, check_mistake_similarity, check_dark_knowledge_extremes, check_label_smoothing,
)
from labkit.checks.temperature import check_half_as_likely, check_entropy_by_correctness, check_numpy_softmax
from labkit.checks.kl_divergence import (
    check_kl_directions, check_distillation_loss, check_loss_parts, check_soft_grad,
)
from labkit.checks.cifar_teacher import (
    check_tta_passes, check_temperature_scaling, check_confident_mistakes, check_smoothing_calibration,
)
from labkit.checks.distill_student import (
    check_agreement_vs_accuracy, check_distillation_step, check_train_epoch, check_unweighted_kl,
)
from labkit.checks.tuning_temperature_and_alpha import check_dark_mass
from labkit.checks.ensemble_teachers import check_probability_average, check_disagreement
from labkit.checks.beyond_logits import check_inconsistent_fm_loss
from labkit.checks.compress_and_deploy import (
    check_pruned_int8_row, check_affine_quantization, check_channel_scales, check_int8_matmul,
    check_channels_to_keep, check_bn_reestimation, check_spatial_svd,
)
from labkit.checks.omitted_class import check_choose_bias, check_where_cats_go
from labkit.checks.decision_boundaries import check_pseudo_labels, check_noisy_rerun, check_bigger_student
from labkit.checks.distill_language_model import check_reverse_kl, check_lowest_diversity, check_beta_sweep

__all__ = [
    "AnswerMissing",
    "CheckFailed",
    "check_most_torn",
    "check_mistake_similarity",
    "check_dark_knowledge_extremes",
    "check_label_smoothing",
    "check_half_as_likely",
    "check_entropy_by_correctness",
    "check_numpy_softmax",
    "check_kl_directions",
    "check_distillation_loss",
    "check_loss_parts",
    "check_soft_grad",
    "check_tta_passes",
    "check_temperature_scaling",
    "check_confident_mistakes",
    "check_smoothing_calibration",
    "check_distillation_step",
    "check_train_epoch",
    "check_unweighted_kl",
    "check_agreement_vs_accuracy",
    "check_dark_mass",
    "check_probability_average",
    "check_disagreement",
    "check_inconsistent_fm_loss",
    "check_pruned_int8_row",
    "check_affine_quantization",
    "check_channel_scales",
    "check_int8_matmul",
    "check_channels_to_keep",
    "check_bn_reestimation",
    "check_spatial_svd",
    "check_choose_bias",
    "check_where_cats_go",
    "check_pseudo_labels",
    "check_noisy_rerun",
    "check_bigger_student",
    "check_reverse_kl",
    "check_lowest_diversity",
    "check_beta_sweep",
]

# What labkit.grade reads: every check records its outcome while a notebook is graded, imported from here or from
# its notebook's module.
for _name in __all__:
    if _name.startswith("check_"):
        globals()[_name] = recorded(globals()[_name])
        setattr(sys.modules[globals()[_name].__module__], _name, globals()[_name])
del _name
