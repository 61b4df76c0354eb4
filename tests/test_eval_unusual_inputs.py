"""`srfeat eval` on a user's own folder: odd names, transparency and deep images, odd sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from skimage import data as samples
from test_image_reading import address_space_after_import

from srfeat.data import benchmark
from srfeat.data.benchmark import BenchmarkDataset
from srfeat.data.io import write_image, write_png
from srfeat.errors import SRFeatError


def per_image_psnr(json_path: Path) -> dict[str, float]:
    return {entry["image"]: entry["psnr"] for entry in json.loads(json_path.read_text())[0]["per_image"]}


def test_a_newline_or_control_character_in_a_name_keeps_each_row_one_line(tmp_path: Path) -> None:
    # A file named `a<newline>b.png` broke its row of the per-image table in two (and its log lines), and an
    # escape character in a name coloured the terminal; the folder's name is a cell of every row
    folder = tmp_path / "my\nset"
    write_png(folder / "a\nb.png", samples.astronaut()[:40, :44])
    write_png(folder / "c\x1b[31md\te.png", samples.astronaut()[40:80, :44])
    write_png(folder / "t\ni.png", samples.astronaut()[:4, :4])  # no PSNR once shaved: a warning names it
    json_path = tmp_path / "r.json"
    args = ("--data", folder, "--metrics", "psnr", "--per-image", "--json", json_path)
    child = srfeat_cli("eval", "--model", "bicubic", *args)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 9 and all(line.startswith("|") and line.endswith("|") for line in lines if line), lines
    assert lines[2].startswith("| bicubic | my\\nset | 3 | ") and lines[2].endswith(" (2/3) |"), lines
    assert [line.split(" | ")[:3] for line in lines[6:]] == [
        ["| my\\nset", "a\\nb", "bicubic"],
        ["| my\\nset", "c\\x1b[31md\\te", "bicubic"],
        ["| my\\nset", "t\\ni", "bicubic"],
    ]
    assert "\x1b" not in child.stdout + child.stderr
    assert all(line.startswith(("INFO: ", "WARNING: ")) for line in child.stderr.splitlines()), child.stderr
    assert "PSNR left out for my\\nset/t\\ni (bicubic)" in child.stderr, child.stderr
    assert sorted(per_image_psnr(json_path)) == ["a\nb", "c\x1b[31md\te", "t\ni"]  # the JSON keeps the names


def test_transparency_and_deep_images_are_scored_as_8_bit_rgb_with_one_warning(tmp_path: Path) -> None:
    # The protocol scores 8-bit RGB: alpha dropped, 16 bits reduced to 8, which a user's own set got silently.
    # One warning for the run names the files (a few, and a count), not those of which nothing was lost.
    photo = samples.astronaut()[:64, :64]
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:8] = 0
    folder, flat = tmp_path / "mine", tmp_path / "flat"
    write_png(folder / "opaque.png", np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]))
    write_image(folder / "exact16.png", photo.astype(np.uint16) * 257)  # 8 bits hold it all
    write_image(folder / "deep.png", photo.astype(np.uint16) * 257 + np.uint16(100))  # rounds to `photo`
    for index in range(7):
        write_png(folder / f"clear{index}.png", np.dstack([photo, alpha]))
    for path in folder.iterdir():
        write_png(flat / path.name, photo)
    results = {}
    for name in (folder, flat):
        json_path = tmp_path / f"{name.name}.json"
        args = ("--data", name, "--metrics", "psnr", "--per-image", "--json", json_path)
        child = srfeat_cli("eval", "--model", "bicubic", *args)
        assert child.returncode == 0, child.stderr
        results[name.name] = (per_image_psnr(json_path), [line for line in child.stderr.splitlines() if "WARN" in line])
    assert results["mine"][0] == results["flat"][0]  # the scores are those of the 8-bit RGB files
    assert results["flat"][1] == []
    assert len(results["mine"][1]) == 1, results["mine"][1]
    warning = results["mine"][1][0]
    assert "7 image(s) with transparency" in warning and "mine/clear0.png" in warning and "and 2 more" in warning
    assert "1 image(s) of 16-bit" in warning and "mine/deep.png" in warning, warning
    assert "opaque" not in warning and "exact16" not in warning, warning


def test_a_set_folders_subfolders_are_named_not_passed_over_in_silence(tmp_path: Path) -> None:
    # Only a folder's own files are the set's images: a subfolder's (Set5/image_SRF_4/) were left out without
    # a word, and a folder of subfolders alone was "no readable images", with nothing to say why
    mixed, nested = tmp_path / "mixed", tmp_path / "nested"
    write_png(mixed / "top.png", samples.astronaut()[:48, :48])
    write_png(mixed / "inner" / "deep.png", samples.astronaut()[48:96, :48])
    for name in ("image_SRF_2", "image_SRF_4"):
        write_png(nested / name / "img_001.png", samples.astronaut()[:48, :48])
    child = srfeat_cli("eval", "--model", "bicubic", "--data", mixed, "--metrics", "psnr")
    assert child.returncode == 0 and "| bicubic | mixed | 1 |" in child.stdout, child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "subfolder(s) inner are not searched" in warnings[0], child.stderr
    line = one_error_line(srfeat_cli("eval", "--model", "bicubic", "--data", nested, "--metrics", "psnr"))
    assert f"{nested} holds no image files, only 2 subfolder(s) (not read)" in line, line


@pytest.mark.parametrize(
    ("model", "module", "name", "when"),
    [
        ("bicubic", "srfeat.evaluation", "score_image", "True"),  # the metrics, on the whole image
        # the network's whole output, around its tiles (not the test image every model runs first)
        ("generator", "srfeat.inference.tiling", "allocate_output", "args[0] == 48"),
    ],
)
def test_an_image_that_runs_out_of_memory_is_one_line_naming_it(
    model: str, module: str, name: str, when: str, tmp_path: Path
) -> None:
    # it was the allocator's RuntimeError with a traceback (the tiles and training already said it in one line)
    from cli_helpers import srfeat_cli_out_of_memory
    from inference_helpers import tiny_generator

    from srfeat.weights import save_generator

    folder = tmp_path / "Mine"
    write_png(folder / "big.png", samples.astronaut()[:48, :40])
    if model == "generator":
        model = str(tmp_path / "g.safetensors")
        save_generator(tiny_generator(), model)
    child = srfeat_cli_out_of_memory(
        module, name, when, "eval", "--model", model, "--data", folder, "--metrics", "psnr"
    )
    error = one_error_line(child)
    assert error.startswith("ERROR: out of memory evaluating Mine/big ("), error
    assert error.endswith(
        "40x48 pixels: its output and scores are computed whole; leave the largest images out of the folder "
        "(or downscale them), or free memory"
    ), error


def test_an_image_whose_scoring_needs_more_memory_than_there_is_is_one_line(tmp_path: Path) -> None:
    """A 64-megapixel image passed the decoded-size check (HR and LR, 0.2 GB); the protocol's float64 bicubic
    then took about 4 GB more: under `ulimit -v` a traceback from inside imresize ("can't allocate memory")."""
    folder = tmp_path / "large"
    folder.mkdir()
    Image.new("RGB", (8000, 8000)).save(folder / "panorama.png")  # 0.2 MB on disk, 192 MB decoded
    # 1.25 GiB of address space past what torch and srfeat take (0.6 GiB for the CPU build, 3.1 GiB for PyPI's CUDA
    # one): room to decode it and score a small image, not for its 4 GB of bicubic
    limit = address_space_after_import() + int(1.25 * 2**30)
    child = srfeat_cli("eval", "--model", "bicubic", "--data", folder, "--metrics", "psnr", memory_limit=limit)
    # refused from the file headers, before anything is decoded: the memory available is the room left under the
    # limit (it was the host's free memory, and the run failed at an allocation)
    line = one_error_line(child)
    assert "panorama.png: scoring this 64-megapixel image takes about 3.8 GB of memory" in line, line
    assert "downscale" in line, line


def test_the_memory_an_image_takes_to_score_is_checked_from_its_header(tmp_path: Path, monkeypatch) -> None:
    """The check counted the decoded HR and LR images alone (3.2 MB here), not the 20x that scoring one takes."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (1000, 1000)).save(folder / "wide.png")
    monkeypatch.setattr(benchmark, "host_available_memory", lambda: 40_000_000)  # 40 MB: half is 20 MB
    with pytest.raises(SRFeatError, match=r"wide\.png: scoring this 1-megapixel image takes about 0\.1 GB"):
        BenchmarkDataset(folder)


def test_a_link_loop_as_data_or_json_is_one_line_before_any_scoring(tmp_path: Path) -> None:
    """Both were a RuntimeError traceback ("Symlink loop", from `Path.resolve` before Python 3.13); a --json
    loop, once past that, was scored and then called a file that "appeared while the models were evaluated"."""
    (tmp_path / "set").mkdir()
    Image.fromarray(samples.astronaut()[:32, :32]).save(tmp_path / "set" / "a.png")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "loop.json").symlink_to("loop.json")
    common = ("eval", "--model", "bicubic", "--metrics", "psnr", "--device", "cpu")
    child = srfeat_cli(*common, "--data", "loop", cwd=tmp_path)
    assert "image folder loop: symbolic link loop (loop -> loop leads back to itself)" in one_error_line(child)
    child = srfeat_cli(*common, "--data", "set", "--json", "loop.json", cwd=tmp_path)
    assert "--json loop.json exists: pass --overwrite" in one_error_line(child, only=True), child.stderr
    assert "|" not in child.stdout  # refused before any image was scored


def test_a_pipe_or_a_link_to_a_device_in_the_data_folder_is_named_as_skipped(tmp_path: Path) -> None:
    """A pipe, a socket or a link to a device among a --data folder's images was left out without a word (a
    broken link was named); each is named, with what it is, and never opened (a pipe's read waits for a writer)."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(samples.astronaut()[:32, :32]).save(folder / "a.png")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to(os.devnull)
    (folder / "sub").mkdir()  # a subfolder has a warning of its own (`warn_subfolders`)
    child = srfeat_cli("eval", "--model", "bicubic", "--metrics", "psnr", "--device", "cpu", "--data", folder)
    assert child.returncode == 0, child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING: skipped")]
    assert warnings == [
        f"WARNING: skipped {folder / 'fifo.png'}: it is a named pipe (FIFO), not an image file",
        f"WARNING: skipped {folder / 'zero.png'}: it is a character device, not an image file",
    ], child.stderr
    assert "| bicubic | set | 1 | " in child.stdout, child.stdout


def test_links_to_nothing_in_the_data_folder_are_named_as_srfeat_upscale_names_them(tmp_path: Path) -> None:
    """A --data folder's broken link and link loop were both "a symbolic link to nothing (its target is
    missing, or a loop)", where `srfeat upscale` said which and named the target: one wording now, the latter."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(samples.astronaut()[:32, :32]).save(folder / "a.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    (folder / "loop.png").symlink_to("loop.png")
    child = srfeat_cli("eval", "--model", "bicubic", "--metrics", "psnr", "--device", "cpu", "--data", folder)
    assert child.returncode == 0, child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING: skipped")]
    gone = f"broken symbolic link (its target {tmp_path / 'deleted.png'} does not exist)"
    loop = f"symbolic link loop ({folder / 'loop.png'} -> loop.png leads back to itself)"
    assert warnings == [
        f"WARNING: skipped {folder / 'gone.png'}: {gone}",
        f"WARNING: skipped {folder / 'loop.png'}: {loop}",
    ], child.stderr
    upscaled = srfeat_cli("upscale", folder / "gone.png", "-o", tmp_path / "out")
    assert f"input {folder / 'gone.png'}: broken symbolic link (its target" in one_error_line(upscaled)


def test_a_data_folder_of_only_a_pipe_is_not_said_to_hold_only_hidden_files(tmp_path: Path) -> None:
    """A --data folder that held only a pipe was refused as holding "no image files (only hidden ones)"."""
    folder = tmp_path / "set"
    folder.mkdir()
    os.mkfifo(folder / "fifo.png")
    child = srfeat_cli("eval", "--model", "bicubic", "--metrics", "psnr", "--device", "cpu", "--data", folder)
    line = one_error_line(child)
    assert f"{folder} holds no image files, only 1 entry(s) that are not files (named above)" in line, line
    assert f"WARNING: skipped {folder / 'fifo.png'}: it is a named pipe (FIFO)" in child.stderr, child.stderr
