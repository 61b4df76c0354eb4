"""data.image_aspects: random crops drawn from the training images (at each image scale) squeezed in width by
factors, so that the network meets each texture at more widths than heights and the other way round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples
from test_image_scales import hr_crops, where_from

from srfeat.data.datasets import RandomCropDataset
from srfeat.data.resize import imresize, imresize_np
from srfeat.errors import InvalidImageError

PATCH = 32
IMAGE = np.ascontiguousarray(samples.astronaut()[100:164, 150:214])  # 64 x 64, hair and the flag


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(IMAGE).save(folder / "astronaut.png")
    return folder


def squeezed(image: np.ndarray, aspect: float) -> np.ndarray:
    """`image` squeezed in width by `aspect` (MATLAB bicubic, rounded to uint8 once)."""
    return imresize_np(image, size=(image.shape[0], int(np.ceil(image.shape[1] * aspect))))


def test_a_width_alone_is_resized_as_matlab_resizes_to_a_size() -> None:
    narrow = squeezed(IMAGE, 0.75)
    assert narrow.shape == (64, 48, 3) and narrow.dtype == np.uint8
    # the float resize of the same pixels, rounded: the height pass at scale 1 leaves the rows as they are
    floats = imresize(torch.from_numpy(IMAGE.transpose(2, 0, 1).astype(np.float64)), size=(64, 48))
    expected = floats.round().clamp(0, 255).numpy().transpose(1, 2, 0).astype(np.uint8)
    assert np.array_equal(narrow, expected)
    assert np.array_equal(imresize_np(IMAGE, size=(64, 64)), IMAGE)
    with pytest.raises(InvalidImageError, match="exactly one of scale and size"):
        imresize_np(IMAGE, 0.5, size=(32, 32))


def test_crops_come_from_each_squeeze_that_leaves_a_patch(image_folder: Path) -> None:
    # 0.5 leaves 64 x 32, a patch exactly; 0.4 leaves 64 x 26, too narrow to draw from
    dataset = RandomCropDataset(image_folder, PATCH, repeats=40, image_aspects=[1.0, 0.5, 0.4])
    images = {"whole": IMAGE, "narrow": squeezed(IMAGE, 0.5), "0.4": squeezed(IMAGE, 0.4)}
    assert images["narrow"].shape == (64, 32, 3)
    sources = [where_from(crop, images) for crop in hr_crops(dataset, 40)]
    assert all(found in ({"whole"}, {"narrow"}) for found in sources), sources
    assert 8 <= sum(found == {"narrow"} for found in sources) <= 32  # one of the two usable versions, at random


def test_squeezes_apply_to_each_image_scale(image_folder: Path) -> None:
    """The versions are every scale with every aspect that leaves a patch: the half-size image (32 px) has no
    room for a squeeze, the whole one has."""
    dataset = RandomCropDataset(image_folder, PATCH, repeats=60, image_scales=[1.0, 0.5], image_aspects=[1.0, 0.75])
    assert dataset.cache is not None and [tuple(version.shape[1:]) for version in dataset.cache[0]] == [
        (64, 64),
        (64, 48),
        (32, 32),
    ]
    images = {"whole": IMAGE, "narrow": squeezed(IMAGE, 0.75), "half": imresize_np(IMAGE, 0.5)}
    sources = [where_from(crop, images) for crop in hr_crops(dataset, 60)]
    assert {frozenset(found) for found in sources} == {frozenset({name}) for name in images}, sources


def test_the_default_aspect_draws_the_crops_drawn_without_the_option(image_folder: Path) -> None:
    plain = hr_crops(RandomCropDataset(image_folder, PATCH, repeats=10, image_scales=[1.0, 0.5]), 10)
    listed = hr_crops(
        RandomCropDataset(image_folder, PATCH, repeats=10, image_scales=[1.0, 0.5], image_aspects=[1]), 10
    )
    assert all(np.array_equal(a, b) for a, b in zip(plain, listed, strict=True))
