"""data.image_scales: random crops drawn from the training images shrunk by size factors (how VDSR-era networks
were trained on the 291 images); the checks of the factors, which data.image_aspects shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from skimage import data as samples
from training_helpers import tiny_config, train_in_process

from srfeat.data.datasets import RandomCropDataset
from srfeat.data.resize import imresize_np
from srfeat.errors import ConfigError, InvalidOptionError
from srfeat.training.config import config_from_dict
from srfeat.training.sampling import build_train_dataset

PATCH = 32
IMAGE = np.ascontiguousarray(samples.astronaut()[100:164, 150:214])  # 64 x 64, hair and the flag


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(IMAGE).save(folder / "astronaut.png")
    return folder


def orientations(array: np.ndarray) -> list[np.ndarray]:
    """The eight flips and 90-degree rotations of an (H, W, C) array."""
    return [np.rot90(each, turns) for each in (array, array[:, ::-1]) for turns in range(4)]


def where_from(crop: np.ndarray, images: dict[str, np.ndarray]) -> set[str]:
    """The names of the images of which `crop` (H, W, C uint8), in some orientation, is a crop."""
    found = set()
    for name, image in images.items():
        if min(image.shape[:2]) < min(crop.shape[:2]):
            continue
        windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)
        for oriented in orientations(crop):
            if (windows == oriented).all(axis=(-3, -2, -1)).any():
                found.add(name)
    return found


def hr_crops(dataset: RandomCropDataset, count: int) -> list[np.ndarray]:
    crops = []
    for index in range(count):
        torch.manual_seed(index)
        hr = dataset[index]["hr"]
        crops.append(np.rint(hr.numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
    return crops


def test_crops_come_from_the_image_at_each_scale_that_leaves_a_patch(image_folder: Path) -> None:
    # 0.5 leaves 32 px, a patch exactly; 0.4 leaves 26 px, too small to draw from
    dataset = RandomCropDataset(image_folder, PATCH, repeats=40, image_scales=[1.0, 0.5, 0.4])
    images = {"whole": IMAGE, "half": imresize_np(IMAGE, 0.5), "0.4": imresize_np(IMAGE, 0.4)}
    assert images["half"].shape == (32, 32, 3)
    sources = [where_from(crop, images) for crop in hr_crops(dataset, 40)]
    assert all(found in ({"whole"}, {"half"}) for found in sources), sources
    assert 8 <= sum(found == {"half"} for found in sources) <= 32  # one of the two usable scales, at random


def test_an_image_is_used_where_its_largest_scale_leaves_a_patch(tmp_path: Path) -> None:
    """Without 1 among the factors, an image the largest one shrinks below a patch is skipped as too small (it
    had no crop to give), and the others are drawn from their shrunk versions only."""
    Image.fromarray(IMAGE).save(tmp_path / "64px.png")  # 0.5: 32 px, a patch
    Image.fromarray(IMAGE[:62, :62]).save(tmp_path / "62px.png")  # 0.5: 31 px
    dataset = RandomCropDataset(tmp_path, PATCH, repeats=5, image_scales=[0.5])
    assert [path.name for path in dataset.images.paths] == ["64px.png"]
    half = imresize_np(IMAGE, 0.5)
    assert all(any(np.array_equal(crop, each) for each in orientations(half)) for crop in hr_crops(dataset, 5))


def test_the_default_scale_draws_the_crops_of_the_images_as_they_are(image_folder: Path) -> None:
    plain = hr_crops(RandomCropDataset(image_folder, PATCH, repeats=10), 10)
    assert all(where_from(crop, {"whole": IMAGE}) == {"whole"} for crop in plain)
    # the same crops with the option at [1.0]: no draw of a scale changes the random sequence
    listed = hr_crops(RandomCropDataset(image_folder, PATCH, repeats=10, image_scales=[1.0]), 10)
    assert all(np.array_equal(a, b) for a, b in zip(plain, listed, strict=True))


@pytest.mark.parametrize(
    "factors",
    [{"image_scales": [1.0, 0.75, 0.5]}, {"image_scales": [1.0, 0.75], "image_aspects": [1.0, 0.7]}],
    ids=["scales", "scales-and-aspects"],
)
def test_images_read_on_access_give_the_crops_of_images_held(image_folder: Path, factors: dict) -> None:
    held = RandomCropDataset(image_folder, PATCH, repeats=12, in_memory=True, **factors)
    read = RandomCropDataset(image_folder, PATCH, repeats=12, in_memory=False, **factors)
    assert all(np.array_equal(a, b) for a, b in zip(hr_crops(held, 12), hr_crops(read, 12), strict=True))


# image_aspects takes factors as image_scales does, and is checked by the same code
FACTOR_KEYS = ["image_scales", "image_aspects"]


@pytest.mark.parametrize("key", FACTOR_KEYS)
@pytest.mark.parametrize(
    "factors, message",
    [
        ([], "{key} must be a non-empty list of size factors"),
        ([1.0, 1.5], r"{key} must hold factors in \(0, 1\] .* got float 1.5"),
        ([0.0], r"{key} must hold factors in \(0, 1\] .* got float 0.0"),
        ([float("nan")], r"{key} must hold factors in \(0, 1\] .* got float nan"),
        (["0.5"], r"{key} must hold factors in \(0, 1\] .* got str '0.5'"),
        ([0.5, 0.5], "{key} lists 0.5 more than once: give each factor once"),
        (0.5, "{key} must be a non-empty list of size factors .*got float 0.5"),
    ],
)
def test_the_dataset_refuses_factors_that_cannot_work(
    image_folder: Path, key: str, factors: object, message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message.format(key=key)):
        RandomCropDataset(image_folder, PATCH, **{key: factors})  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("key", FACTOR_KEYS)
def test_a_run_draws_its_crops_at_the_configured_factors(folders, tmp_path: Path, key: str) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, validation_dir, out, overrides=[f"data.{key}=[1.0, 0.5]"])
    dataset = build_train_dataset(config)
    assert isinstance(dataset, RandomCropDataset) and getattr(dataset, key) == (1.0, 0.5)
    assert train_in_process(config, out).step == 4


@pytest.mark.parametrize("key", FACTOR_KEYS)
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.kind=random_crop", "data.{key}=[1.0, 2.0]"], r"data.{key} must hold factors in \(0, 1\]"),
        (
            ["data.kind=center_crop", "data.{key}=[1.0, 0.5]"],
            "data.{key} augments random crops .*not data.kind center_crop",
        ),
    ],
)
def test_the_config_refuses_factors_that_cannot_work(key: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.format(key=key)):
        config_from_dict({"data": {"train_dirs": ["images"]}}, [each.format(key=key) for each in overrides])


@pytest.mark.parametrize("key", FACTOR_KEYS)
def test_the_cli_refuses_a_factor_above_one_in_one_line(tmp_path: Path, key: str) -> None:
    child = srfeat_cli("train", "configs/dev/stage1.yaml", "--out", tmp_path / "run", f"data.{key}=[1, 1.25]")
    assert f"config key data.{key} must hold factors in (0, 1]" in one_error_line(child)
    assert not (tmp_path / "run").exists()
