"""The T/alpha sweep and the soft-target profile (checked against scipy's entropy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from labkit import models
from labkit.tuning import soft_target_profile, sweep_temperature_alpha


def test_profile_matches_scipy_and_flattens_with_temperature():
    logits = torch.randn(50, 10) * 4
    profile = soft_target_profile(logits, (0.5, 1, 2, 4, 8, 1000))
    for T, row in profile.items():
        p = torch.softmax(logits / T, -1).numpy()
        assert row["entropy_bits"] == pytest.approx(np.mean(entropy(p, base=2, axis=1)), rel=1e-5)
        assert row["dark_mass"] == pytest.approx(1 - row["top_prob"])
    entropies = [row["entropy_bits"] for row in profile.values()]
    assert entropies == sorted(entropies) and entropies[-1] == pytest.approx(np.log2(10), abs=1e-3)


def test_sweep_on_a_tiny_subset(local_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(3)
    teacher = models.create("student_small")
    tiny = local_cifar.subset(train_per_class=20, test_per_class=1, seed=0)
    result = sweep_temperature_alpha(teacher, tiny, Ts=(1, 4), alphas=(0.5, 1.0), epochs=1, batch_size=50,
                                     val_per_class=5, teacher_views=1, log=None)
    json.dumps(result)
    assert np.array(result["grid"]).shape == (2, 2) and len(result["runs"]) == 5
    assert result["best"]["val_acc"] == max(max(row) for row in result["grid"])
    assert result["runs"][0]["alpha"] == 0.0 and result["scratch"] == result["runs"][0]["val_acc"]
    assert len({r["init_fingerprint"] for r in result["runs"]}) == 1
    assert result["settings"]["val_images"] == 50 and result["settings"]["train_images"] == 150
    with pytest.raises(ValueError, match=r"alphas in \(0, 1\]"):
        sweep_temperature_alpha(teacher, tiny, alphas=(0.0,), log=None)
