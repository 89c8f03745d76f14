"""The teacher-logit cache of labkit.teacher: checksummed like the data cache, damaged files rebuilt, mode restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from labkit.teacher import teacher_logits_for_views


def tiny_teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))


def images(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (12, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def counted(teacher: nn.Module) -> list:
    calls: list = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    return calls


def cache_file(cache: Path) -> Path:
    files = list((cache / "teacher_logits").glob("*.pt"))
    assert len(files) == 1, files
    return files[0]


def test_a_flipped_payload_byte_is_detected_and_recomputed(isolated_cache, capsys):
    teacher, views = tiny_teacher(), [images()]
    first = teacher_logits_for_views(teacher, views, progress=False)
    path = cache_file(isolated_cache)
    blob = bytearray(path.read_bytes())
    row = first[0, 5].numpy().tobytes()  # the raw float32 bytes of one image's logits, stored uncompressed
    at = blob.find(row)
    assert at >= 0 and blob.find(row, at + 1) < 0
    blob[at + len(row) // 2] ^= 0x01  # a low mantissa bit: the file still unpickles, one logit changes a little
    path.write_bytes(bytes(blob))

    calls = counted(teacher)
    second = teacher_logits_for_views(teacher, views, progress=False)
    assert calls and torch.equal(second, first)  # recomputed, not the damaged values
    assert str(path) in capsys.readouterr().out  # reported, naming the file
    calls.clear()
    assert torch.equal(teacher_logits_for_views(teacher, views, progress=False), first) and not calls  # rewritten


@pytest.mark.parametrize("damage", ["truncated", "empty", "old-format"])
def test_unreadable_caches_are_reported_and_rebuilt(isolated_cache, capsys, damage):
    teacher, views = tiny_teacher(), [images()]
    first = teacher_logits_for_views(teacher, views, progress=False)
    path = cache_file(isolated_cache)
    if damage == "old-format":  # a bare tensor, as labkit wrote before the checksum
        torch.save(first + 1, path)
    else:
        path.write_bytes(path.read_bytes()[: 100 if damage == "truncated" else 0])
    calls = counted(teacher)
    assert torch.equal(teacher_logits_for_views(teacher, views, progress=False), first) and calls
    assert str(path) in capsys.readouterr().out


def test_the_cache_is_reused_without_running_the_teacher(isolated_cache):
    teacher, views = tiny_teacher(), [images(), images(7)]
    first = teacher_logits_for_views(teacher, views, progress=False, batch_size=5)
    assert first.shape == (2, 12, 10)
    calls = counted(teacher)
    assert torch.equal(teacher_logits_for_views(teacher, views, progress=False), first) and not calls


def test_the_teacher_mode_is_restored_even_after_an_error(isolated_cache):
    class Failing(nn.Linear):
        def forward(self, x):
            raise RuntimeError("out of memory")

    teacher = nn.Sequential(nn.Flatten(), Failing(48, 10)).train()
    with pytest.raises(RuntimeError, match="out of memory"):
        teacher_logits_for_views(teacher, [images()], progress=False)
    assert teacher.training
    assert not list(isolated_cache.glob("teacher_logits/*.pt"))
