"""data.permute_channels: each random crop's red, green and blue put in one of their six orders, HR and LR alike
(the RGB permutation of Yoo et al., 2020)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from skimage import data as samples
from test_image_scales import hr_crops, where_from
from training_helpers import tiny_config, train_in_process

from srfeat.data.datasets import RandomCropDataset
from srfeat.data.protocol import downscale_tensor
from srfeat.errors import ConfigError, InvalidOptionError
from srfeat.training.config import config_from_dict
from srfeat.training.sampling import build_train_dataset

PATCH = 32
ITEMS = 60
# 64 x 64 of hair, skin and the flag: its three channels differ everywhere a crop can fall, so each order of
# them is a different image
IMAGE = np.ascontiguousarray(samples.astronaut()[100:164, 150:214])
ORDERS = list(itertools.permutations(range(3)))


def named(order: tuple[int, ...]) -> str:
    """An order of the channels by their letters: (1, 2, 0) is "GBR"."""
    return "".join("RGB"[channel] for channel in order)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(IMAGE).save(folder / "astronaut.png")
    return folder


def test_each_crop_is_a_crop_of_the_image_in_one_order_of_its_channels(image_folder: Path) -> None:
    dataset = RandomCropDataset(image_folder, PATCH, repeats=ITEMS, permute_channels=True)
    reordered = {named(order): np.ascontiguousarray(IMAGE[..., list(order)]) for order in ORDERS}
    sources = [where_from(crop, reordered) for crop in hr_crops(dataset, ITEMS)]
    assert all(len(found) == 1 for found in sources), sources
    # all six orders, equally likely: each is drawn 10 times in 60 on average
    drawn = [order for found in sources for order in found]
    assert set(drawn) == {named(order) for order in ORDERS}
    assert drawn.count("RGB") < 25


@pytest.mark.parametrize("lr_from", ["crop", "image"])
def test_the_lr_is_permuted_with_its_hr(image_folder: Path, lr_from: str) -> None:
    options = {"repeats": 24, "lr_from": lr_from}
    for index in range(24):
        # the same crop and orientation with and without the option: the permutation is drawn after them
        torch.manual_seed(index)
        plain = RandomCropDataset(image_folder, PATCH, **options)[index]  # pyright: ignore[reportArgumentType]
        torch.manual_seed(index)
        permuted = RandomCropDataset(image_folder, PATCH, permute_channels=True, **options)[index]  # pyright: ignore[reportArgumentType]
        orders = [list(order) for order in ORDERS if torch.equal(permuted["hr"], plain["hr"][list(order)])]
        assert len(orders) == 1
        assert torch.equal(permuted["lr"], plain["lr"][orders[0]])
        if lr_from == "crop":  # the protocol's LR of the permuted crop, as MATLAB downscales each channel alone
            assert torch.equal(permuted["lr"], downscale_tensor(permuted["hr"], 4))


def test_off_keeps_every_crop_in_the_image_colours(image_folder: Path) -> None:
    reordered = {named(order): np.ascontiguousarray(IMAGE[..., list(order)]) for order in ORDERS}
    crops = hr_crops(RandomCropDataset(image_folder, PATCH, repeats=20, permute_channels=False), 20)
    assert all(where_from(crop, reordered) == {"RGB"} for crop in crops)


def test_the_dataset_refuses_a_flag_that_is_not_a_bool(image_folder: Path) -> None:
    with pytest.raises(InvalidOptionError, match="permute_channels must be True or False, got str 'no'"):
        RandomCropDataset(image_folder, PATCH, permute_channels="no")  # pyright: ignore[reportArgumentType]


def test_a_run_trains_on_permuted_pairs(folders, tmp_path: Path) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, validation_dir, out, overrides=["data.permute_channels=true"])
    dataset = build_train_dataset(config)
    assert isinstance(dataset, RandomCropDataset) and dataset.permute_channels
    assert train_in_process(config, out).step == 4


def test_the_config_refuses_the_option_for_kinds_without_random_crops() -> None:
    with pytest.raises(ConfigError, match="data.permute_channels augments random crops .*not data.kind patches"):
        config_from_dict({"data": {"train_dirs": ["patches"], "kind": "patches"}}, ["data.permute_channels=true"])


def test_the_cli_refuses_a_value_that_is_not_a_bool_in_one_line(tmp_path: Path) -> None:
    child = srfeat_cli("train", "configs/dev/stage1.yaml", "--out", tmp_path / "run", "data.permute_channels=maybe")
    assert "data.permute_channels" in one_error_line(child)
    assert not (tmp_path / "run").exists()
