"""`srfeat.weights.load_generator` / `save_generator` as a researcher calls them: paths of every
kind, names that would not load again, devices that are not there, precisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import tiny_generator
from weights_helpers import rezipped

from srfeat.errors import InvalidOptionError, SRFeatError, WeightsError
from srfeat.weights import load_generator, save_generator


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_paths_as_str_path_and_bytes_round_trip(tmp_path: Path) -> None:
    generator = tiny_generator()
    for path in (str(tmp_path / "a.safetensors"), tmp_path / "b.safetensors", bytes(tmp_path / "c.safetensors")):
        save_generator(generator, path)
        assert _same_weights(load_generator(path), generator)


def test_a_tilde_is_expanded_on_saving_as_on_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving wrote a folder literally named `~` in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    save_generator(tiny_generator(), "~/g.safetensors")
    assert (tmp_path / "home" / "g.safetensors").is_file()
    assert not (tmp_path / "~").exists()
    assert isinstance(load_generator("~/g.safetensors"), torch.nn.Module)


def test_saving_to_a_folder_is_one_line_and_leaves_no_temporary(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    with pytest.raises(WeightsError, match="is a folder"):
        save_generator(tiny_generator(), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.parametrize("name", ["model.pt", "model", "model.safetensor"])
def test_a_name_load_generator_would_refuse_is_refused_on_saving(tmp_path: Path, name: str) -> None:
    """It wrote safetensors under the name, and load_generator then said 'name it .safetensors'."""
    with pytest.raises(WeightsError, match=r"must end in \.safetensors"):
        save_generator(tiny_generator(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_an_upper_case_suffix_is_read_and_written_as_the_lower_case_one(tmp_path: Path) -> None:
    """MODEL.SAFETENSORS was told "name it .safetensors" (the check was case-sensitive); saving refused it."""
    generator = tiny_generator()
    for name in ("MODEL.SAFETENSORS", "model.SafeTensors"):
        save_generator(generator, tmp_path / name)
        assert _same_weights(load_generator(tmp_path / name), generator)
    torch.save(generator.state_dict(), tmp_path / "x.PT")
    assert _same_weights(load_generator(tmp_path / "x.PT"), generator)
    (tmp_path / "SAFE.PT").write_bytes((tmp_path / "MODEL.SAFETENSORS").read_bytes())  # misnamed, any case
    with pytest.raises(WeightsError, match=r"SAFE\.PT is a safetensors file: name it \.safetensors"):
        load_generator(tmp_path / "SAFE.PT")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_every_stored_precision_loads_as_float32_within_its_rounding(tmp_path: Path, dtype: torch.dtype) -> None:
    generator = tiny_generator()
    save_generator(generator, tmp_path / "g.safetensors", dtype=dtype)
    loaded = load_generator(tmp_path / "g.safetensors")
    for (key, original), value in zip(generator.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert value.dtype == original.dtype, key
        if original.is_floating_point():
            assert torch.equal(value, original.to(dtype).float()), key


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, "fp16"])
def test_a_precision_that_would_not_load_is_refused_before_writing(tmp_path: Path, dtype: object) -> None:
    with pytest.raises(InvalidOptionError, match="float32, torch.float16 or torch.bfloat16"):
        save_generator(tiny_generator(), tmp_path / "g.safetensors", dtype=dtype)  # pyright: ignore[reportArgumentType]
    assert not (tmp_path / "g.safetensors").exists()


def test_saving_something_that_is_not_a_generator_says_so() -> None:
    with pytest.raises(InvalidOptionError, match="SRFeatGenerator, got Linear"):
        save_generator(torch.nn.Linear(2, 2), "unused.safetensors")  # pyright: ignore[reportArgumentType]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_loading_onto_a_missing_gpu_is_one_line_before_reading(model_path: Path, device: object) -> None:
    """It was torch's AssertionError 'Torch not compiled with CUDA enabled', after reading the file."""
    with pytest.raises(InvalidOptionError, match="no CUDA GPU is available") as caught:
        load_generator(model_path, device=device)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value)


def test_an_unknown_device_name_is_one_line(model_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="unknown device 'gpu'"):
        load_generator(model_path, device="gpu")


@pytest.mark.parametrize("spec", [None, 3, ""])
def test_a_spec_that_is_not_a_path_is_an_option_error_not_a_missing_file(spec: object) -> None:
    with pytest.raises(InvalidOptionError):
        load_generator(spec)  # pyright: ignore[reportArgumentType]


def test_the_weights_errors_are_value_errors_and_srfeat_errors() -> None:
    assert issubclass(WeightsError, ValueError) and issubclass(WeightsError, SRFeatError)
    assert issubclass(InvalidOptionError, ValueError) and issubclass(InvalidOptionError, SRFeatError)


@pytest.mark.parametrize("alpha", [True, "0.5"])
def test_a_blend_weight_that_is_not_a_number_is_refused(model_path: Path, alpha: object) -> None:
    """`float(True)` is 1.0: `Upscaler(strength=True)` and `blend_generators(a, b, True)` silently
    gave the second model, and "0.5" passed where a number was meant."""
    from srfeat import Upscaler
    from srfeat.weights.blend import blend_generators

    with pytest.raises(WeightsError, match="must be a number between 0 and 1"):
        blend_generators(model_path, model_path, alpha)  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match="strength must be a number"):  # an option of the wrong kind
        Upscaler(device="cpu", strength=alpha)  # pyright: ignore[reportArgumentType]


def test_a_misspelt_bundled_name_gets_the_name_it_resembles() -> None:
    with pytest.raises(WeightsError, match="did you mean the bundled 'default'"):
        load_generator("defualt")
    with pytest.raises(WeightsError, match="not found") as caught:
        load_generator("no_such_model_anywhere")
    assert "did you mean" not in str(caught.value)


def test_saving_without_replace_over_an_existing_file_says_it_exists_before_writing(tmp_path: Path) -> None:
    """It serialised and wrote the whole file, then said the file "appeared while it was being
    written (another program?)" and to pass --overwrite: a command-line option, and not what happened."""
    target = tmp_path / "g.safetensors"
    target.write_bytes(b"mine")
    with pytest.raises(SRFeatError, match=r"g\.safetensors exists; it is kept: .*pass replace=True") as caught:
        save_generator(tiny_generator(), target, replace=False)
    assert "appeared" not in str(caught.value) and isinstance(caught.value, FileExistsError)
    assert target.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_an_existing_file_is_refused_naming_the_callers_option(tmp_path: Path) -> None:
    """The refusal of a file that was there said "pass replace=True" to `srfeat blend` and `convert`
    (`command_line=True`) too; a file that appears while it is written: tests/test_faults.py."""
    from srfeat.files import OutputExistsError

    target = tmp_path / "g.safetensors"
    target.write_bytes(b"mine")
    for command_line, option in ((False, "replace=True"), (True, "--overwrite")):
        with pytest.raises(OutputExistsError) as raised:
            save_generator(tiny_generator(), target, replace=False, command_line=command_line)
        assert str(raised.value) == f"{target} exists; it is kept: remove it, or pass {option} to replace it"
    assert target.read_bytes() == b"mine"


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the error on a machine without MPS")
def test_a_device_this_pytorch_lacks_is_one_line_before_reading(tmp_path: Path) -> None:
    """`device="mps"` (code from a Mac) read the file, then failed in `.to` with torch's RuntimeError."""
    missing = tmp_path / "not_read.safetensors"  # never opened: the device is refused first
    with pytest.raises(InvalidOptionError, match="device mps is not available in this PyTorch; use cpu"):
        load_generator(missing, device="mps")


@pytest.mark.parametrize(
    ("spec", "bundled"), [("GAN", "gan"), ("Default", "default"), ("default.safetensors", "default")]
)
def test_a_bundled_name_in_capitals_or_with_its_suffix_gets_the_name(spec: str, bundled: str) -> None:
    with pytest.raises(WeightsError, match=f"did you mean the bundled '{bundled}'"):
        load_generator(spec)


def test_a_state_dict_that_is_not_names_to_tensors_is_a_weights_error() -> None:
    """`generator_from_state` raised AttributeError ('int' object has no attribute 'shape') from inside."""
    from srfeat.weights import generator_from_state

    state = tiny_generator().state_dict()
    with pytest.raises(WeightsError, match=r"training state: give its generator entry, state\['generator'\]"):
        # a training state for a state dict, on purpose
        generator_from_state({"generator": state, "step": 10})  # pyright: ignore[reportArgumentType]
    with pytest.raises(WeightsError, match="head.weight is not a tensor"):
        # a number for a tensor, on purpose
        generator_from_state({**state, "head.weight": 1.0})  # pyright: ignore[reportArgumentType]
    with pytest.raises(WeightsError, match="expected a state dict"):
        generator_from_state(list(state.items()))  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda t: t.to_sparse(), "head.bias is a sparse coo tensor, where a dense one is expected"),
        (lambda t: torch.empty_like(t, device="meta"), "head.bias is a tensor of the meta device, which holds a shape"),
    ],
    ids=["sparse", "meta"],
)
def test_a_state_dict_of_a_sparse_or_meta_tensor_is_a_weights_error(make, problem: str) -> None:
    """They were torch's NotImplementedError (a sparse tensor's dispatcher paragraph) and RuntimeError ("Tensor.item()
    cannot be called on meta tensors") from inside the weights' check."""
    from srfeat.weights import generator_from_state

    state = tiny_generator().state_dict()
    with pytest.raises(WeightsError, match=f"^state dict: {problem}"):
        generator_from_state({**state, "head.bias": make(state["head.bias"])})


def test_generators_given_where_paths_go_are_one_line_errors() -> None:
    """The message quoted the module's repr: its layers, forty lines."""
    from srfeat.weights.blend import blend_generators

    generator = tiny_generator()
    with pytest.raises(InvalidOptionError, match="a network already loaded") as caught:
        blend_generators(generator, generator, 0.5)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value)
    with pytest.raises(WeightsError) as caught:
        blend_generators("default", "gan", np.full((3, 3), 0.5))  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value)


def test_a_module_load_generator_could_not_read_back_is_not_saved(tmp_path: Path) -> None:
    """An Upscaler's folded model has `scale`, `num_features` and `num_blocks` too: it was saved, and the
    file was then refused by load_generator ("not an SRFeat generator")."""
    from srfeat import Upscaler

    folded = Upscaler(tiny_generator(), device="cpu").model
    with pytest.raises(WeightsError, match="not saving .*load_generator could not read it back: InferenceGenerator"):
        save_generator(folded, tmp_path / "folded.safetensors")  # pyright: ignore[reportArgumentType]
    assert list(tmp_path.iterdir()) == []


def test_a_pt_whose_tensor_records_are_cut_short_or_compressed_is_refused_not_read_from_the_next(
    tmp_path: Path,
) -> None:
    """torch's memory-mapped reader took a tensor's bytes from where its record starts without checking
    the record's length: a .pt with a record cut short (kept in the middle of the archive) loaded, its
    weights read from the records after it (here refused as "diverged", NaN), and a re-zipped (deflated)
    one read compressed bytes as weights. Refused, each, without inflating anything."""
    import zipfile

    generator = tiny_generator()
    torch.save(generator.state_dict(), tmp_path / "whole.pt")
    with zipfile.ZipFile(tmp_path / "whole.pt") as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
    middle = max(records[:-1], key=lambda info: info.file_size)  # not the last: its bytes ran into the next
    assert middle.file_size > 64
    rezipped(tmp_path / "whole.pt", tmp_path / "cut.pt", {middle.filename: b"\0" * 16})
    with pytest.raises(
        WeightsError, match=rf"cut\.pt: damaged, .*\(a tensor of {middle.file_size:,} bytes has no record"
    ):
        load_generator(tmp_path / "cut.pt")
    rezipped(tmp_path / "whole.pt", tmp_path / "deflated.pt", {}, deflate=True)
    with pytest.raises(WeightsError, match=r"deflated\.pt holds its tensors compressed .*: save the generator's"):
        load_generator(tmp_path / "deflated.pt")
    assert _same_weights(load_generator(tmp_path / "whole.pt"), generator)
    state = torch.load(tmp_path / "whole.pt", weights_only=True)  # a training state's generator entry
    torch.save({"generator": state, "optimizers": {"generator": {"m": torch.zeros(5)}}}, tmp_path / "state.pt")
    assert _same_weights(load_generator(tmp_path / "state.pt"), generator)


def test_a_1_mb_pt_that_inflates_to_a_gigabyte_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """A tensor record deflated from 1 GB of zeros: torch's unmapped reader inflates each record before it
    checks its size, so reading the file unmapped (to have torch check the records) took 1 GB."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed: the checkout's
    from benchmarks import hostile_checkpoints

    torch.save(tiny_generator().state_dict(), tmp_path / "whole.pt")
    bomb = hostile_checkpoints.deflated_bomb(tmp_path / "whole.pt", tmp_path / "bomb.pt", 1 << 30)
    assert bomb.stat().st_size < 8 << 20
    peak_mb, message = hostile_checkpoints.measure(bomb)
    assert "bomb.pt holds its tensors compressed" in message, message
    assert peak_mb < 768, f"peak memory {peak_mb} MB while refusing a 1 GB zip bomb"  # loading a generator: 250


def test_an_old_format_pt_whose_tensor_size_was_edited_names_it_without_torchs_c_format(tmp_path: Path) -> None:
    """torch's message for it printed its C format: "expected %ld got %ld54975581388862208"."""
    import struct

    state = tiny_generator().state_dict()
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    head = state["head.weight"]
    data = bytearray((tmp_path / "old.pt").read_bytes())
    at = data.find(struct.pack("<q", head.numel()) + head.numpy().tobytes()[:16])  # its size, then its values
    assert at > 0
    data[at : at + 8] = struct.pack("<q", 2**38)
    (tmp_path / "old.pt").write_bytes(bytes(data))
    with pytest.raises(
        WeightsError,
        match=r"\(a tensor's stored size is not the size its shape needs\); download or copy it again, or give another",
    ):
        load_generator(tmp_path / "old.pt")


def test_an_old_format_pt_cut_short_is_called_incomplete(tmp_path: Path) -> None:
    """torch's words were "unexpected EOF, expected 1048765 more bytes", with no word of what to do."""
    torch.save(tiny_generator().state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    whole = (tmp_path / "old.pt").read_bytes()
    (tmp_path / "old.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WeightsError) as caught:
        load_generator(tmp_path / "old.pt")
    assert str(caught.value) == (
        f"{tmp_path / 'old.pt'} is not a complete checkpoint: it ends before its tensors' data does (a download or "
        "copy that did not finish?); download or copy it again, or give another checkpoint"
    )


@pytest.mark.parametrize(
    ("dtype", "named"),
    [(torch.bool, "bool"), (torch.complex64, "complex64"), (torch.float32, "floating point")],
)
def test_a_batchnorm_count_that_is_not_an_integer_is_refused_by_each_reader(
    tmp_path: Path, dtype: torch.dtype, named: str
) -> None:
    """A bool or complex `num_batches_tracked` loaded, cast to int64 without a word (complex with torch's warning)."""
    from safetensors.torch import save_file

    from srfeat.weights import generator_from_state

    state = tiny_generator().state_dict()
    key = next(name for name in state if name.endswith("num_batches_tracked"))
    state[key] = torch.ones((), dtype=dtype)
    expected = rf"{key} has the wrong dtype \(expected an integer, got {named}\)"
    save_file(state, tmp_path / "g.safetensors")
    torch.save(state, tmp_path / "g.pt")
    for path in (tmp_path / "g.safetensors", tmp_path / "g.pt"):
        with pytest.raises(WeightsError, match=expected):
            load_generator(path)
    with pytest.raises(WeightsError, match=expected):
        generator_from_state(state)


def test_an_integer_count_of_any_width_loads_as_before(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    generator = tiny_generator()
    state = {
        key: value.int() if key.endswith("num_batches_tracked") else value
        for key, value in generator.state_dict().items()
    }
    save_file(state, tmp_path / "g.safetensors")
    assert _same_weights(load_generator(tmp_path / "g.safetensors"), generator)
