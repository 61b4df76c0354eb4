"""Image files and the four datasets, on scikit-image sample photos written to temporary folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples

from srfeat.data.benchmark import BenchmarkDataset
from srfeat.data.datasets import (
    CenterCropDataset,
    PairedPatchDataset,
    RandomCropDataset,
    bicubic_downscale,
    center_crop,
    mod_crop,
)
from srfeat.data.io import list_images, read_image, read_raw_image, write_png
from srfeat.errors import ImageReadError, InvalidImageError, InvalidOptionError, SRFeatError


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return tensor.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    """Two photos big enough for 96 px patches (one of them an odd size) and one too small."""
    folder = tmp_path / "photos"
    write_png(folder / "chelsea.png", samples.chelsea()[:150, :203])  # 150x203: odd width
    write_png(folder / "coffee.png", samples.coffee()[::4, ::4])  # 100x150
    write_png(folder / "tiny.png", samples.astronaut()[:40, :60])
    return folder


def add_bad_files(folder: Path) -> None:
    """A truncated PNG and a text file, among the good images."""
    good = (folder / "chelsea.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image\n")


# ----------------------------------------------------------------------------- io


def test_read_image_formats_and_gray(tmp_path: Path) -> None:
    rgb = samples.astronaut()[:64, :48]
    for suffix in (".png", ".bmp", ".tif", ".webp"):
        options = {"lossless": True} if suffix == ".webp" else {}
        # pyright checks the unpacked options against save's `format` too, as if a key could be "format".
        Image.fromarray(rgb).save(tmp_path / f"a{suffix}", **options)  # pyright: ignore[reportArgumentType]
        np.testing.assert_array_equal(read_image(tmp_path / f"a{suffix}"), rgb)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - rgb).mean() < 4
    write_png(tmp_path / "gray.png", samples.camera()[:20, :30])
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and (gray[..., 0] == gray[..., 2]).all()
    raw = read_raw_image(tmp_path / "gray.png")
    assert raw.array.shape == (20, 30, 1) and raw.mode == "L"


def test_read_image_sixteen_bit_gray_and_alpha(tmp_path: Path) -> None:
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    raw = read_raw_image(tmp_path / "deep.png")
    assert raw.array.dtype == np.uint16 and raw.array[..., 0].tolist() == values.tolist()
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[..., 0], np.rint(values / 257).astype(np.uint8))
    rgba = np.dstack([samples.astronaut()[:8, :8], np.full((8, 8), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert read_raw_image(tmp_path / "alpha.png").has_alpha
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), rgba[..., :3])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(samples.astronaut()[:40, :64])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert read_image(tmp_path / "phone.jpg").shape == (64, 40, 3)


def test_bad_files_raise_image_read_error_naming_the_file(photo_folder: Path) -> None:
    add_bad_files(photo_folder)
    for name in ("truncated.png", "notes.txt", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(photo_folder / name)
    assert [path.name for path in list_images(photo_folder)] == [
        "chelsea.png",
        "coffee.png",
        "notes.txt",
        "tiny.png",
        "truncated.png",
    ]
    with pytest.raises(ImageReadError, match="not found"):
        list_images(photo_folder / "nowhere")
    with pytest.raises(ImageReadError, match="image folder is a file, not a folder: .*chelsea.png"):
        list_images(photo_folder / "chelsea.png")  # before: 'not found', though it is right there


# ----------------------------------------------------------------------------- protocol helpers


def test_mod_crop_and_protocol_downscale() -> None:
    image = samples.chelsea()[:150, :203]
    cropped = mod_crop(image, 4)
    assert cropped.shape == (148, 200, 3)
    np.testing.assert_array_equal(cropped, image[:148, :200])
    lr = bicubic_downscale(cropped, 4)
    assert lr.shape == (37, 50, 3) and lr.dtype == np.uint8
    with pytest.raises(InvalidImageError, match="mod_crop"):
        bicubic_downscale(image, 4)


@pytest.mark.parametrize("scale", [0, 4.0, "4", True, None])
def test_a_protocol_scale_that_is_not_a_whole_number_is_one_line(scale: object) -> None:
    """mod_crop(hr, 4.0) was a TypeError from slicing, mod_crop(hr, 0) and bicubic_downscale(hr, 0) a
    ZeroDivisionError, bicubic_downscale(hr, "4") a TypeError from %."""
    image = samples.chelsea()[:16, :16]
    for helper in (mod_crop, bicubic_downscale):
        with pytest.raises(InvalidOptionError, match="scale must be a whole number of at least 1, got"):
            helper(image, scale)  # pyright: ignore[reportArgumentType]
    # numpy's integers are accepted as Python's are, though the annotation says int.
    assert mod_crop(image, np.int64(3)).shape == (15, 15, 3)  # pyright: ignore[reportArgumentType]


# ----------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("in_memory", [False, True])
def test_center_crop_dataset(photo_folder: Path, in_memory: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        dataset = CenterCropDataset([photo_folder], hr_patch_size=96, scale=4, in_memory=in_memory)
    assert len(dataset) == 2  # tiny.png is smaller than the patch
    assert "1 image(s) smaller than 96 px skipped" in caplog.text
    item = dataset[0]
    assert item["name"] == "chelsea"
    assert item["hr"].shape == (3, 96, 96) and item["lr"].shape == (3, 24, 24)
    assert item["hr"].dtype == torch.float32 and 0 <= item["lr"].min() and item["lr"].max() <= 1
    expected_hr = center_crop(samples.chelsea()[:150, :203], 96)
    np.testing.assert_array_equal(_to_uint8(item["hr"]), expected_hr)
    np.testing.assert_array_equal(_to_uint8(item["lr"]), bicubic_downscale(expected_hr, 4))


def test_center_crop_dataset_skips_unreadable_files(photo_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    add_bad_files(photo_folder)
    with caplog.at_level(logging.WARNING):
        dataset = CenterCropDataset(photo_folder, hr_patch_size=96, in_memory=True)
    assert [dataset[i]["name"] for i in range(len(dataset))] == ["chelsea", "coffee"]
    assert "truncated.png" in caplog.text and "notes.txt" in caplog.text


def test_a_folder_of_only_undecodable_images_is_refused_when_the_dataset_is_built(photo_folder: Path) -> None:
    # Their headers read, so the scan kept them; the first training step found none decodes, after
    # --overwrite had removed the run folder's previous run.
    for path in list_images(photo_folder):
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])
    with pytest.raises(SRFeatError, match="none of the images could be read"):
        CenterCropDataset(photo_folder, hr_patch_size=96)
    with pytest.raises(SRFeatError, match="none of the images could be read"):
        RandomCropDataset(photo_folder, hr_patch_size=96, in_memory=False)


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (CenterCropDataset, {"in_memory": "no"}, "in_memory must be True or False, got str 'no'"),
        (CenterCropDataset, {"in_memory": 1}, "in_memory must be True or False, got int 1"),
        (
            RandomCropDataset,
            {"in_memory": "no"},
            "in_memory must be True, False or None (held if it fits), got str 'no'",
        ),
        (
            CenterCropDataset,
            {"hr_patch_size": "96"},
            "hr_patch_size must be a whole number, got str '96'",
        ),
        (
            RandomCropDataset,
            {"hr_patch_size": 96.0},
            "hr_patch_size must be a whole number, got float 96.0",
        ),
        (
            CenterCropDataset,
            {"hr_patch_size": True},
            "hr_patch_size must be a whole number, got bool True",
        ),
        (RandomCropDataset, {"scale": "4"}, "scale must be a whole number of at least 1, got str '4'"),
        (CenterCropDataset, {"scale": 0}, "scale must be a whole number of at least 1, got 0"),
        (RandomCropDataset, {"repeats": "2"}, "repeats must be a whole number of at least 1, got str '2'"),
        (RandomCropDataset, {"repeats": 1.5}, "repeats must be a whole number of at least 1, got float 1.5"),
    ],
)
def test_dataset_options_of_the_wrong_kind_are_refused_in_one_line(
    photo_folder: Path, make: type, options: dict[str, object], message: str
) -> None:
    """in_memory="no" held every image (a string is true); a patch size of "96" was a TypeError from a
    comparison, 96.0 one from slicing, a repeats of 1.5 one from len(): each is now refused before a file is read."""
    decoded: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        from srfeat.data import image_folders

        patch.setattr(image_folders, "read_image", lambda path: decoded.append(path) or read_image(path))
        with pytest.raises(InvalidOptionError) as refused:
            make(photo_folder, **{"hr_patch_size": 96, **options})
    assert str(refused.value) == message and decoded == []


def test_whole_numbers_of_numpy_and_patch_sizes_off_the_scale(photo_folder: Path) -> None:
    # numpy's integers and bool are accepted as Python's are, though the annotations say int and bool.
    dataset = CenterCropDataset(photo_folder, hr_patch_size=np.int64(96), scale=np.int32(4), in_memory=np.bool_(True))  # pyright: ignore[reportArgumentType]
    assert type(dataset.hr_patch_size) is int and type(dataset.scale) is int and dataset.cache is not None
    assert dataset[0]["lr"].shape == (3, 24, 24)
    for size in (90, 0, -4):  # 0 was "a whole number of at least 1, got int 0"; the rule is the multiple
        with pytest.raises(InvalidOptionError) as refused:
            RandomCropDataset(photo_folder, hr_patch_size=size)
        assert str(refused.value) == f"hr_patch_size must be a positive multiple of scale (4), got {size}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": "4"}, "scale must be a whole number of at least 1, got str '4'"),
        ({"scale": 4, "hr_patch_size": "32"}, "hr_patch_size must be a whole number, got str '32'"),
    ],
)
def test_paired_patch_dataset_options_of_the_wrong_kind_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    """A scale of "4" was a TypeError from the first size check, a patch size of "32" a mismatch in every pair."""
    hr = samples.astronaut()[:32, :32]
    write_png(tmp_path / "HR" / "a.png", hr)
    write_png(tmp_path / "LR" / "a.png", bicubic_downscale(hr, 4))
    with pytest.raises(InvalidOptionError) as refused:
        PairedPatchDataset(tmp_path, **options)  # pyright: ignore[reportArgumentType]
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": "4"}, "scale must be a whole number of at least 1, got str '4'"),
        ({"limit": "2"}, "limit must be a whole number of at least 1, got str '2'"),
        ({"limit": 0}, "limit must be a whole number of at least 1, got 0"),
    ],
)
def test_benchmark_dataset_options_of_the_wrong_kind_are_refused(
    photo_folder: Path, options: dict[str, object], message: str
) -> None:
    """A scale of "4" was a TypeError from the memory estimate; a limit of 0 said the folder "holds no image files"."""
    with pytest.raises(InvalidOptionError) as refused:
        BenchmarkDataset(photo_folder, **options)  # pyright: ignore[reportArgumentType]
    assert str(refused.value) == message


def test_random_crop_dataset_gives_transformed_crops_with_protocol_lr(tmp_path: Path) -> None:
    source = samples.coffee()[100:164, 200:272]  # 64x72
    write_png(tmp_path / "src" / "coffee.png", source)
    dataset = RandomCropDataset(tmp_path / "src", hr_patch_size=32, scale=4, repeats=20)
    assert len(dataset) == 20
    # Every HR patch must be one of the 8 flips/rotations of some 32x32 window of the source.
    windows = np.lib.stride_tricks.sliding_window_view(source, (32, 32), axis=(0, 1))  # (33, 41, 3, 32, 32)
    orientations = set()
    for index in range(len(dataset)):
        item = dataset[index]
        hr, lr = _to_uint8(item["hr"]), _to_uint8(item["lr"])
        found = None
        for flip in (False, True):
            for turns in range(4):
                # Undo the transform: rotate back, then unflip.
                candidate = np.rot90(hr, -turns)
                candidate = candidate[:, ::-1] if flip else candidate
                match = np.argwhere((windows == candidate.transpose(2, 0, 1)).all(axis=(2, 3, 4)))
                if len(match):
                    found = (flip, turns)
        assert found is not None
        orientations.add(found)
        # LR as the protocol makes it (float32 on the fly may differ from float64 by one level at a rounding tie).
        assert lr.shape == (8, 8, 3)
        assert np.abs(lr.astype(int) - bicubic_downscale(hr, 4).astype(int)).max() <= 1
    assert len(orientations) >= 4  # random orientations, not one fixed transform


def test_random_crop_dataset_reads_on_access_a_folder_too_big_to_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Training (data.kind random_crop) decoded every image at start whatever the folder's size: a
    # COCO-sized folder (about 100 GB decoded) took all memory, and no config key could turn it off.
    from srfeat.data import datasets

    for name, photo in (("coffee", samples.coffee()), ("chelsea", samples.chelsea())):
        write_png(tmp_path / "src" / f"{name}.png", photo)
    decoded = sum(photo.size for photo in (samples.coffee(), samples.chelsea()))
    monkeypatch.setattr(datasets, "host_available_memory", lambda: 2 * decoded - 1)
    with caplog.at_level(logging.INFO, logger="srfeat"):
        on_access = RandomCropDataset(tmp_path / "src", hr_patch_size=32, scale=4)
    assert on_access.cache is None and "each is read when a crop of it is drawn" in caplog.text
    monkeypatch.setattr(datasets, "host_available_memory", lambda: 2 * decoded)
    held = RandomCropDataset(tmp_path / "src", hr_patch_size=32, scale=4)
    assert held.cache is not None
    for index in range(len(held)):  # the same crops either way
        torch.manual_seed(index)
        expected = held[index]["hr"]
        torch.manual_seed(index)
        assert torch.equal(on_access[index]["hr"], expected)


def test_paired_patch_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "patches"
    hr = samples.astronaut()[:32, :32]
    for name in ("a", "b"):
        write_png(root / "HR" / f"{name}.png", hr)
        write_png(root / "LR" / f"{name}.png", bicubic_downscale(hr, 4))
    write_png(root / "HR" / "orphan.png", hr)
    with caplog.at_level(logging.WARNING):
        dataset = PairedPatchDataset(root, scale=4, hr_patch_size=32)
    assert "orphan.png has no LR partner" in caplog.text
    assert len(dataset) == 2
    item = dataset[1]
    assert item["name"] == "b" and item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    np.testing.assert_array_equal(_to_uint8(item["hr"]), hr)
    with pytest.raises(SRFeatError, match="not 2x its LR"):
        PairedPatchDataset(root, scale=2)[0]
    with pytest.raises(SRFeatError, match="srfeat prepare"):
        PairedPatchDataset(tmp_path / "photos-without-pairs")


def test_paired_patch_dataset_replaces_an_unreadable_pair_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A patch cut short (a copy killed half-way) raised ImageReadError in the training step that drew
    # it: a stage-2 run stopped hours in, losing the steps since its last checkpoint.
    root = tmp_path / "patches"
    photo = samples.astronaut()
    for index, name in enumerate("abc"):
        hr = photo[index * 32 : index * 32 + 32, :32]
        write_png(root / "HR" / f"{name}.png", hr)
        write_png(root / "LR" / f"{name}.png", bicubic_downscale(hr, 4))
    damaged = root / "LR" / "b.png"
    damaged.write_bytes(damaged.read_bytes()[:60])
    dataset = PairedPatchDataset(root, scale=4, hr_patch_size=32)
    with caplog.at_level(logging.WARNING):
        names = [dataset[i]["name"] for i in range(3)] + [dataset[1]["name"]]
    assert names == ["a", "c", "c", "c"]
    assert caplog.text.count("b.png") == 1  # said once
    for name in "ac":
        (root / "HR" / f"{name}.png").write_bytes(b"not a png")
    with pytest.raises(SRFeatError, match="none of the HR/LR patch pairs could be read"):
        dataset[0]


def test_benchmark_dataset_reports_bad_files_and_keeps_good_ones(
    photo_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_bad_files(photo_folder)
    with caplog.at_level(logging.WARNING):
        dataset = BenchmarkDataset([photo_folder], scale=4)
    assert dataset.names == ["chelsea", "coffee", "tiny"]
    assert sorted(path.name for path in dataset.skipped) == ["notes.txt", "truncated.png"]
    assert "truncated.png" in caplog.text and "notes.txt" in caplog.text
    item = dataset[0]
    assert item["hr"].shape == (3, 148, 200) and item["lr"].shape == (3, 37, 50)
    assert item["dataset"] == "photos"
    np.testing.assert_array_equal(item["lr_uint8"], bicubic_downscale(item["hr_uint8"], 4))


def test_benchmark_dataset_refuses_a_folder_too_big_to_hold_before_decoding_it(
    photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three photos take 150*203 + 100*150 + 40*60 pixels, 3 bytes each and 1/16 more for the LR:
    refused from the headers when that is over half the memory, and not one image decoded."""
    from srfeat.data import benchmark

    needed = (150 * 203 + 100 * 150 + 40 * 60) * 3 * (1 + 1 / 16)
    decoded: list[Path] = []
    reader = benchmark.read_image_noting_losses
    monkeypatch.setattr(benchmark, "read_image_noting_losses", lambda path: decoded.append(path) or reader(path))
    monkeypatch.setattr(benchmark, "host_available_memory", lambda: int(2 * needed) - 2)
    with pytest.raises(SRFeatError, match=r"take about 0\.0 GB decoded, .*split the folder") as caught:
        BenchmarkDataset(photo_folder, scale=4)
    assert "\n" not in str(caught.value) and decoded == []
    # held, and beside them the largest image's scoring (the protocol's float64 bicubic), which is more here
    scoring = 150 * 203 * 3 * benchmark.EVALUATION_WORKING_BYTES
    monkeypatch.setattr(benchmark, "host_available_memory", lambda: int(needed + scoring) - 2)
    with pytest.raises(SRFeatError, match=r"chelsea\.png: scoring this 0\.0305-megapixel image") as caught:
        BenchmarkDataset(photo_folder, scale=4)
    assert "\n" not in str(caught.value) and decoded == []
    monkeypatch.setattr(benchmark, "host_available_memory", lambda: int(needed + scoring) + 2)
    assert len(BenchmarkDataset(photo_folder, scale=4)) == 3


def test_benchmark_dataset_decodes_only_the_images_a_limit_keeps(
    photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srfeat.data import benchmark

    add_bad_files(photo_folder)  # truncated.png sorts after tiny.png; notes.txt is not listed
    decoded: list[str] = []
    reader = benchmark.read_image_noting_losses
    monkeypatch.setattr(benchmark, "read_image_noting_losses", lambda path: decoded.append(path.name) or reader(path))
    dataset = BenchmarkDataset(photo_folder, scale=4, limit=2)
    assert dataset.names == ["chelsea", "coffee"] and decoded == ["chelsea.png", "coffee.png"]


def test_links_to_nothing_in_an_image_folder_are_named_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_png(tmp_path / "a.png", samples.astronaut()[:8, :8])
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    (tmp_path / "loop1.png").symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(tmp_path / "loop1.png")
    with caplog.at_level(logging.WARNING):
        assert list_images(tmp_path) == [tmp_path / "a.png"]
    skipped = sorted(record.getMessage().split(":")[0] for record in caplog.records)
    assert skipped == [f"skipped {tmp_path / name}" for name in ("gone.png", "loop1.png", "loop2.png")]
