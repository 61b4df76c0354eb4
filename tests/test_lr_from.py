"""data.lr_from: a random crop's LR downscaled from the crop alone ("crop", the authors' patches) or cut from the
image's downscale ("image", as VDSR and MemNet made their training pairs and as a benchmark's LR is)."""

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
from srfeat.data.protocol import downscale_tensor, mod_crop
from srfeat.errors import ConfigError, InvalidOptionError
from srfeat.training.config import config_from_dict
from srfeat.training.sampling import build_train_dataset

PATCH = 32
ITEMS = 48
# 71 x 58: neither side a multiple of 4, so the image is cut to 68 x 56 as a benchmark's HR is, and a 32 px crop
# has room for 10 x 7 positions on the LR grid, a third of them at an edge of the image
IMAGE = np.ascontiguousarray(samples.astronaut()[90:161, 150:208])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(IMAGE).save(folder / "astronaut.png")
    return folder


def oriented(image: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    return torch.rot90(image.flip(-1) if flip else image, turns, dims=(-2, -1))


def whole_image_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every (HR, LR) pair of a 32 px crop on the LR grid of IMAGE's downscale, in each of the eight orientations."""
    hr_image = torch.from_numpy(mod_crop(IMAGE, 4).transpose(2, 0, 1).copy()).float().div_(255.0)
    lr_image = downscale_tensor(hr_image, 4)
    pairs = []
    for top in range(0, hr_image.shape[1] - PATCH + 1, 4):
        for left in range(0, hr_image.shape[2] - PATCH + 1, 4):
            hr = hr_image[:, top : top + PATCH, left : left + PATCH]
            lr = lr_image[:, top // 4 : (top + PATCH) // 4, left // 4 : (left + PATCH) // 4]
            pairs += [
                (oriented(hr, flip, turns), oriented(lr, flip, turns)) for flip in (False, True) for turns in range(4)
            ]
    return pairs


def items(dataset: RandomCropDataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return [(item["hr"], item["lr"]) for item in (dataset[index] for index in range(len(dataset)))]


def test_image_cuts_each_lr_crop_from_the_downscale_of_the_whole_image(image_folder: Path) -> None:
    pairs = whole_image_pairs()
    drawn = items(RandomCropDataset(image_folder, PATCH, repeats=ITEMS, lr_from="image"))
    for hr, lr in drawn:
        matches = [expected_lr for expected_hr, expected_lr in pairs if torch.equal(hr, expected_hr)]
        assert matches, "an HR crop off the LR grid of the image cut to a multiple of 4"
        assert any(torch.equal(lr, expected) for expected in matches)
    # the crop at the image's corner, where the downscale pads the image itself, was among those drawn
    assert any(torch.equal(hr, expected) for hr, _ in drawn for expected, _ in pairs[:8])


def test_crop_downscales_the_crop_alone_whose_lr_edges_blur_a_mirror(image_folder: Path) -> None:
    assert all(torch.equal(lr, downscale_tensor(hr, 4)) for hr, lr in items(RandomCropDataset(image_folder, PATCH)))
    # what "image" changes: away from the image's edges, the two outer LR pixels on each side of a crop's own
    # downscale differ from the image's, and those further in are the same
    hr, lr = whole_image_pairs()[8 * 8]  # the crop at (4, 4) of the image, as it is
    own = downscale_tensor(hr, 4)
    assert torch.equal(own[:, 2:-2, 2:-2], lr[:, 2:-2, 2:-2])
    assert not torch.equal(own[:, :, :2], lr[:, :, :2]) and not torch.equal(own[:, :, -2:], lr[:, :, -2:])


def test_images_read_on_access_give_the_pairs_of_images_held(image_folder: Path) -> None:
    options = {"repeats": 12, "image_scales": [1.0, 0.8], "lr_from": "image"}
    held = items(RandomCropDataset(image_folder, PATCH, in_memory=True, **options))
    read = items(RandomCropDataset(image_folder, PATCH, in_memory=False, **options))
    assert all(
        torch.equal(a, b) for pair, other in zip(held, read, strict=True) for a, b in zip(pair, other, strict=True)
    )


def test_the_dataset_refuses_another_source(image_folder: Path) -> None:
    with pytest.raises(InvalidOptionError, match='lr_from must be "crop" or "image", got str \'patch\''):
        RandomCropDataset(image_folder, PATCH, lr_from="patch")  # pyright: ignore[reportArgumentType]


def test_a_run_trains_on_crops_of_the_image_downscale(folders, tmp_path: Path) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, validation_dir, out, overrides=["data.lr_from=image"])
    dataset = build_train_dataset(config)
    assert isinstance(dataset, RandomCropDataset) and dataset.lr_from == "image"
    assert train_in_process(config, out).step == 4


def test_the_config_refuses_lr_from_for_kinds_without_random_crops() -> None:
    with pytest.raises(ConfigError, match="data.lr_from chooses how random crops .*not data.kind center_crop's"):
        config_from_dict({"data": {"train_dirs": ["images"], "kind": "center_crop"}}, ["data.lr_from=image"])


def test_the_cli_refuses_an_unknown_source_in_one_line(tmp_path: Path) -> None:
    child = srfeat_cli("train", "configs/dev/stage1.yaml", "--out", tmp_path / "run", "data.lr_from=whole")
    assert "data.lr_from" in one_error_line(child)
    assert not (tmp_path / "run").exists()
