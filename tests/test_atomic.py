"""Every file labkit writes appears whole or not at all (labkit.atomic): an error or a full disk in the middle of a
write leaves the previous file as it was. The full disk is real: a child process with RLIMIT_FSIZE."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from labkit.atomic import atomic_path, atomic_torch_save, write_text_atomic


def test_a_finished_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_the_file_gets_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_save_leaves_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "blob.pt"
    atomic_torch_save({"x": torch.arange(3)}, path)

    def fail_halfway(obj, f):
        Path(f).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"x": torch.arange(5)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["blob.pt"]


# Each writer first writes a small file, then, in a child process whose files may not exceed LIMIT bytes (the disk
# "fills up"), a large one: the write fails and the small file must still be there, whole.
LIMIT = 64 * 1024
WRITERS = {
    "save_results": ("from labkit.results import save_results",
                     "save_results('r', {'x': [0.5] * N}, folder=FOLDER)", "r.json"),
    "save_weights": ("import torch; from labkit.pretrained import save_weights",
                     "save_weights(torch.nn.Linear(N // 100 + 1, 100), FOLDER / 'w.safetensors', half=False)",
                     "w.safetensors"),
    "History.to_csv": ("from labkit.history import History",
                       "History([{'step': i, 'loss': 0.5} for i in range(N)]).to_csv(FOLDER / 'h.csv')", "h.csv"),
    "atomic_torch_save": ("import torch; from labkit.atomic import atomic_torch_save",
                          "atomic_torch_save({'x': torch.zeros(N)}, FOLDER / 'c.pt')", "c.pt"),
}


def run_writer(setup: str, call: str, folder: Path, n: int, limit: int | None) -> subprocess.CompletedProcess:
    # past the limit a write fails with EFBIG (once SIGXFSZ is ignored), as on a full disk
    full_disk = ("signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                 f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))") if limit else ""
    code = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        {setup}
        FOLDER, N = Path({str(folder)!r}), {n}
        {full_disk}
        {call}
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LABKIT_QUICK": "0"})


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_mid_write_keeps_the_previous_file(writer, tmp_path):
    setup, call, name = WRITERS[writer]
    first = run_writer(setup, call, tmp_path, 10, None)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / name).read_bytes()
    second = run_writer(setup, call, tmp_path, 200_000, LIMIT)
    assert second.returncode != 0, "the large write should have failed on the full disk"
    assert (tmp_path / name).read_bytes() == before, f"{writer} destroyed the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no temporary file left behind"
    if name.endswith(".json"):
        json.loads(before)


def test_a_checked_file_refuses_a_flipped_bit_and_plain_files_still_load(tmp_path):
    from labkit.atomic import DamagedFileError, load_checked, save_checked

    path = tmp_path / "checkpoint.pt"
    state = {"model": {"w": torch.arange(1000, dtype=torch.float32)}, "step": 3, "history": [{"loss": 0.5}]}
    save_checked(state, path)
    loaded = load_checked(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["step"] == 3
    blob = bytearray(path.read_bytes())
    at = blob.find(struct.pack("<f", 500.0))  # the weight 500.0, inside the stored payload
    assert at > 0
    blob[at] ^= 0x01  # 500.0 becomes another number: the file still loads
    path.write_bytes(bytes(blob))
    with pytest.raises(DamagedFileError, match="checkpoint.pt is damaged.*Delete it"):
        load_checked(path)
    torch.save({"step": 1}, tmp_path / "old.pt")  # written before checksums
    assert load_checked(tmp_path / "old.pt") == {"step": 1}
