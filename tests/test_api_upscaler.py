"""`Upscaler` as an app developer uses it: shared by threads, handed tensors of every layout and
device kind, and the types that come back."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import tiny_generator

from srfeat import Upscaler
from srfeat.errors import InvalidImageError, InvalidOptionError, NotAnImageError
from srfeat.evaluation import evaluate


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    torch.manual_seed(0)
    return Upscaler(tiny_generator(), device="cpu", tile=0)


def test_threads_sharing_one_upscaler_take_turns_and_get_the_results_of_sequential_calls() -> None:
    """Each call plans its tiles from the free memory and sets the model's band size: two calls at
    once each planned for all of it. The second thread's call must wait for the first's to end."""
    torch.manual_seed(0)
    first_started, release_first = threading.Event(), threading.Event()
    overlap: list[str] = []
    running: set[str] = set()

    def on_tile(done: int, total: int) -> None:
        name = threading.current_thread().name
        if done == 0:
            if running:
                overlap.append(f"{name} started while {running} ran")
            running.add(name)
        if name == "first" and done == 0:
            first_started.set()
            release_first.wait(timeout=10)
        if done == total:
            running.discard(name)

    generator = tiny_generator()
    upscaler = Upscaler(generator, device="cpu", tile=0, on_tile=on_tile)
    images = {"first": torch.rand(3, 12, 10), "second": torch.rand(3, 9, 14)}
    reference = Upscaler(generator, device="cpu", tile=0)
    expected = {name: reference(image) for name, image in images.items()}
    results: dict[str, torch.Tensor] = {}

    def work(name: str) -> None:
        results[name] = upscaler(images[name])

    first = threading.Thread(target=work, args=("first",), name="first")
    second = threading.Thread(target=work, args=("second",), name="second")
    first.start()
    assert first_started.wait(timeout=10)
    second.start()
    second.join(timeout=0.5)  # with no lock the second call runs (and finishes) meanwhile
    assert second.is_alive(), "the second thread's call ran while the first was in progress"
    release_first.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not overlap
    for name, image in expected.items():
        torch.testing.assert_close(results[name], image, rtol=0, atol=1e-6)


def test_a_meta_tensor_is_a_one_line_invalid_image_error(upscaler: Upscaler) -> None:
    """It was torch's RuntimeError 'Tensor.item() cannot be called on meta tensors'."""
    with pytest.raises(InvalidImageError, match="meta device"):
        upscaler(torch.empty(3, 8, 8, device="meta"))


def test_tensors_of_any_layout_give_the_result_of_a_plain_contiguous_one(upscaler: Upscaler) -> None:
    torch.manual_seed(1)
    batch = torch.rand(2, 3, 9, 7)
    expected = upscaler(batch)
    channels_last = upscaler(batch.to(memory_format=torch.channels_last))
    transposed = upscaler(batch.transpose(2, 3).contiguous().transpose(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warned about reading a tensor that requires grad
        with_grad = upscaler(batch.clone().requires_grad_(True))
    for result in (channels_last, transposed, with_grad):
        torch.testing.assert_close(result, expected, rtol=0, atol=0)
        assert not result.requires_grad and result.is_contiguous()


def test_numpy_views_with_negative_strides_read_as_their_copies(upscaler: Upscaler) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    view = pixels[::-1, ::-2]
    np.testing.assert_array_equal(upscaler(view), upscaler(view.copy()))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_masked_array_is_refused_saying_to_fill_it_or_pass_its_data(upscaler: Upscaler, dtype: type) -> None:
    """Its data was upscaled, the masked pixels with the rest, and a plain array came back without the mask."""
    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    pixels = pixels if dtype == np.uint8 else (pixels / 255).astype(dtype)
    hidden = np.zeros(pixels.shape, bool)
    hidden[2:4, 3:5] = True
    for image, count in ((np.ma.masked_array(pixels, mask=hidden), 12), (np.ma.masked_array(pixels[..., 0]), 0)):
        with pytest.raises(InvalidImageError) as refused:
            upscaler(image)
        assert str(refused.value) == (
            f"the array is a numpy masked array ({count} value(s) masked), and the upscaler does not read masks: "
            "fill the masked values first (array.filled(value)), or pass array.data if the mask means nothing"
        )
    with pytest.raises(InvalidImageError, match="numpy masked array"):
        upscaler.upscale_array(np.ma.masked_array(pixels, mask=hidden))


def test_a_masked_tensor_is_refused_saying_to_fill_it_or_pass_its_data(upscaler: Upscaler) -> None:
    """torch's MaskedTensor passed the tensor checks and failed inside with "Multiple dispatch failed"."""
    data = torch.rand(1, 3, 10, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "masked tensors are in prototype stage"
        masked = torch.masked.masked_tensor(data, data > 0.5)
        images = (masked, masked[0])
    for image in images:
        with pytest.raises(InvalidImageError, match=r"^the tensor is a torch MaskedTensor, .*\.get_data\(\) if the"):
            upscaler(image)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1), (1, 1)])
def test_one_pixel_wide_images_come_back_scaled_in_their_dtype(upscaler: Upscaler, shape: tuple[int, ...]) -> None:
    image = np.full(shape, 200, np.uint8)
    result = upscaler(image)
    assert result.dtype == np.uint8
    assert result.shape == (shape[0] * 4, shape[1] * 4, *shape[2:])


def test_a_list_of_images_says_to_call_once_per_image(upscaler: Upscaler) -> None:
    with pytest.raises(NotAnImageError, match="once per image"):
        upscaler([torch.rand(3, 8, 8), torch.rand(3, 4, 4)])  # pyright: ignore[reportArgumentType, reportCallIssue]


def test_a_generator_built_on_the_meta_device_is_an_option_error_before_anything_runs() -> None:
    """It was torch's RuntimeError 'Tensor.item() cannot be called on meta tensors'."""
    with torch.device("meta"):
        generator = tiny_generator()
    with pytest.raises(InvalidOptionError, match="meta device"):
        Upscaler(generator, device="cpu")


def test_an_outscale_output_too_big_for_memory_is_refused_before_the_network_runs(
    upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the network ran (minutes on a large photo), and then the resize was refused."""
    import srfeat.data.resize

    monkeypatch.setattr(srfeat.data.resize, "host_available_memory", lambda: 80 * 2**20)
    monkeypatch.setattr(upscaler, "upscale_rgb", lambda *args: pytest.fail("the network ran"))
    image = np.zeros((400, 400, 3), np.uint8)  # x16: 6400x6400x3 float32, 469 MiB
    with pytest.raises(InvalidImageError, match=r"output \(6400x6400, 0.5 GiB\) is larger than the free memory"):
        upscaler(image, outscale=16)


@pytest.mark.parametrize(("channels", "tta", "refused"), [(3, False, False), (3, True, True), (1, False, True)])
def test_the_memory_check_counts_the_buffers_made_on_the_way(
    monkeypatch: pytest.MonkeyPatch, channels: int, tta: bool, refused: bool
) -> None:
    """Only the output was counted: a self-ensemble (a pass beside its running sum) or a grey image
    (the network's RGB before the mix) whose output fitted passed the check, then failed to allocate."""
    from srfeat.errors import SRFeatError
    from srfeat.inference import tiling

    pixels = 256 * 256  # the result of a 64 x 64 image
    monkeypatch.setattr(tiling, "available_memory", lambda device: pixels * 3 * 5 + 1)  # the RGB output just fits
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=0, tta=tta)
    image = torch.rand(channels, 64, 64)
    if refused:
        with pytest.raises(SRFeatError, match="256x256 result needs about"):
            upscaler(image)
    else:
        assert upscaler(image).shape == (channels, 256, 256)


def test_an_image_too_big_for_memory_is_refused_before_its_pixels_are_converted(upscaler: Upscaler) -> None:
    """An array was converted to float32 first (4 bytes a value: a 30000x30000 RGB photo's 2.7 GB of
    uint8 became 10.8 GB, or numpy's MemoryError), and only then was its result found too big for
    memory. Both kinds are now refused in one line before any pixel is read or copied (these views
    of one repeated value hold no memory; their float32 copies would be 1 TB)."""
    from srfeat.errors import SRFeatError

    huge_array = np.broadcast_to(np.zeros(1, np.uint8), (300_000, 300_000, 3))
    huge_tensor = torch.zeros((), dtype=torch.float64).expand(3, 300_000, 300_000)
    for huge in (huge_array, huge_tensor, huge_array[..., 0]):
        with pytest.raises(SRFeatError) as caught:
            upscaler(huge)
        message = str(caught.value)
        assert "\n" not in message and "1200000x1200000 result needs about" in message, message


def test_a_state_dict_given_as_the_model_says_how_to_build_its_generator() -> None:
    """The message quoted the state dict's repr, tensors and all, over many lines."""
    with pytest.raises(InvalidOptionError, match=r"got OrderedDict: a state dict\? .*generator_from_state") as caught:
        Upscaler(tiny_generator().state_dict(), device="cpu")  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value)


def test_an_on_tile_that_cannot_be_called_is_an_option_error_before_anything_loads() -> None:
    """It was taken, and the first image failed at its first tile with "'int' object is not callable"."""
    with pytest.raises(InvalidOptionError, match="on_tile must be a function of \\(done, total\\) or None, got int"):
        Upscaler("no_such_model", device="cpu", on_tile=3)  # pyright: ignore[reportArgumentType]


def test_a_gpu_index_beyond_the_gpus_there_is_one_line_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only "is there a GPU at all" was checked: `cuda:1` on a one-GPU machine went on to load the model
    and failed in its first `.to` with CUDA's "invalid device ordinal"."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidOptionError, match=r"device cuda:1 requested but there are 1 CUDA GPU\(s\) \(cuda:0 to"):
        Upscaler("no_such_model", device="cuda:1")


def test_a_missing_gpu_names_the_python_argument_not_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Upscaler(device="cuda")` on a machine without one said "use --device cpu", a flag the caller
    never used (and then "(device='cpu')" besides); `evaluate` said the same."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = "device cuda requested but no CUDA GPU is available; use device='cpu'"
    with pytest.raises(InvalidOptionError) as upscaler_error:
        Upscaler("no_such_model", device="cuda")
    with pytest.raises(InvalidOptionError) as evaluate_error:
        evaluate(["bicubic"], [Path("photos")], metrics=["psnr"], device="cuda")
    assert str(upscaler_error.value) == str(evaluate_error.value) == missing


def test_an_array_whose_first_and_last_sides_could_be_channels_is_read_as_hwc_with_a_warning(
    upscaler: Upscaler, caplog: pytest.LogCaptureFixture
) -> None:
    """(3, 9, 4) is 3 rows of 9 RGBA pixels by the documented rule, and a channels-first RGB image 4
    pixels wide has that shape too: its result was a wrong picture (12x36x4) without a word."""
    pixels = np.random.default_rng(0).integers(0, 256, (3, 9, 4), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="srfeat"):
        result = upscaler(pixels)
    assert result.shape == (12, 36, 4)
    assert "read as HxWxC, 3 row(s) of 9 pixels with 4 channel(s)" in caplog.text
    assert "array.transpose(1, 2, 0)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="srfeat"):
        upscaler(pixels.transpose(1, 2, 0).copy())  # (9, 4, 3): nothing to doubt
        upscaler(torch.rand(3, 9, 4))  # a tensor is (C, H, W), as documented
    assert "read as HxWxC" not in caplog.text


def test_option_errors_name_the_python_argument_a_caller_gave() -> None:
    """Upscaler's own refusals said only which command-line flag to use (--backend, `srfeat blend`)."""
    with pytest.raises(InvalidOptionError, match=r"backend='onnxruntime'"):
        Upscaler("model.onnx", backend="torch", device="cpu")
    with pytest.raises(ValueError, match=r"blend_generators\(A, B, alpha\)"):
        Upscaler("mine.safetensors", strength=0.3, device="cpu")


def test_a_pil_image_whose_file_cannot_be_decoded_is_one_image_read_error(upscaler: Upscaler, tmp_path: Path) -> None:
    """Image.open is lazy: a truncated file failed inside the conversion with PIL's bare OSError ("image
    file is truncated"), and a closed image with PIL's ValueError, neither an SRFeatError."""
    from PIL import Image

    from srfeat.errors import ImageReadError

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"the PIL image \(.*photo.png\) cannot be decoded: image file is trunc"):
        upscaler(Image.open(path))
    closed = Image.open(tmp_path / "photo.png")
    closed.close()
    with pytest.raises(ImageReadError, match="cannot be decoded: Operation on closed image") as error:
        upscaler(closed)
    assert isinstance(error.value, OSError) and "\n" not in str(error.value)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_model_that_does_not_fit_on_its_device_is_one_line(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Moving the network to a GPU others had filled was a traceback through Module.to (torch's
    OutOfMemoryError; on the CPU, under `ulimit -v`, the allocator's RuntimeError)."""
    from srfeat.errors import ModelOutOfMemoryError
    from srfeat.inference import devices, fused

    def full(self: torch.nn.Module, *args: object, **kwargs: object) -> torch.nn.Module:
        if device == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        torch.empty(1 << 60, dtype=torch.uint8)  # the allocator's own refusal
        return self

    monkeypatch.setattr(fused.InferenceGenerator, "to", full)
    # a GPU that is there (this test only needs the name resolved)
    monkeypatch.setattr(devices, "resolve_device", lambda *_, **__: torch.device(device))
    monkeypatch.setattr("srfeat.inference.upscaler.resolve_device", lambda *_, **__: torch.device(device))
    with pytest.raises(ModelOutOfMemoryError) as refused:  # its advice apart: the web page says its own
        Upscaler(tiny_generator(), device=device)
    message = str(refused.value)
    assert message.startswith(f"out of memory on {device} loading the model"), message
    assert ("device='cpu'" in message) == (device == "cuda") and "--device" not in message, message


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_tensor_image_comes_back_contiguous(upscaler: Upscaler, channels: int, dtype: torch.dtype) -> None:
    """The README promises a new contiguous tensor; a (C, H, W) image's result was a view laid out
    height-width-channel, on which `result.view(...)` failed ("view size is not compatible")."""
    image = torch.rand(channels, 9, 7, dtype=dtype, generator=torch.Generator().manual_seed(channels))
    result = upscaler(image)
    assert result.is_contiguous() and result.dtype == dtype and result.shape == (channels, 36, 28)
    torch.testing.assert_close(result.view(-1), upscaler(image[None])[0].reshape(-1), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_a_nested_tensor_is_a_one_line_invalid_image_error(upscaler: Upscaler, layout: torch.layout) -> None:
    """It was torch's "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue."
    (a jagged one: "use tensor.to_dense()", which nested tensors do not have)."""
    images = torch.nested.nested_tensor([torch.rand(3, 8, 8), torch.rand(3, 8, 9)], layout=layout)
    with pytest.raises(InvalidImageError, match="got a nested one: call the upscaler once per image"):
        upscaler(images)


def test_a_batch_whose_results_do_not_fit_is_refused_before_its_first_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image's result was checked alone, and the results were held in a list and then stacked: a
    batch of many frames grew until the allocator or the OOM killer stopped it, after most of the work."""
    from srfeat.errors import SRFeatError
    from srfeat.inference import tiling

    tiles: list[int] = []
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=0, on_tile=lambda done, total: tiles.append(done))
    batch = torch.rand(5, 3, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = torch.stack([upscaler(image) for image in batch])
    tiles.clear()
    needed = 5 * 3 * 32 * 24 * 8  # five float64 results
    monkeypatch.setattr(tiling, "available_memory", lambda device: needed - 1)
    with pytest.raises(SRFeatError, match=r"^the batch's 5 results of 24x32 need about 0\.0 GB of memory on cpu "):
        upscaler(batch)
    assert tiles == []  # refused before the network ran
    monkeypatch.setattr(tiling, "available_memory", lambda device: needed)
    result = upscaler(batch)
    assert result.dtype == torch.float64 and result.is_contiguous()
    torch.testing.assert_close(result, expected, rtol=0, atol=0)
