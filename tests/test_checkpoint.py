"""Training state and generator files: atomic writes survive a kill, loads are safe, random states
round-trip, and a file that is not what its name says is called what it is."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import srfeat_cli
from weights_helpers import damage_first_tensor_record, pickle_cut_to, pickle_length

from srfeat.errors import WeightsError
from srfeat.training import checkpoint
from srfeat.weights import load_generator
from srfeat.weights.file_kinds import torch_load_quietly

REPO = Path(__file__).resolve().parents[1]

# Saves a first state, then starts a second save whose writing stalls half-way (a slow
# disk), announcing it on stdout; the test kills the process with SIGKILL at that point.
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from srfeat.training import checkpoint

    path = sys.argv[1]
    checkpoint.save_state({"step": 1, "weights": torch.ones(1000)}, path)
    real_save = torch.save

    def stalling_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\\x03\\x04 partial zip header")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)

    torch.save = stalling_save
    checkpoint.save_state({"step": 2, "weights": torch.zeros(1000)}, path)
    """
)


def test_process_killed_while_saving_leaves_the_previous_state_loadable(tmp_path) -> None:
    path = tmp_path / checkpoint.STATE_FILE
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".*.tmp")), "the interrupted write should have been going to a temporary file"
    state = checkpoint.load_state(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(1000))


def test_truncated_or_foreign_state_fails_clearly(tmp_path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(WeightsError, match="cannot read training state"):
        checkpoint.load_state(broken)
    foreign = tmp_path / "foreign.pt"
    torch.save({"step": 3}, foreign)
    with pytest.raises(WeightsError, match="not an srfeat training state"):
        checkpoint.load_state(foreign)
    with pytest.raises(WeightsError, match="no training state"):
        checkpoint.load_state(tmp_path / "absent.pt")


def test_a_state_that_inflates_to_gigabytes_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """A tensor record of deflated zeros: torch inflated it whole before comparing its size with the
    tensor's (for 2 GB made 2 MB: 2.3 GB at peak, then "record size (2147483648 bytes) does not match")."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed: the checkout's
    from benchmarks.hostile_checkpoints import deflated_bomb

    torch.save({"format": checkpoint.STATE_FORMAT, "step": 3, "weights": torch.ones(4)}, tmp_path / "whole.pt")
    bomb = deflated_bomb(tmp_path / "whole.pt", tmp_path / "state.pt", 256 << 20)
    with pytest.raises(WeightsError, match=r"refusing training state .*state\.pt: it holds its tensors compressed"):
        checkpoint.load_state(bomb)


class Payload:
    """Any object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_states_load_without_running_pickled_code(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.STATE_FORMAT, "payload": Payload()}, path)
    with pytest.raises(WeightsError):
        checkpoint.load_state(path)


def test_random_states_round_trip_through_a_saved_state(tmp_path) -> None:
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    _ = random.random(), np.random.rand(), torch.rand(1)  # move away from the seeded states
    checkpoint.save_state({"rng": checkpoint.capture_rng_states()}, tmp_path / "s.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    checkpoint.restore_rng_states(checkpoint.load_state(tmp_path / "s.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_atomic_save_replaces_the_file_in_one_step(tmp_path) -> None:
    path = tmp_path / "x.pt"
    checkpoint.atomic_torch_save({"a": torch.arange(3)}, path)
    before = time.time()
    checkpoint.atomic_torch_save({"a": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(4))
    assert not list(tmp_path.glob(".*.tmp")) and path.stat().st_mtime >= before - 1


# ----------------------------------------------------------------------------- files that are not weights


def png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def protocol4_pickle() -> bytes:
    import pickle

    return pickle.dumps({"head.weight": Payload()}, protocol=4)


@pytest.fixture
def wrong_files(tmp_path: Path, model_path: Path) -> dict[str, str]:
    """Files people give as --model that are not SRFeat weights (or are, under the wrong name),
    each with what its refusal must say."""
    from safetensors.torch import load_file

    state = load_file(str(model_path))
    torch.save(state, tmp_path / "real.pt")
    (tmp_path / "image.pt").write_bytes(png_bytes())
    (tmp_path / "notes.pt").write_text("hello world\n")
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    (tmp_path / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "torch_zip.safetensors").write_bytes((tmp_path / "real.pt").read_bytes())
    (tmp_path / "safetensors.pt").write_bytes(model_path.read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(model_path.read_bytes()[:64])  # a copy that stopped early
    # a header of the right length that is not JSON, and a file cut after its header: safetensors' own words
    # ("Error while deserializing header: ...") were shown
    real = model_path.read_bytes()
    header_length = int.from_bytes(real[:8], "little")
    garbled = real[:9] + b"#" * (header_length - 1) + real[8 + header_length :]
    (tmp_path / "garbled.safetensors").write_bytes(garbled)
    (tmp_path / "short.safetensors").write_bytes(real[: len(real) - 100])
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "plain_pickle.pt").write_bytes(protocol4_pickle())
    torch.save({"head.weight": Payload()}, tmp_path / "protocol4.pt", pickle_protocol=4)
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    real = (tmp_path / "real.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(real[: len(real) // 2])  # a download that stopped: "[Errno 22] Invalid argument"
    header = b'{"head.weight": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}}'  # went on with 20 dtypes
    (tmp_path / "dtype.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0")
    for name in ("MODEL.INDEX", "model.ckpt.data-00000-of-00001"):  # was "of an unknown format"
        (tmp_path / name).write_bytes(bytes(range(64)))
    return {
        "image.pt": "is a PNG image, not generator weights",
        "notes.pt": "is a text file (it begins 'hello world'), not generator weights",
        "page.safetensors": "is an HTML page",
        "lfs.safetensors": "is a Git LFS pointer, not generator weights: fetch the file it stands for (git lfs pull)",
        "empty.pt": "is empty (0 bytes)",
        "torch_zip.safetensors": "is a PyTorch checkpoint (a zip archive), not safetensors: name it .pt",
        "safetensors.pt": "is a safetensors file: name it .safetensors",
        "cut.safetensors": "is a damaged safetensors file (its header runs past the end)",
        "a_folder": "a_folder is a folder",
        "plain_pickle.pt": "refusing",
        "protocol4.pt": "instructions torch's safe loader does not read",
        "weights.npz": "NumPy .npz archive, not generator weights: the authors' weights? srfeat convert",
        "cut.pt": "cut.pt is not a complete checkpoint: it is a zip archive cut short or damaged (a checkpoint whose "
        "download or copy did not finish?); download or copy it again, or give another checkpoint",
        "dtype.safetensors": "dtype.safetensors: its header names a tensor type safetensors does not "
        "know (Q8): damaged, or saved by a newer safetensors; download or copy it again, or give another checkpoint",
        "garbled.safetensors": "garbled.safetensors: its header is damaged or it is not a safetensors "
        "file; download or copy it again, or give another checkpoint",
        "short.safetensors": "short.safetensors: its data is not the size its header says (cut short, or "
        "with bytes added); download or copy it again, or give another checkpoint",
        "MODEL.INDEX": "is (part of) a TensorFlow checkpoint, not generator weights: srfeat convert",
        "model.ckpt.data-00000-of-00001": "is (part of) a TensorFlow checkpoint, not generator weights: srfeat convert",
    }


def test_a_file_that_is_not_generator_weights_is_called_what_it_is(tmp_path: Path, wrong_files: dict[str, str]) -> None:
    """Each refusal is one line that says what the file is; none calls a PNG or a text file a
    pickle, none says "not found" for a folder, and torch's pickle-protocol warning is not shown."""
    for name, expected in wrong_files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's "Detected pickle protocol 4" UserWarning would raise
            with pytest.raises(WeightsError) as caught:
                load_generator(tmp_path / name)
        message = str(caught.value)
        assert "\n" not in message and expected in message, (name, message)
        assert "weights_only" not in message and "not found" not in message, (name, message)
        assert "deserializing" not in message, (name, message)
        if name not in ("plain_pickle.pt", "protocol4.pt"):
            assert "pickle" not in message, (name, message)


def test_loading_waits_while_another_thread_has_changed_the_warning_filters(tmp_path: Path) -> None:
    """`warnings.catch_warnings` saves and restores process-wide filters: a load that changed them while
    the web app's request thread reads an image would restore the other thread's state wrongly. So a
    load takes the lock the image readers hold, and waits for it."""
    from srfeat.library_warnings import WARNINGS_LOCK

    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    loaded = threading.Event()

    def load() -> None:
        torch_load_quietly(path)
        loaded.set()

    with WARNINGS_LOCK:  # what a reading thread holds while its filters are changed
        loader = threading.Thread(target=load)
        loader.start()
        assert not loaded.wait(1.0), "the load changed the warning filters while another thread held them"
    assert loaded.wait(30)
    loader.join()


def test_the_rename_a_refusal_asks_for_loads(tmp_path: Path, wrong_files: dict[str, str]) -> None:
    renamed = (tmp_path / "torch_zip.safetensors").rename(tmp_path / "torch_zip.pt")
    (tmp_path / "safetensors.pt").rename(tmp_path / "renamed.safetensors")
    first, second = load_generator(renamed), load_generator(tmp_path / "renamed.safetensors")
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_refusals_of_wrong_files_through_the_cli_are_one_line(tmp_path: Path, wrong_files: dict[str, str]) -> None:
    """As a user meets them: `srfeat upscale --model X` prints one line, no warning before it."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    for name in ("plain_pickle.pt", "protocol4.pt", "image.pt", "a_folder", "cut.pt", "garbled.safetensors"):
        result = srfeat_cli("upscale", "in.png", "-o", "out/", "--model", name, cwd=tmp_path, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and wrong_files[name] in lines[0], result.stderr
        assert not (tmp_path / "out").exists()


def test_a_training_state_that_is_not_one_is_called_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "image.pt").write_bytes(png_bytes())
    (tmp_path / "notes.pt").write_text("hello world\n")
    (tmp_path / "plain.pt").write_bytes(protocol4_pickle())
    torch.save({"format": checkpoint.STATE_FORMAT, "x": Payload()}, tmp_path / "protocol4.pt", pickle_protocol=4)
    for name, expected in [
        ("image.pt", "is a PNG image, not a training state"),
        ("notes.pt", "is a text file"),
        ("plain.pt", "Python pickle (protocol 4) that torch.save did not write, not a training state"),
        ("protocol4.pt", "refusing training state"),
        (".", "is a folder"),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(WeightsError) as caught:
                checkpoint.load_state(tmp_path / name)
        message = str(caught.value)
        assert "\n" not in message and expected in message and "weights_only" not in message, (name, message)


def test_a_training_state_with_a_damaged_record_says_so_in_a_line_of_its_own(tmp_path: Path) -> None:
    """It passed on torch's paragraph: "(RuntimeError: PytorchStreamReader failed reading file data/0: invalid
    header or archive is corrupted. This is an internal miniz error. If you are seeing this error, ...)"."""
    torch.save({"format": checkpoint.STATE_FORMAT, "weights": torch.zeros(1000)}, tmp_path / "whole.pt")
    damaged = damage_first_tensor_record(tmp_path / "whole.pt", tmp_path / "state.pt")
    with pytest.raises(WeightsError) as caught:
        checkpoint.load_state(damaged)
    assert str(caught.value) == (
        f"cannot read training state {damaged}: its zip archive is cut short or damaged; copy it again if it is a "
        "copy, or start a new run folder with train.init_generator=<the run's generator_latest.safetensors>"
    )


def test_a_training_state_whose_pickle_is_cut_short_says_so(tmp_path: Path) -> None:
    """A data.pkl cut inside a global's name was refused as "it holds pickled Python objects ... it was not written
    by srfeat train" (torch's safe unpickler read the name without its newline), elsewhere as "cut short or damaged
    (EOFError)", "(IndexError: index out of range)" or "(unpack requires a buffer of 4 bytes)"."""
    torch.save({"format": checkpoint.STATE_FORMAT, "step": 3, "weights": torch.zeros(10)}, tmp_path / "whole.pt")
    for length in range(pickle_length(tmp_path / "whole.pt")):
        cut = pickle_cut_to(tmp_path / "whole.pt", tmp_path / "state.pt", length)
        with pytest.raises(WeightsError) as caught:
            checkpoint.load_state(cut)
        assert str(caught.value).startswith(
            f"cannot read training state {cut}: its pickled contents are cut short; copy it again"
        ), (length, caught.value)


def test_gpu_random_states_of_another_gpu_count_are_named_not_skipped_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A run saved on 1 GPU and resumed on a machine with 2 cannot repeat its steps exactly; before,
    nothing said so."""
    states = {**checkpoint.capture_rng_states(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda _: pytest.fail("restored 1 state on 2 GPUs"))
    with caplog.at_level("WARNING", logger="srfeat.training.checkpoint"):
        checkpoint.restore_rng_states(states)
    expected = "the run was saved with 1 GPU(s) and this machine has 2: their random states are not restored, "
    assert caplog.messages == [expected + "so the resumed steps will not repeat the original run's exactly"]
