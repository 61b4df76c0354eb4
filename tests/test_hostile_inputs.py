"""The README's promises under bad input: no silent wrong result, no traceback, nothing left behind.

Each test reproduces one case of issue #12 the way a user meets it: the CLI as a subprocess,
the Python API with the values a user could pass.
"""

from __future__ import annotations

import codecs
import errno
import io
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from cli_helpers import CHILD_ENV, REPO, Terminal, one_error_line, run_child, srfeat_cli, start_piped, with_hangup
from PIL import Image, features
from safetensors.torch import load_file, save_file

from srfeat.archs.generator import SRFeatGenerator
from srfeat.cli import main
from srfeat.data.io import read_raw_image, write_image
from srfeat.errors import InvalidImageError, InvalidOptionError, SRFeatError, WeightsError
from srfeat.inference import Upscaler
from srfeat.weights import load_generator

samples = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def upscaler(model_path: Path) -> Upscaler:
    return Upscaler(model_path, device="cpu", tile=0)


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def exploding_generator() -> SRFeatGenerator:
    """Finite weights (1e5 each) whose output overflows float32: what a diverging run makes."""
    generator = SRFeatGenerator(num_features=8, num_blocks=2)
    with torch.no_grad():
        for tensor in generator.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(1e5)
    return generator


# ----------------------------------------------------------------------------- silent wrong results


def test_generator_with_non_finite_weights_fails_to_load_in_one_line(tmp_path: Path) -> None:
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["body.1.conv2.weight"][0, 0, 0, 0] = float("nan")
    state["tail.bias"][:] = 1e30  # what optim.lr=1e30 leaves: finite but exploded
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "diverged.safetensors"))
    with pytest.raises(WeightsError) as caught:
        load_generator(tmp_path / "diverged.safetensors")
    message = str(caught.value)
    assert "\n" not in message and "body.1.conv2.weight" in message and "not finite" in message, message


def test_an_output_that_is_not_finite_fails_that_file(tmp_path: Path, model_path: Path) -> None:
    save_file(
        {k: v.contiguous() for k, v in exploding_generator().state_dict().items()}, str(tmp_path / "x.safetensors")
    )
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "a.png")
    child = srfeat_cli("upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--model", tmp_path / "x.safetensors")
    assert child.returncode == 1 and "Traceback" not in child.stderr
    lines = [line for line in child.stderr.splitlines() if "a.png" in line]  # and the summary "1 of 1 failed"
    assert len(lines) == 1 and "not finite" in lines[0], child.stderr
    assert not (tmp_path / "out" / "a.png").exists()


def test_non_finite_input_values_are_refused_and_counted(upscaler: Upscaler) -> None:
    array = np.full((12, 10, 3), 0.5, dtype=np.float32)
    array[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"\b1 value.* not finite"):
        upscaler(array)
    tensor = torch.full((2, 3, 8, 8), 0.5)
    tensor[1, :, 0, :2] = float("inf")
    with pytest.raises(ValueError, match=r"\b6 value.* not finite"):
        upscaler(tensor)


# ----------------------------------------------------------------------------- checkpoints


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path: Path) -> None:
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["upsampler.0.conv.weight"] = torch.zeros(32, 4, 3, 3)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsError) as caught:
        load_generator(tmp_path / "wrong.safetensors")
    message = str(caught.value)
    assert "upsampler.0.conv.weight" in message and "(32, 4, 3, 3)" in message and "(32, 8, 3, 3)" in message, message


def test_negative_batchnorm_variances_are_refused_on_loading_naming_the_file(tmp_path: Path) -> None:
    """A variance below 0 made BatchNorm's 1/sqrt(var + eps) NaN: `blend` wrote such a file, and `upscale` and
    `eval` refused it only after folding, in a line that named no file ("the model's weights overflow float32")."""
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["body.1.bn2.running_var"][:3] = -1.0
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "edited.safetensors"))
    image = tmp_path / "in.png"
    Image.new("RGB", (12, 10), (90, 120, 150)).save(image)
    for args in (
        ("upscale", image, "-o", tmp_path / "out.png", "--model", tmp_path / "edited.safetensors", "--device", "cpu"),
        ("blend", tmp_path / "edited.safetensors", "default", "--alpha", "0.5", "-o", tmp_path / "blend.safetensors"),
    ):
        line = one_error_line(srfeat_cli(*args))
        assert "edited.safetensors" in line and "body.1.bn2.running_var" in line and "negative" in line, line
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "blend.safetensors").exists()


def test_a_tensor_named_with_and_without_the_ddp_prefix_is_refused(tmp_path: Path) -> None:
    """`head.weight` beside `module.head.weight` (DDP's prefix) loaded one of the two, the other dropped unread."""
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["module.head.weight"] = state["head.weight"] * 2
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "both.safetensors"))
    torch.save(state, tmp_path / "both.pt")
    other = tmp_path / "other.safetensors"  # of the same architecture: the old code blended and wrote the file
    save_file(
        {k: v.contiguous() for k, v in SRFeatGenerator(num_features=8, num_blocks=2).state_dict().items()}, str(other)
    )
    for name in ("both.safetensors", "both.pt"):
        line = one_error_line(
            srfeat_cli("blend", tmp_path / name, other, "--alpha", "0", "-o", tmp_path / "o.safetensors")
        )
        assert f"{name} holds head.weight twice" in line, line
    assert not (tmp_path / "o.safetensors").exists()


def test_a_head_of_no_features_is_named_with_the_file(tmp_path: Path) -> None:
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["head.weight"] = torch.zeros(0, 3, 9, 9)  # was "num_features must be at least 1, got 0": which file?
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "hollow.safetensors"))
    with pytest.raises(WeightsError) as caught:
        load_generator(tmp_path / "hollow.safetensors")
    assert "hollow.safetensors" in str(caught.value) and "(0, 3, 9, 9)" in str(caught.value), caught.value


def test_extra_or_missing_keys_are_named(tmp_path: Path) -> None:
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    extra = {**state, "body.7.conv1.weight": torch.zeros(8, 8, 3, 3)}
    save_file({k: v.contiguous() for k, v in extra.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(WeightsError, match=r"body\.7\.conv1\.weight"):
        load_generator(tmp_path / "extra.safetensors")
    missing = {k: v.contiguous() for k, v in state.items() if k != "body.1.bn1.running_var"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match=r"body\.1\.bn1\.running_var"):
        load_generator(tmp_path / "missing.safetensors")


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_checkpoint_is_refused_in_one_line_without_torch_advice(tmp_path: Path) -> None:
    torch.save({"head.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError) as caught:
        load_generator(tmp_path / "evil.pt")
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message and "pickle" in message, message
    from srfeat.training import checkpoint

    torch.save({"format": checkpoint.STATE_FORMAT, "x": Payload()}, tmp_path / "state.pt")
    with pytest.raises(WeightsError) as caught:
        checkpoint.load_state(tmp_path / "state.pt")
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value), caught.value


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_generator_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        os.umask({umask})
        from srfeat.archs.generator import SRFeatGenerator
        from srfeat.weights import save_generator
        save_generator(SRFeatGenerator(num_features=4, num_blocks=1), sys.argv[1])
        """
    )
    path = tmp_path / "g.safetensors"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, env=CHILD_ENV, check=True, timeout=120)
    assert path.stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- options and configs


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-2"])
def test_bad_outscale_is_refused_before_any_work(tmp_path: Path, value: str) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    child = srfeat_cli(
        "upscale", "a.png", "-o", "out/", "--outscale", value, "--model", "absent.safetensors", cwd=tmp_path
    )
    line = one_error_line(child, only=True)
    assert "--outscale" in line and "absent" not in line, line
    assert not (tmp_path / "out").exists()


def test_the_api_refuses_bad_outscale(upscaler: Upscaler) -> None:
    for value in (float("nan"), float("inf"), 0.0):
        with pytest.raises(SRFeatError, match="outscale"):
            upscaler(np.zeros((4, 4, 3), np.uint8), outscale=value)


def tiny_config_file(tmp_path: Path) -> Path:
    """A config that passes --dry-run, which reads the training folder's image headers: one 32x32 image."""
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "one.png")
    path = tmp_path / "config.yaml"
    path.write_text(f"data:\n  train_dirs: [{tmp_path / 'images'}]\n  hr_patch_size: 32\ntrain:\n  batch_size: 1\n")
    return path


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=nan", "optim.lr"),
        ("train.max_minutes=.inf", "train.max_minutes"),
        ("optim.lr_milestones=[nan]", "optim.lr_milestones"),
        # an integer too large for a float was an OverflowError traceback
        pytest.param("optim.lr=1" + "0" * 400, "optim.lr", id="optim.lr=1e400-as-an-integer"),
        pytest.param("train.max_minutes=1" + "0" * 400, "train.max_minutes", id="max_minutes=1e400-as-an-integer"),
    ],
)
def test_non_finite_config_numbers_fail_when_read(tmp_path: Path, override: str, key: str) -> None:
    line = one_error_line(srfeat_cli("train", tiny_config_file(tmp_path), override, "--dry-run"))
    assert key in line and "finite" in line, line


def test_binary_file_or_image_as_config_is_one_line(tmp_path: Path) -> None:
    Image.fromarray(samples.astronaut()[:8, :8]).save(tmp_path / "photo.png")
    (tmp_path / "random.bin").write_bytes(bytes(range(256)) * 4)
    for name in ("photo.png", "random.bin"):
        line = one_error_line(srfeat_cli("train", tmp_path / name, "--dry-run"))
        assert name in line and "YAML" in line, line
    assert "PNG image" in one_error_line(srfeat_cli("train", tmp_path / "photo.png"))


def test_a_utf16_config_is_read_as_yaml_reads_it(tmp_path: Path) -> None:
    # YAML allows UTF-16 with a byte-order mark (what Windows PowerShell's `>` writes, e.g. a saved
    # --dry-run): it was refused as "binary data, not a YAML training config (text)".
    text = "# réglages\n" + tiny_config_file(tmp_path).read_text()
    for codec in ("utf-16", "utf-16-be"):
        path = tmp_path / f"{codec}.yaml"
        path.write_bytes((codecs.BOM_UTF16_BE if codec == "utf-16-be" else b"") + text.encode(codec))
        child = srfeat_cli("train", path, "--dry-run", "train.seed=7")
        assert child.returncode == 0 and "seed: 7" in child.stdout, child.stderr


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("stage: 1\ndata:\n  train_dirs: [a, b\noptim:\n  lr: 1e-4\n")
    line = one_error_line(srfeat_cli("train", path, "--dry-run"))
    assert "broken.yaml" in line and "line 4" in line, line


def test_empty_images_and_batches_in_the_api(upscaler: Upscaler) -> None:
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5), np.uint8), torch.zeros(3, 4, 0)):
        with pytest.raises(ValueError, match="empty"):
            upscaler(empty)
    batch = upscaler(torch.zeros(0, 3, 6, 5))
    assert batch.shape == (0, 3, 24, 20)
    assert upscaler(torch.zeros(0, 3, 6, 5), outscale=2).shape == (0, 3, 12, 10)


# ----------------------------------------------------------------------------- files


def test_a_postscript_file_named_as_an_image_is_not_handed_to_ghostscript(tmp_path: Path, model_path: Path) -> None:
    """PIL tries every reader it has on a file, whatever its name: a `photo.png` that is PostScript went to
    PIL's EPS reader, which runs Ghostscript (`gs`, a program outside Python) on it, and a `gs` that
    failed ended the whole run with a traceback. Only the formats srfeat reads are tried now."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    ran = tmp_path / "gs_ran"
    (bin_folder / "gs").write_text(f'#!/bin/sh\necho "$@" >> {ran}\nexit 1\n')
    (bin_folder / "gs").chmod(0o755)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "photo.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(folder / "real.png")
    path = f"{bin_folder}:{CHILD_ENV.get('PATH', '')}"
    child = srfeat_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_path, env={"PATH": path})
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    errors = [line for line in child.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[0].startswith(f"ERROR: cannot read image {folder / 'photo.png'}: "), child.stderr
    assert errors[1:] == ["ERROR: 1 of 2 input(s) failed"], child.stderr
    assert not ran.exists(), ran.read_text()
    assert (tmp_path / "out" / "real.png").is_file()


def tiff_with_damaged_tag(array: np.ndarray, page: int, tag: int, *, renamed: int | None = None) -> bytes:
    """A little-endian TIFF of `array` (pages, if 4-D) whose `tag` on `page` says it holds two values
    (a SHORT or LONG of one), or is `renamed` to another number."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="rgb", metadata=None)
    data = bytearray(buffer.getvalue())
    directory = struct.unpack("<I", data[4:8])[0]
    for _ in range(page):
        count = struct.unpack("<H", data[directory : directory + 2])[0]
        directory = struct.unpack("<I", data[directory + 2 + 12 * count : directory + 6 + 12 * count])[0]
    for entry in range(struct.unpack("<H", data[directory : directory + 2])[0]):
        start = directory + 2 + 12 * entry
        if struct.unpack("<H", data[start : start + 2])[0] == tag:
            if renamed is None:
                data[start + 4 : start + 8] = struct.pack("<I", 2)
            else:
                data[start : start + 2] = struct.pack("<H", renamed)
            return bytes(data)
    raise AssertionError(f"no tag {tag} on page {page}")


def test_signed_8_bit_tiffs_are_refused_not_read_as_wrapped_bytes(tmp_path: Path, model_path: Path) -> None:
    """PIL decodes a TIFF of signed 8-bit grey samples as plain bytes: -56 became 200, and the upscale wrote
    a picture of other intensities without a word (signed 16-bit ones it decodes, and a negative one is
    refused). Signed 8-bit colour PIL does not open at all: it was "cannot identify image file"."""
    folder = tmp_path / "signed"
    folder.mkdir()
    ramp = np.arange(-60, 60, dtype=np.int8).reshape(8, 15)
    tifffile.imwrite(folder / "grey.tif", ramp)
    tifffile.imwrite(folder / "colour.tif", np.stack([ramp] * 3, axis=-1), photometric="rgb")
    tifffile.imwrite(folder / "positive.tif", np.abs(ramp))  # the same bytes as unsigned: read as they are
    child = srfeat_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_path)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert f"{folder / 'grey.tif'}: a TIFF of signed 8-bit samples, in [-60, 59]" in child.stderr, child.stderr
    assert f"{folder / 'colour.tif'}: a TIFF of 3 sample(s) of 8-bit signed integer" in child.stderr, child.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["positive.tif"]


def test_damaged_files_that_make_a_reader_raise_an_unusual_error_are_one_line_each(
    tmp_path: Path, model_path: Path
) -> None:
    """PIL and tifffile raise more than OSError and ValueError for some damaged files: PIL a TypeError for
    a TIFF whose second page has no width (counting the pages), a RuntimeError for an AVIF without its
    primary item; tifffile a TypeError for a TIFF whose SamplesPerPixel holds two values; numpy a
    ValueError for a 16-bit PPM cut after an odd byte. Each ended the whole upscale or eval run with a
    traceback; each is now the file's one error line (the TIFF of two SamplesPerPixel PIL reads, with
    a warning), and the other files are done."""
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.full((6, 5, 3), 90, dtype=np.uint8)
    unreadable = {
        "pages.tif": tiff_with_damaged_tag(np.stack([pixels, pixels]), 1, 256, renamed=0x7FFF),
        "cut16.ppm": b"P6\n5 6\n65535\n" + pixels.astype(">u2").tobytes()[:-3],
    }
    if features.check("avif"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="AVIF")
        unreadable["primary.avif"] = buffer.getvalue().replace(b"pitm", b"xitm", 1)  # no primary item box
    readable = {"samples16.tif": tiff_with_damaged_tag(pixels.astype(np.uint16) * 257, 0, 277)}
    for name, data in {**unreadable, **readable}.items():
        (folder / name).write_bytes(data)
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(folder / "good.png")
    child = srfeat_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_path)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    for name in unreadable:
        assert f"ERROR: cannot read image {folder / name}: " in child.stderr, (name, child.stderr)
    assert f"ERROR: {len(unreadable)} of {len(unreadable) + 2} input(s) failed" in child.stderr
    assert (tmp_path / "out" / "good.png").is_file() and (tmp_path / "out" / "samples16.tif").is_file()
    scored = srfeat_cli("eval", "--model", "bicubic", "--data", folder, "--metrics", "psnr", cwd=tmp_path)
    assert scored.returncode == 0 and "Traceback" not in scored.stderr, scored.stderr
    for name in unreadable:
        assert f"WARNING: cannot read image {folder / name}: " in scored.stderr, (name, scored.stderr)
    assert "| bicubic | photos | 2 |" in scored.stdout, scored.stdout


def test_folder_scan_reports_every_skipped_path_and_reads_gif(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photo = samples.astronaut()[:16, :12]
    Image.fromarray(photo).save(folder / "a.png")
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1])]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    expected = ["a.png", "anim.png"]
    from PIL import features

    if features.check("avif"):  # Pillow built with libavif (its wheels are)
        Image.fromarray(photo).save(folder / "b.avif")
        expected.append("b.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    (folder / "sub").mkdir()
    with caplog.at_level(logging.INFO):
        assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(model_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == expected
    warnings = warning_lines(caplog)
    for name, reason in (
        ("notes.txt", "not an image"),
        ("gone.png", "broken"),
        ("sub", "folder"),
        ("anim.gif", "frame"),
    ):
        assert any(name in line and reason in line for line in warnings), (name, warnings)


def test_output_name_with_an_image_extension_is_a_file(tmp_path: Path, model_path: Path) -> None:
    Image.fromarray(samples.astronaut()[:16, :12]).save(tmp_path / "a.png")
    for name in ("out.gif", "out.xyz"):
        child = srfeat_cli("upscale", "a.png", "-o", name, "--model", model_path, cwd=tmp_path)
        line = one_error_line(child, only=True)
        assert name in line and ".png" in line and (name == "out.xyz" or ".mp4" not in line), line
        assert not (tmp_path / name).exists()
    assert srfeat_cli("upscale", "a.png", "-o", "out.d/", "--model", model_path, cwd=tmp_path).returncode == 0
    assert (tmp_path / "out.d" / "a.png").is_file()


def test_sixteen_bit_rgb_tiff_keeps_sixteen_bits(tmp_path: Path, model_path: Path) -> None:
    import tifffile

    deep = samples.astronaut()[:20, :24].astype(np.uint16) * 257 + np.arange(24, dtype=np.uint16)[None, :, None]
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="rgb")
    raw = read_raw_image(tmp_path / "deep.tif")
    assert raw.array.dtype == np.uint16 and np.array_equal(raw.array, deep)
    assert main(["upscale", str(tmp_path / "deep.tif"), "-o", str(tmp_path / "out"), "--model", str(model_path)]) == 0
    written = read_raw_image(tmp_path / "out" / "deep.tif")
    assert written.array.dtype == np.uint16 and written.array.shape == (80, 96, 3)
    assert len(np.unique(written.array % 257)) > 1, "values between the 8-bit levels survive"
    write_image(tmp_path / "again.tif", deep)
    assert np.array_equal(read_raw_image(tmp_path / "again.tif").array, deep)


# A child that upscales one image and stalls half-way through writing it (a slow disk).
STALLED_WRITE = textwrap.dedent(
    """
    import sys, time
    from PIL import Image
    from srfeat.cli import main

    real_save = Image.Image.save

    def stalling_save(self, fp, *args, **kwargs):  # fp: the temporary, open
        fp.write(b"\\x89PNG partial")
        print("writing", flush=True)
        time.sleep(60)

    Image.Image.save = stalling_save
    sys.argv = ["srfeat", "upscale", *sys.argv[1:]]  # as the program runs: `srfeat upscale ...`
    sys.exit(main())
    """
)


def test_an_output_cut_short_by_the_file_system_fails_and_is_not_kept(tmp_path: Path, model_path: Path) -> None:
    """On a full disk the last write of a file is short (the part that fits). PIL's C writer, given a
    path, took it for a whole one: a JPEG came out cut short, reported as written, exit 0. A limit on
    file size cuts writes the same way."""

    source = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(source)
    limit = 20_000  # bytes: the 192x192 JPEG of noise is larger

    for name in ("noise.jpg", "noise.bmp", "noise.tif"):
        target = tmp_path / "out" / name
        child = srfeat_cli(
            "upscale",
            source,
            "-o",
            target,
            "--model",
            model_path,
            env={"PYTHONDONTWRITEBYTECODE": "1"},
            file_size_limit=limit,
        )
        assert child.returncode == 1 and "Traceback" not in child.stderr, (name, child.stderr)
        # A compressed TIFF's (libtiff's own writes) said "encoder error -2", not why.
        assert f"ERROR: cannot write {target} (from {source}): [Errno 27] File too large" in child.stderr, child.stderr
        assert not target.parent.exists()  # no output, no temporary, and not the folder the run made for them
    whole = tmp_path / "out" / "noise.jpg"
    assert srfeat_cli("upscale", source, "-o", whole, "--model", model_path).returncode == 0
    assert whole.stat().st_size > limit  # the limit did cut it


@pytest.mark.parametrize("kind", ["image", "video", "export"])
def test_a_failed_write_leaves_no_folder_it_made_and_keeps_those_that_were_there(
    tmp_path: Path, model_path: Path, kind: str
) -> None:
    """`-o there/new/deeper/out.png` whose write failed (a full disk, a file size limit, Ctrl-C) left the empty
    folders `new/deeper/` behind; the folder that was there before the run stays."""
    there = tmp_path / "there"
    there.mkdir()
    if kind == "image":
        source = tmp_path / "noise.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(source)
        args = ["upscale", source, "-o", there / "new" / "deeper" / "out.png", "--model", model_path]
    elif kind == "video":
        pytest.importorskip("av")
        from video_helpers import write_clip

        source = tmp_path / "clip.mp4"
        write_clip(source, frames=6, audio=False)
        args = ["upscale", source, "-o", there / "new" / "deeper" / "out.mp4", "--model", model_path]
    else:
        pytest.importorskip("onnx")
        args = ["export", "--model", model_path, "-o", there / "new" / "deeper" / "model.onnx"]

    # every output here is larger than 8 KB: its write fails (EFBIG)
    child = srfeat_cli(*args, env={"PYTHONDONTWRITEBYTECODE": "1"}, file_size_limit=8192)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "File too large" in child.stderr, child.stderr
    assert there.is_dir() and not list(there.iterdir())


def test_a_folder_made_for_a_failed_write_is_kept_once_it_holds_something(tmp_path: Path) -> None:
    from srfeat.files import folder_made_for

    with pytest.raises(KeyboardInterrupt), folder_made_for(tmp_path / "new" / "deeper" / "out.png"):
        (tmp_path / "new" / "another run's file").write_text("kept")
        raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["another run's file"]


def test_a_compressed_tiff_on_a_full_disk_says_the_disk_is_full(tmp_path: Path, model_path: Path) -> None:
    """libtiff writes a compressed TIFF itself, and PIL reported its failed write only as "encoder error -2".
    A real full disk: a 64 KB tmpfs, most of it taken, in a private mount namespace (gone with the process)."""
    import shlex
    import shutil

    namespace = ["unshare", "--user", "--map-root-user", "--mount"]
    if shutil.which("unshare") is None or subprocess.run([*namespace, "true"], check=False).returncode:
        pytest.skip("no unprivileged mount namespaces here (unshare)")
    source = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(source)
    small = tmp_path / "small"
    small.mkdir()
    upscale = [sys.executable, "-m", "srfeat.cli", "upscale", source, "-o", small / "noise.tif", "--model", model_path]
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {small} && head -c 40000 /dev/zero > {small}/fill && "
        f"{shlex.join(map(str, upscale))}; echo rc=$?; ls -A {small}"
    )
    child = subprocess.run(
        [*namespace, "sh", "-c", script], env=CHILD_ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert child.stdout.split() == ["rc=1", "fill"], (child.stdout, child.stderr)  # no output, no temporary
    errors = [line for line in child.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors[0].startswith(f"ERROR: {source}: not enough disk space to write noise.tif in {small} ("), errors
    assert "encoder error" not in child.stderr, child.stderr


def test_a_big_endian_16_bit_array_is_written_as_its_values(tmp_path: Path) -> None:
    """write_image refused `>u2` pixels (as numpy reads them from PPM or FITS files) as not uint16."""
    pixels = np.random.default_rng(0).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    for name in ("big.png", "big.tif"):
        write_image(tmp_path / name, pixels.astype(">u2"))
        assert np.array_equal(read_raw_image(tmp_path / name).array, pixels)
    write_image(tmp_path / "grey.png", pixels[..., :1].astype(">u2"))
    assert np.array_equal(read_raw_image(tmp_path / "grey.png").array, pixels[..., :1])
    write_image(tmp_path / "eight.jpg", pixels.astype(">u2"))  # 8 bits of the values, not of swapped bytes
    assert np.abs(read_raw_image(tmp_path / "eight.jpg").array.astype(int) - pixels // 257).mean() < 8


def test_a_full_disk_is_named_with_what_to_do(tmp_path: Path) -> None:
    from srfeat.files import DiskFullError, disk_full_named

    with pytest.raises(DiskFullError) as raised, disk_full_named(tmp_path / "photo.jpg"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value).startswith(f"not enough disk space to write photo.jpg in {tmp_path} (")
    assert "free some space and run again" in str(raised.value)
    with pytest.raises(PermissionError), disk_full_named(tmp_path / "photo.jpg"):
        raise PermissionError(errno.EACCES, "Permission denied")  # other errors pass as they are


def test_a_file_system_that_reports_no_size_is_written_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc, some network and FUSE mounts say 0 bytes of 0: every write there was refused before it
    began as "0.00 MB free"; the write itself says if the disk is full."""
    import shutil
    from types import SimpleNamespace

    from srfeat.files import DiskFullError, disk_full_named, write_file_atomically

    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(total=0, used=0, free=0))
    write_file_atomically(tmp_path / "scores.json", lambda handle: handle.write(b"{}"), 2)
    assert (tmp_path / "scores.json").read_bytes() == b"{}"
    full = pytest.raises(DiskFullError, match=r"\(free space unknown: No space left on device\)")
    with full, disk_full_named(tmp_path / "photo.jpg"):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_killed_upscale_leaves_no_temporary(tmp_path: Path, model_path: Path, how: signal.Signals) -> None:
    """SIGHUP (the terminal closed) killed the process as SIGKILL does, leaving the temporary."""
    Image.fromarray(samples.astronaut()[:16, :12]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "a.png"), "-o", str(out), "--model", str(model_path)]
    child = subprocess.Popen(
        with_hangup([sys.executable, "-c", STALLED_WRITE, *args], ignored=False),
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        time.sleep(0.1)
        child.send_signal(how)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    if how != signal.SIGKILL:  # cleaned on the signal
        assert child.returncode == 128 + how and "Traceback" not in stderr, (child.returncode, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
        assert errors == [f"ERROR: terminated ({how.name}); files being written were removed"], stderr
        assert not out.exists()  # nor the folder the run made for them
    else:  # cleaned by the next run that writes there
        assert [p.name for p in out.iterdir()] == [f".a.png.{child.pid}.tmp"]
        assert main(["upscale", *args]) == 0
        assert [p.name for p in out.iterdir()] == ["a.png"]


def test_a_closed_terminal_stops_an_upscale_cleanly(tmp_path: Path, model_path: Path) -> None:
    """The terminal an upscale runs in is closed (the window, the SSH connection): the kernel's SIGHUP
    killed it mid-write and left its temporary. Now it stops as on SIGTERM, though the one line it
    ends with can no longer be written (EIO)."""
    Image.fromarray(samples.astronaut()[:16, :12]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    terminal = Terminal()
    child = terminal.start([sys.executable, "-c", STALLED_WRITE, tmp_path / "a.png", "-o", out, "--model", model_path])
    try:
        terminal.wait_for("writing", child)
        terminal.hang_up()
        returncode = child.wait(timeout=120)
        assert returncode == 128 + signal.SIGHUP, (returncode, terminal.text())
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists()  # no temporary, nor the folder the run made for it


def test_under_nohup_a_hangup_does_not_stop_an_upscale(tmp_path: Path, model_path: Path) -> None:
    """`nohup srfeat upscale ...` starts srfeat with SIGHUP ignored: it stays so, and the upscale goes on."""
    Image.fromarray(samples.astronaut()[:16, :12]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "a.png"), "-o", str(out), "--model", str(model_path)]
    released = "sys.stdin.read(); fp.seek(0); return real_save(self, fp, *args, **kwargs)"  # over the partial bytes
    child = start_piped(
        with_hangup([sys.executable, "-c", STALLED_WRITE.replace("time.sleep(60)", released), *args], ignored=True)
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGHUP)  # a handler would run at once: the child waits in a read
        _, stderr = child.communicate(input="", timeout=120)  # the write goes on
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0 and "ERROR" not in stderr, (child.returncode, stderr)
    assert [p.name for p in out.iterdir()] == ["a.png"]
    with Image.open(out / "a.png") as written:
        assert written.size == (48, 64)


def _pid_namespaces() -> bool:
    """Whether a process can be started in a PID namespace of its own here (root, or user namespaces)."""
    try:
        command = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
        return subprocess.run(command, capture_output=True, timeout=120, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


UNSHARED = ["unshare", "--pid", "--fork", "--mount-proc"]  # the process is process 1 of a PID namespace


@pytest.mark.skipif(not _pid_namespaces(), reason="needs `unshare --pid` (root, or user namespaces)")
@pytest.mark.parametrize("same_id", [False, True])
def test_a_live_writers_temporary_is_never_taken_for_a_killed_runs(
    tmp_path: Path, model_path: Path, same_id: bool
) -> None:
    """Two upscales of one output from two PID namespaces (two containers on one shared folder): the
    second saw no process of the first's id, took the first's temporary for a killed run's and deleted
    it mid-write; where both were process 1, as a container's first process is, it deleted it as its
    own from an earlier run and wrote the same name, so the file renamed into place could be the other's
    half. A temporary's writer holds a lock on it: a locked temporary is never removed, whatever its
    process id says, and a second writer of the same name is refused in one line."""
    Image.fromarray(samples.astronaut()[:16, :12]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "a.png"), "-o", str(out), "--model", str(model_path), "--overwrite"]
    stalled = STALLED_WRITE.replace("time.sleep(60)", "sys.stdin.read()")  # until the test says
    writer = start_piped(
        [*(UNSHARED if same_id else []), sys.executable, "-c", stalled, *args],
        start_new_session=True,  # its own process group: unshare and the writer under it are killed together
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        live = out / f".a.png.{1 if same_id else writer.pid}.tmp"
        inode = live.stat().st_ino
        other = run_child([*UNSHARED, sys.executable, "-m", "srfeat.cli", "upscale", *args])
        assert "left by a killed run" not in other.stderr, other.stderr
        assert live.stat().st_ino == inode  # the first writer's temporary, still there
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.communicate(timeout=300)
    if same_id:  # the one name is taken: the second waits its turn
        errors = [line for line in other.stderr.splitlines() if line.startswith("ERROR")]
        assert other.returncode == 1 and "Traceback" not in other.stderr, other.stderr
        assert "out/a.png is being written by another process right now" in errors[0], other.stderr
        assert not (out / "a.png").exists()
    else:
        assert other.returncode == 0, other.stderr
        with Image.open(out / "a.png") as written:
            assert written.size == (48, 64)


def test_stale_training_temporaries_are_cleaned_on_the_next_start(tmp_path: Path) -> None:
    import training_helpers

    train_dir, _ = training_helpers.write_image_folders(tmp_path / "images")
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [out / f".state.pt.{dead.pid}.tmp", out / f".generator_latest.safetensors.{dead.pid}.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    users = [out / "notes.tmp", out / "state.pt.tmp", out / ".state.pt.tmp"]  # not ours: kept
    for path in users:
        path.write_text("the user's")
    from srfeat.training import trainer

    config = training_helpers.tiny_config(train_dir, None, out, overrides=["train.max_steps=1"])
    trainer.train(config, out_dir=out, show_progress=False)
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "the user's" for path in users)
    assert load_file(str(out / "generator_latest.safetensors"))


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--suffix", "_x4/"], "--suffix"),
        (["--suffix", "/../../escaped"], "--suffix"),
        (["--suffix", "a\nb"], "--suffix"),
        (["--strength", "1.1"], "--strength"),
        (["--strength", "nan"], "--strength"),
        (["-o", "afile/x.png"], "afile is a file"),
        (["-o", "afile/sub/"], "afile is a file"),
        (["-o", "afile"], "existing file, not a folder"),
        (["--device", "mps"], "mps is not supported"),
        # an existing folder no file can be made in (read-only; /proc is so even for root): its
        # parent was checked, and every input was upscaled before its write failed
        pytest.param(
            ["-o", "/proc/"],
            "-o /proc/: cannot write in /proc",
            marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc"),
        ),
    ],
)
def test_bad_options_and_outputs_are_refused_before_any_work(tmp_path: Path, option: list[str], named: str) -> None:
    """Each was found only after the network had run on every input (or gave a traceback)."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "afile").write_text("a file, not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["-o", "out/", *option] if "-o" not in option else option
    child = srfeat_cli("upscale", "a.png", "b.png", *args, "--model", "absent.safetensors", cwd=tmp_path)
    line = one_error_line(child, only=True)
    assert named in line and "absent" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "afile").read_text() == "a file, not a folder"


@pytest.mark.parametrize("device", ["tpu", "mps"])
def test_a_bad_device_is_refused_before_the_inputs_are_listed(tmp_path: Path, device: str) -> None:
    """--device was checked when the model loaded: a missing input or an existing output was
    reported first, and the device only on the run after those were fixed."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "out" / "a.png")
    child = srfeat_cli("upscale", "a.png", "missing.png", "-o", "out/", "--device", device, cwd=tmp_path)
    line = one_error_line(child, only=True)
    assert f"device {device!r}" in line or f"device {device} " in line, line


def test_links_to_an_input_and_link_loops_are_named(tmp_path: Path, model_path: Path) -> None:
    Image.fromarray(samples.astronaut()[:12, :10]).save(tmp_path / "a.png")
    (tmp_path / "link.png").symlink_to("a.png")
    (tmp_path / "loop1.png").symlink_to("loop2.png")
    (tmp_path / "loop2.png").symlink_to("loop1.png")
    child = srfeat_cli("upscale", "a.png", "link.png", "loop1.png", "-o", "out/", "--model", model_path, cwd=tmp_path)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "WARNING: skipped link.png: the same file as a.png" in child.stderr
    assert "ERROR: input loop1.png: symbolic link loop" in child.stderr, child.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    ("pixels", "advice"),
    [
        (np.linspace(0, 255, 48).reshape(4, 4, 3), "divide by 255"),
        (np.linspace(-1, 1, 48).reshape(4, 4, 3).astype(np.float32), r"\(x \+ 1\) / 2"),
        (torch.linspace(0, 255, 48).reshape(3, 4, 4), "divide by 255"),
        (np.linspace(-5, 900, 48).reshape(4, 4, 3), "rescale"),
        # beyond float32: they were called "not finite (NaN or inf)", with numpy's overflow warning
        (np.linspace(0, 1e300, 48).reshape(4, 4, 3), "rescale"),
        (np.full((4, 4, 3), -1e39), "rescale"),
    ],
)
def test_float_pixels_outside_zero_to_one_are_refused_not_clamped_to_white(
    upscaler: Upscaler, pixels: np.ndarray | torch.Tensor, advice: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidImageError, match=f"must be in \\[0, 1\\].*{advice}"):
            upscaler(pixels)


def test_float_pixels_a_rounding_error_outside_zero_to_one_are_taken(upscaler: Upscaler) -> None:
    pixels = np.full((4, 4, 3), 1 + 0.5 / 255, np.float32)
    pixels[0, 0] = -0.5 / 255
    assert upscaler(pixels).shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((4, 4, 3), bool), ValueError, "got bool"),
        (np.zeros((4, 4, 3), np.int32), ValueError, "got int32"),
        (np.zeros((4, 4, 3), np.complex64), ValueError, "got complex64"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), ValueError, r"float\(\) / 255"),
        (np.zeros((6, 6, 5), np.uint8), ValueError, "got 5"),
        (np.zeros((3, 8, 6), np.uint8), ValueError, "transpose"),
        (np.zeros(5, np.uint8), ValueError, "HxW or HxWxC"),
        (torch.zeros(4, 4), ValueError, r"\(C, H, W\)"),
        # an empty batch of 7-channel images was "upscaled" to one; a sparse tensor was torch's NotImplementedError
        (torch.zeros(0, 7, 4, 4), ValueError, "got 7"),
        (torch.zeros(3, 4, 4).to_sparse(), ValueError, "to_dense"),
        # channels last: "got 8 channels" did not say what to do
        (torch.zeros(8, 6, 3), ValueError, r"permute\(2, 0, 1\)"),
        (torch.zeros(2, 8, 6, 3), ValueError, r"permute\(0, 3, 1, 2\)"),
        ("photo.png", TypeError, "got str"),
        ([[0, 1]], TypeError, "got list"),
    ],
)
def test_the_api_raises_srfeat_errors_of_the_documented_kinds(
    upscaler: Upscaler, image: object, error: type[Exception], message: str
) -> None:
    """The README: bad input raises a one-line SRFeatError, a ValueError (TypeError: not an image)."""
    with pytest.raises(SRFeatError, match=message) as raised:
        upscaler(image)  # pyright: ignore[reportArgumentType, reportCallIssue]
    assert isinstance(raised.value, error) and "\n" not in str(raised.value)


@pytest.mark.parametrize("outscale", ["2", True, None])
def test_the_api_refuses_an_outscale_that_is_not_a_number(upscaler: Upscaler, outscale: object) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    if outscale is None:
        assert upscaler(image, outscale=outscale).shape == (16, 16, 3)
        return
    with pytest.raises(InvalidImageError, match="outscale must be a number"):
        upscaler(image, outscale=outscale)  # pyright: ignore[reportArgumentType, reportCallIssue]


@pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
def test_big_endian_and_read_only_arrays_give_the_native_result(upscaler: Upscaler, dtype: str) -> None:
    native = np.dtype(dtype).newbyteorder("=")
    pixels = np.random.default_rng(0).random((6, 5, 3))
    pixels = (pixels * 65535).astype(native) if native.kind == "u" else pixels.astype(native)
    foreign = pixels.astype(dtype)
    foreign.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about a read-only buffer it is handed
        result = upscaler(foreign)
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, upscaler(pixels))


def test_an_output_the_memory_cannot_hold_is_refused_before_allocating(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 79 KB 9000x9000 PNG asked for a 15.5 GB output at once: a traceback, or hours of swapping."""
    Image.fromarray(samples.astronaut()[:20, :30]).save(tmp_path / "a.png")
    from srfeat.inference import tiling

    needed = 80 * 120 * 3 * 5
    monkeypatch.setattr(tiling, "available_memory", lambda device: needed - 1)
    with caplog.at_level(logging.INFO):
        assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out/"), "--model", str(model_path)]) == 1
    errors = [line for line in error_lines(caplog) if "a.png" in line]
    assert len(errors) == 1 and "the 120x80 result needs about 0.0 GB of memory" in errors[0], errors
    assert not (tmp_path / "out" / "a.png").exists()
    monkeypatch.setattr(tiling, "available_memory", lambda device: needed)
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out/"), "--model", str(model_path)]) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 1.5}, "tile must be a whole number of pixels, at least 0 for no tiling, got float 1.5"),
        ({"tile": "64"}, "tile must be a whole number of pixels, at least 0 for no tiling, got str '64'"),
        ({"tile": True}, "tile must be a whole number"),
        ({"tile_pad": 2.5}, "tile_pad must be a whole number of pixels, at least 0, got float 2.5"),
        ({"tta": "yes"}, "tta must be True or False, got str 'yes'"),
        ({"compile": 1}, "compile must be True or False, got int 1"),
        ({"model": None}, "model must be a bundled name, a checkpoint path or an SRFeatGenerator, got NoneType"),
        ({"model": ""}, "model is an empty string"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
    ],
)
def test_the_api_refuses_options_of_the_wrong_kind_as_value_errors(
    model_path: Path, options: dict[str, object], message: str
) -> None:
    """Before: a tile of 1.5 or flags of "yes" passed, a tile of "64" or model None failed deep inside."""
    with pytest.raises(InvalidOptionError) as raised:
        Upscaler(**{"model": model_path, "device": "cpu", **options})
    assert isinstance(raised.value, ValueError) and message in str(raised.value)


def test_a_tile_pad_below_the_receptive_radius_warns_of_seams(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        # numpy's integers and bool are accepted as Python's are, though the annotations say int and bool.
        Upscaler(model_path, device="cpu", tile=64, tile_pad=np.int64(8), tta=np.bool_(False))  # pyright: ignore[reportArgumentType]
    assert any("tile pad 8 is below the network's receptive radius" in line for line in warning_lines(caplog))


@pytest.mark.parametrize(("tile", "warned"), [(None, True), (64, True), (0, False)])
def test_a_tile_pad_beyond_the_receptive_radius_warns_that_it_only_costs(
    model_path: Path, caplog: pytest.LogCaptureFixture, tile: int | None, warned: bool
) -> None:
    """tile_pad=10000 on a 1000 x 1000 image: 32-pixel tiles that each read nearly the whole image,
    about 1000 network passes for the result a pad of the receptive radius gives, without a word."""
    with caplog.at_level(logging.WARNING):
        upscaler = Upscaler(model_path, device="cpu", tile=tile, tile_pad=10_000)
    radius = upscaler.model.receptive_radius
    expected = f"tile pad 10000 is beyond the network's receptive radius ({radius}): the result is the same as with"
    assert any(expected in line for line in warning_lines(caplog)) == warned, caplog.text


def test_a_tile_below_the_minimum_is_taken_with_a_warning(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Upscaler(model_path, device="cpu", tile=1)
    assert any("tile size 1 is below 32 pixels" in line for line in warning_lines(caplog)), caplog.text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["upscale", "a.png", "--outscale", "4x"], "--outscale: invalid float value: '4x'"),
        (["upscale", "a.png", "--half", "--bf16"], "--bf16: not allowed with argument --half"),
        (["upscale", "a.png", "--ext", "gif"], "--ext: invalid choice: 'gif'"),
        (["upscal", "a.png"], "invalid choice: 'upscal'"),
    ],
)
def test_a_malformed_command_line_is_one_error_line(args: list[str], named: str) -> None:
    """Not argparse's usage block: the line that matters would scroll behind it."""
    child = srfeat_cli(*args)
    assert named in one_error_line(child, returncode=2, only=True) and "--help" in child.stderr


def test_a_folder_of_many_other_files_is_summed_up_after_the_first_lines(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(samples.astronaut()[:8, :8]).save(folder / "a.png")
    for index in range(300):
        (folder / f"notes{index:03}.txt").write_text("not an image")
    for index in range(3):
        (folder / f"zgone{index}.png").symlink_to(folder / "deleted.png")  # sorted last: among the counted
    with caplog.at_level(logging.INFO):
        assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(model_path)]) == 0
    warnings = warning_lines(caplog)
    assert len(warnings) == 10 + 2, warnings
    assert all(f"notes{index:03}.txt: not an image extension (.txt)" in warnings[index] for index in range(10))
    assert warnings[10:] == [
        "skipped 290 more path(s): not an image extension",
        "skipped 3 more path(s): broken symbolic link",
    ]
    assert (tmp_path / "out" / "a.png").is_file()
