"""Fault kinds of files and interruptions: labkit.atomic, labkit.pretrained, labkit.protocol, labkit.results,
labkit.history, labkit.train and labkit.lm checkpoints (damaged files, a full disk, kill -9 mid-run)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from labkit import lm, models, protocol
from labkit.atomic import (DamagedFileError, atomic_path, atomic_torch_save, load_checked, save_checked,
                           write_text_atomic)
from labkit.data import CifarData
from labkit.history import History
from labkit.models import CifarNet
from labkit.pretrained import WeightsError, load_weights, save_weights
from labkit.results import save_results
from labkit.train import ResumeError, distill, train

fault = pytest.mark.fault
HERE = Path(__file__).parent
TINY = dict(epochs=2, batch_size=10, progress=False)  # 40 images: 4 steps per epoch, a checkpoint after steps 4 and 8
LM_TEXT = "the cat sat on the mat. the dog sat on the log. "


# --- runs shared by this process and its children (a child imports this module) ----------------------------------


def tiny_cifar_data() -> CifarData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(60) % 10
    return CifarData(images[:40], labels[:40], images[40:], labels[40:])


def tiny_net(seed: int = 0, widths: tuple[int, int, int] = (8, 8, 8)) -> CifarNet:
    torch.manual_seed(seed)
    return CifarNet(widths, stem_width=8, whiten=False)


def train_run(out: Path, **kwargs) -> CifarNet:
    model = tiny_net()
    train(model, tiny_cifar_data(), out=out, **TINY, **kwargs)
    return model


def distill_run(out: Path, **kwargs) -> CifarNet:
    student = tiny_net()
    distill(student, tiny_net(seed=1), tiny_cifar_data(), T=2.0, alpha=0.5, teacher_views=2, out=out, **TINY, **kwargs)
    return student


def lm_run(out: Path, **kwargs) -> lm.CharTransformer:
    tok = lm.CharTokenizer.from_text(LM_TEXT, 1)
    ids = tok.encode(LM_TEXT * 2)
    torch.manual_seed(0)
    model = lm.CharTransformer(lm.LMConfig(tok.vocab_size, context=16, n_layer=1, n_head=2, d_model=16, dropout=0.1))
    lm.train_lm(model, lambda g: lm.batch_from_corpus(ids, 4, 12, g), lm.ce_objective, steps=6, warmup_steps=2,
                log_every=2, checkpoint_every=3, out=out, progress=False, **kwargs)
    return model


def stored_run(width: int = 3, record_size: int = 1):
    """``make`` and ``skeleton`` of a kept_model run: a Linear layer of ``width`` inputs, a record of that many
    numbers."""
    def make():
        torch.manual_seed(0)
        return torch.nn.Linear(width, 2), {"test_acc": 0.5, "history": [0.5] * record_size}
    return make, lambda: torch.nn.Linear(width, 2)


def kill_at(step: int):
    """An ``on_step`` that SIGKILLs this process once ``step`` steps are done: a real, deterministic kill -9."""
    def on_step(done: int) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return on_step


def fill_disk(limit: int) -> None:
    """From now on no file this process writes may exceed ``limit`` bytes: writes fail with EFBIG, as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# --- helpers of the parent ------------------------------------------------------------------------------------------


def run_child(body: str, cwd: Path) -> subprocess.CompletedProcess:
    """``body`` in a new Python process that has this module's names (the same runs, bit for bit)."""
    code = (f"import sys\nsys.path.insert(0, {str(HERE)!r})\nfrom {Path(__file__).stem} import *\n"
            + textwrap.dedent(body))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_killed(child: subprocess.CompletedProcess) -> None:
    assert child.returncode == -signal.SIGKILL, f"the child was not killed (rc {child.returncode}):\n{child.stderr}"


def assert_disk_was_full(child: subprocess.CompletedProcess) -> None:
    # EFBIG is "File too large" in Python and safetensors; torch's zip writer reports it as "unexpected pos"
    assert child.returncode > 0 and re.search(r"File too large|unexpected pos", child.stderr), child.stderr


def assert_same_weights(a: torch.nn.Module | dict, b: torch.nn.Module | dict) -> None:
    a, b = (m.state_dict() if isinstance(m, torch.nn.Module) else m for m in (a, b))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def flip_byte(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))


def interrupted_train_run(out: Path) -> None:
    """A training run stopped in its second epoch (KeyboardInterrupt): ``out`` holds the checkpoint of epoch 1."""
    def interrupt(step):
        if step == 6:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_run(out, on_step=interrupt)


def resumed(run, out: Path, first_step: int, last_step: int) -> torch.nn.Module:
    """``run`` resumed from ``out``, after checking that it continued from the checkpoint, not from scratch."""
    steps = []
    model = run(out, resume=True, on_step=steps.append)
    assert steps == list(range(first_step, last_step + 1)), steps
    return model


def untimed(history: History) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history.rows]


class RunsCode:
    """A pickled object that creates ``path`` when unpickled: a file that runs code on load."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP's waiting threads cost seconds a run;
    the children (run_child) use the same count, so that their runs equal this process's bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(one_thread, tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted training run: its final weights and its folder."""
    out = tmp_path_factory.mktemp("reference")
    return train_run(out).state_dict(), out


# --- labkit.atomic --------------------------------------------------------------------------------------------------


@fault("labkit.atomic", "handled")
def test_a_keyboard_interrupt_inside_atomic_path_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "r.json", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise KeyboardInterrupt  # a BaseException, not an Exception
    assert path.read_text() == "old" and names(tmp_path) == ["r.json"]


@fault("labkit.atomic", "handled")
def test_text_that_utf8_cannot_encode_keeps_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "notes.md", "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "new text with a lone surrogate \ud800")
    assert path.read_text() == "old" and names(tmp_path) == ["notes.md"]


@fault("labkit.atomic", "handled")
def test_an_unpicklable_object_keeps_the_old_torch_file(tmp_path):
    path = tmp_path / "blob.pt"
    atomic_torch_save({"x": torch.arange(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError), match="pickle"):
        atomic_torch_save({"x": torch.arange(5), "fn": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3)) and names(tmp_path) == ["blob.pt"]


@fault("labkit.atomic", "error")
def test_an_altered_recorded_checksum_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checked({"w": torch.arange(10.0)}, path)
    sha = torch.load(path, weights_only=True)["labkit_sha256"].encode()
    blob = path.read_bytes()
    assert blob.count(sha) == 1
    # the same length, another digest: the zip's CRC of data.pkl is not checked by torch.load
    path.write_bytes(blob.replace(sha, sha[:-1] + (b"0" if sha[-1:] != b"0" else b"1")))
    with pytest.raises(DamagedFileError, match=r"checkpoint\.pt is damaged.*Delete it"):
        load_checked(path)


@fault("labkit.atomic", "error")
def test_a_truncated_checked_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checked({"w": torch.arange(1000.0)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedFileError, match=r"checkpoint\.pt is damaged.*Delete it"):
        load_checked(path)


@fault("labkit.atomic", "error")
def test_an_empty_checked_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(DamagedFileError, match=r"checkpoint\.pt is damaged.*Delete it"):
        load_checked(path)


@fault("labkit.atomic", "error")
def test_a_pickle_that_runs_code_is_refused_by_load_checked_naming_the_file(tmp_path):
    path, ran = tmp_path / "checkpoint.pt", tmp_path / "ran"
    torch.save({"step": RunsCode(ran)}, path)
    try:
        with pytest.raises(Exception, match=r"checkpoint\.pt"):
            load_checked(path)
    finally:
        assert not ran.exists(), "loading the checkpoint ran the code in it"


# --- labkit.pretrained ----------------------------------------------------------------------------------------------


def bit_flipped(path, sha, tmp_path):
    flip_byte(path, path.stat().st_size // 2)
    return tiny_net(), sha


def truncated(path, sha, tmp_path):
    path.write_bytes(path.read_bytes()[:-100])
    return tiny_net(), None  # no checksum to catch it: safetensors itself must


def wrong_sha256(path, sha, tmp_path):
    return tiny_net(), hashlib.sha256(b"the pinned file").hexdigest()


def pickle_with_code(path, sha, tmp_path):
    torch.save({"stem.weight": RunsCode(tmp_path / "ran")}, path)  # torch.save's pickle under a .safetensors name
    return tiny_net(), None


def another_architecture(path, sha, tmp_path):
    return models.create("student_small"), None


def missing(path, sha, tmp_path):
    path.unlink()
    return tiny_net(), sha


@fault("labkit.pretrained", "error")
@pytest.mark.parametrize("damage, match", [pytest.param(damage, match, id=damage.__name__) for damage, match in [
    (bit_flipped, r"is damaged or altered: sha256 [0-9a-f]+, expected .*Reinstall labkit"),
    (truncated, r"is not a complete safetensors file .*save it again with save_weights"),
    (wrong_sha256, r"is damaged or altered: sha256 [0-9a-f]+, expected .*Reinstall labkit"),
    (pickle_with_code, r"is not a complete safetensors file .*save it again with save_weights"),
    (another_architecture, r"does not fit CifarNet .*load it into the architecture it was saved from"),
    (missing, r"is missing; reinstall labkit or retrain"),
]])
def test_a_bad_weights_file_is_refused_naming_it(damage, match, tmp_path):
    path = tmp_path / "w.safetensors"
    model, sha = damage(path, save_weights(tiny_net(), path), tmp_path)
    with pytest.raises(WeightsError, match=match) as err:
        load_weights(model, path, sha)
    assert str(path) in str(err.value)
    assert not (tmp_path / "ran").exists()


# --- a full disk (a child process with RLIMIT_FSIZE) over an existing file ------------------------------------------


@fault("labkit.results", "handled")
def test_a_full_disk_while_saving_results_keeps_the_previous_results(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_QUICK", "0")
    path = save_results("kd", {"acc": 0.5}, folder=tmp_path)
    before = path.read_bytes()
    child = run_child(f"""
        fill_disk(64 * 1024)
        save_results("kd", {{"acc": [0.5] * 200_000}}, folder=Path({str(tmp_path)!r}))
    """, tmp_path)
    assert_disk_was_full(child)
    assert path.read_bytes() == before and json.loads(before)["acc"] == 0.5
    assert names(tmp_path) == ["kd.json"], "a temporary file was left behind"


@fault("labkit.pretrained", "handled")
def test_a_full_disk_while_saving_weights_keeps_the_previous_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    sha = save_weights(tiny_net(), path)
    before = path.read_bytes()
    assert len(before) < 16 * 1024
    child = run_child(f"""
        fill_disk(16 * 1024)
        save_weights(models.create("student_small"), Path({str(path)!r}))
    """, tmp_path)
    assert_disk_was_full(child)
    assert path.read_bytes() == before
    load_weights(tiny_net(seed=5), path, sha)  # still whole, and still the file its checksum names
    assert names(tmp_path) == ["w.safetensors"], "a temporary file was left behind"


@fault("labkit.protocol", "handled")
@pytest.mark.parametrize("where", ["weights", "record"])
def test_a_full_disk_while_storing_a_run_keeps_the_stored_runs_and_marks_nothing_finished(where, tmp_path):
    store = tmp_path / "store"
    make, skeleton = stored_run()
    protocol.kept_model(store, {"arm": "a"}, make, skeleton)
    before = {name: (store / name).read_bytes() for name in names(store)}
    big = "width=50_000" if where == "weights" else "record_size=200_000"  # 400 kB of weights, or of record
    child = run_child(f"""
        fill_disk(64 * 1024)
        protocol.kept_model(Path({str(store)!r}), {{"arm": "b"}}, *stored_run({big}))
    """, tmp_path)
    assert_disk_was_full(child)
    assert {name: (store / name).read_bytes() for name in before} == before
    assert not any(n.endswith(".tmp") for n in names(store)), names(store)
    assert len(list(store.glob("*.json"))) == 1, "the failed run was marked finished"
    model, record = protocol.kept_model(store, {"arm": "a"}, lambda: pytest.fail("retrained a stored run"), skeleton)
    assert_same_weights(model, make()[0])


# --- labkit.protocol: stored runs -----------------------------------------------------------------------------------


def store_one(tmp_path: Path) -> tuple[Path, Path, tuple]:
    make, skeleton = stored_run()
    protocol.kept_model(tmp_path, {"arm": "x"}, make, skeleton)
    return next(tmp_path.glob("*.json")), next(tmp_path.glob("*.safetensors")), (make, skeleton)


def read_back(tmp_path: Path, skeleton) -> tuple:
    return protocol.kept_model(tmp_path, {"arm": "x"}, lambda: pytest.fail("trained again"), skeleton)


@fault("labkit.protocol", "error")
def test_a_stored_run_record_of_binary_garbage_is_refused_naming_it(tmp_path):
    record, _, (_, skeleton) = store_one(tmp_path)
    record.write_bytes(bytes(range(256)))
    with pytest.raises(protocol.StoredRunError,
                       match=rf"{re.escape(record.name)} is damaged .*delete it and its \.safetensors"):
        read_back(tmp_path, skeleton)


@fault("labkit.protocol", "error")
def test_a_stored_run_record_that_is_not_an_object_is_refused_naming_it(tmp_path):
    record, _, (_, skeleton) = store_one(tmp_path)
    record.write_text("[0.5, 0.6]")
    with pytest.raises(protocol.StoredRunError,
                       match=rf"{re.escape(record.name)} holds list, not a run record: delete it"):
        read_back(tmp_path, skeleton)


@fault("labkit.protocol", "error")
def test_a_stored_run_record_without_its_checksum_is_refused_naming_it(tmp_path):
    record, _, (_, skeleton) = store_one(tmp_path)
    record.write_text(json.dumps({protocol.STORED_RUN_KEY: 1, "record": {"test_acc": 0.5}}))
    with pytest.raises(protocol.StoredRunError, match=rf"{re.escape(record.name)}.*delete it"):
        read_back(tmp_path, skeleton)


@fault("labkit.protocol", "error")
def test_a_stored_run_record_without_its_weights_says_to_delete_the_run(tmp_path):
    record, weights, (_, skeleton) = store_one(tmp_path)
    weights.unlink()
    with pytest.raises((protocol.StoredRunError, WeightsError), match=rf"{re.escape(weights.name)}.*delete"):
        read_back(tmp_path, skeleton)


@fault("labkit.protocol", "error")
def test_stored_weights_replaced_by_another_run_say_to_delete_the_run(tmp_path):
    record, weights, (_, skeleton) = store_one(tmp_path)
    torch.manual_seed(1)
    save_weights(torch.nn.Linear(3, 2), weights, half=False)  # a whole, valid file: only the checksum tells
    with pytest.raises((protocol.StoredRunError, WeightsError), match=rf"{re.escape(weights.name)}.*delete"):
        read_back(tmp_path, skeleton)


@fault("labkit.protocol", "handled")
def test_a_run_that_fails_while_training_stores_nothing_and_trains_again(tmp_path):
    make, skeleton = stored_run()

    def diverge():
        raise FloatingPointError("loss became nan")

    with pytest.raises(FloatingPointError):
        protocol.kept_model(tmp_path, {"arm": "x"}, diverge, skeleton)
    assert names(tmp_path) == []
    model, record = protocol.kept_model(tmp_path, {"arm": "x"}, make, skeleton)
    assert_same_weights(read_back(tmp_path, skeleton)[0], model)


@fault("labkit.protocol", "handled")
def test_kill_9_between_the_stored_weights_and_the_record_trains_the_run_again(tmp_path):
    child = run_child(f"""
        protocol.write_text_atomic = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        protocol.kept_model(Path({str(tmp_path)!r}), {{"arm": "x"}}, *stored_run())
    """, tmp_path)
    assert_killed(child)
    assert [p.suffix for p in tmp_path.iterdir()] == [".safetensors"]  # the weights, not marked finished
    make, skeleton = stored_run()
    calls = []
    model, record = protocol.kept_model(tmp_path, {"arm": "x"}, lambda: calls.append(1) or make(), skeleton)
    assert calls == [1] and record == make()[1]
    assert_same_weights(read_back(tmp_path, skeleton)[0], make()[0])


# --- labkit.results and labkit.history: results read back -----------------------------------------------------------


@fault("labkit.results", "handled")
def test_results_that_json_cannot_hold_keep_the_previous_results(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_QUICK", "0")
    path = save_results("kd", {"acc": 0.5}, folder=tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="Tensor is not JSON serializable"):
        save_results("kd", {"acc": torch.tensor(0.7)}, folder=tmp_path)
    assert path.read_bytes() == before and names(tmp_path) == ["kd.json"]


@fault("labkit.results", "handled")
def test_a_damaged_results_file_is_replaced_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_QUICK", "0")
    path = tmp_path / "kd.json"
    path.write_text('{"machine": {"cpu": "x86')  # a results file half written by an older, non-atomic writer
    save_results("kd", {"acc": 0.5}, folder=tmp_path)
    assert json.loads(path.read_text())["acc"] == 0.5 and names(tmp_path) == ["kd.json"]


@fault("labkit.history", "error")
def test_a_results_history_with_columns_of_different_lengths_is_refused():
    with pytest.raises(ValueError, match=r"test_acc.*2.*3"):
        History.from_dict({"epoch": [1, 2, 3], "test_acc": [0.5, 0.6]})


@fault("labkit.history", "error")
def test_a_history_csv_cut_mid_row_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,test_acc\n1,2.3,0.1\n2,2.1")
    with pytest.raises(ValueError, match=r"history\.csv.*line 3"):
        History.from_csv(path)


# --- labkit.train: checkpoints, kill -9 and a full disk mid-run -----------------------------------------------------


@fault("labkit.train", "error")
def test_a_bit_flipped_checkpoint_is_refused_on_resume(tmp_path):
    interrupted_train_run(tmp_path)
    flip_byte(tmp_path / "checkpoint.pt", (tmp_path / "checkpoint.pt").stat().st_size // 2)  # inside the payload
    with pytest.raises(ResumeError, match=r"checkpoint\.pt cannot be read \(DamagedFileError: .*delete it to train "
                                          r"from scratch"):
        train_run(tmp_path, resume=True)


@fault("labkit.train", "error")
def test_a_language_model_checkpoint_is_refused_on_resume(tmp_path):
    lm_run(tmp_path)
    with pytest.raises(ResumeError, match=r"checkpoint\.pt cannot be read .*delete it to train from scratch"):
        train_run(tmp_path, resume=True)


@fault("labkit.train", "handled")
def test_a_damaged_history_csv_is_written_again_from_the_checkpoint(tmp_path, reference):
    interrupted_train_run(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,lo")
    resumed(train_run, tmp_path, 5, 8)
    expected = untimed(History.from_csv(reference[1] / "history.csv"))
    assert untimed(History.from_csv(tmp_path / "history.csv")) == expected


@fault("labkit.train", "handled")
def test_kill_9_mid_training_resumes_to_the_uninterrupted_weights(tmp_path, reference):
    assert_killed(run_child(f"train_run(Path({str(tmp_path)!r}), on_step=kill_at(6))", tmp_path))
    assert load_checked(tmp_path / "checkpoint.pt")["step"] == 4  # the checkpoint of epoch 1
    assert_same_weights(resumed(train_run, tmp_path, 5, 8), reference[0])


@fault("labkit.train", "handled")
def test_kill_9_mid_distillation_resumes_to_the_uninterrupted_weights(tmp_path, isolated_cache):
    uninterrupted = distill_run(tmp_path / "a")
    assert_killed(run_child(f"distill_run(Path({str(tmp_path / 'b')!r}), on_step=kill_at(7))", tmp_path))
    assert load_checked(tmp_path / "b" / "checkpoint.pt")["step"] == 4
    assert_same_weights(resumed(distill_run, tmp_path / "b", 5, 8), uninterrupted)


@fault("labkit.train", "handled")
def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    # The second checkpoint's torch.save writes half the file, then the process is killed.
    child = run_child(f"""
        import io
        real_save, saved = torch.save, []

        def save_then_die(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):
                saved.append(f)
                if len(saved) == 2:
                    buffer = io.BytesIO()
                    real_save(obj, buffer)
                    Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = save_then_die
        train_run(Path({str(tmp_path)!r}))
    """, tmp_path)
    assert_killed(child)
    assert load_checked(tmp_path / "checkpoint.pt")["step"] == 4
    assert_same_weights(resumed(train_run, tmp_path, 5, 8), reference[0])


@fault("labkit.train", "handled")
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    interrupted_train_run(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.pt", "history.csv")}
    child = run_child(f"""
        fill_disk(1024)
        train_run(Path({str(tmp_path)!r}), resume=True)
    """, tmp_path)
    assert_disk_was_full(child)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert names(tmp_path) == ["checkpoint.pt", "history.csv"], "a temporary file was left behind"
    assert_same_weights(resumed(train_run, tmp_path, 5, 8), reference[0])


# --- labkit.lm: checkpoints of train_lm -----------------------------------------------------------------------------


@fault("labkit.lm", "handled")
def test_kill_9_mid_language_model_training_resumes_to_the_uninterrupted_weights(tmp_path):
    uninterrupted = lm_run(tmp_path / "a")
    assert_killed(run_child(f"lm_run(Path({str(tmp_path / 'b')!r}), on_step=kill_at(5))", tmp_path))
    assert load_checked(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    assert_same_weights(resumed(lm_run, tmp_path / "b", 4, 6), uninterrupted)


@fault("labkit.lm", "error")
def test_a_bit_flipped_language_model_checkpoint_is_refused_on_resume(tmp_path):
    lm_run(tmp_path)
    flip_byte(tmp_path / "checkpoint.pt", (tmp_path / "checkpoint.pt").stat().st_size // 2)
    with pytest.raises(ResumeError, match=r"checkpoint\.pt cannot be read \(DamagedFileError: .*delete it to train "
                                          r"from scratch"):
        lm_run(tmp_path, resume=True)
