"""labkit: the helper package of the Knowledge Distillation Lab (see notebooks/00_start_here.ipynb)."""

from labkit.distillation import (DistillationLoss, distillation_loss, distillation_loss_parts, entropy,
                                 kl_at_temperature, kl_divergence, soft_targets)
from labkit.settings import device, pick, quick_mode, quick_note

__all__ = [
    "DistillationLoss",
    "device",
    "distillation_loss",
    "distillation_loss_parts",
    "entropy",
    "kl_at_temperature",
    "kl_divergence",
    "pick",
    "quick_mode",
    "quick_note",
    "soft_targets",
]
__version__ = "0.1.0"
