"""The SRFeat generator: parameter count, shapes, and the paper's long-range skip wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.weights import generator_from_state, load_generator, save_generator


def test_paper_generator_has_6187907_parameters() -> None:
    generator = SRFeatGenerator()
    assert sum(p.numel() for p in generator.parameters()) == 6_187_907


@pytest.mark.parametrize("h, w", [(7, 10), (8, 5), (6, 6)])
def test_generator_maps_batch_to_4x(h: int, w: int) -> None:
    generator = SRFeatGenerator().eval()
    with torch.no_grad():
        out = generator(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert torch.isfinite(out).all()


def test_scale_2_has_one_upsampling_stage() -> None:
    generator = SRFeatGenerator(scale=2, num_features=8, num_blocks=2).eval()
    assert len(generator.upsampler) == 1
    assert generator(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)


def test_long_range_skips_are_the_papers_wiring() -> None:
    """1x1 convs on the outputs of blocks 1..15, summed with the output of block 16."""
    generator = SRFeatGenerator(num_features=8, num_blocks=16).eval()
    assert len(generator.long_skips) == 15
    for skip in generator.long_skips:
        assert skip.kernel_size == (1, 1) and skip.bias is None
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        h = generator.head(x)
        block_outputs = []
        for block in generator.body:
            h = block(h)
            block_outputs.append(h)
        skipped = zip(generator.long_skips, block_outputs[:-1], strict=True)
        expected = block_outputs[-1] + sum(skip(out) for skip, out in skipped)
        torch.testing.assert_close(generator.features(x), expected)
        # and each skip matters: zeroing one changes the result
        generator.long_skips[3].weight.zero_()
        assert not torch.allclose(generator.features(x), expected)


def test_generator_works_in_unit_range_around_minus_one_one() -> None:
    """The API takes [0, 1]; the network sees [-1, 1], as in the authors' code."""
    generator = SRFeatGenerator(num_features=8, num_blocks=2).eval()
    seen: list[torch.Tensor] = []
    generator.head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    generator(torch.zeros(1, 3, 4, 4))
    assert torch.all(seen[0] == -1.0)


def test_state_dict_names_explain_themselves() -> None:
    keys = set(SRFeatGenerator(num_features=8, num_blocks=3).state_dict())
    for key in (
        "head.weight",
        "body.0.conv1.weight",
        "body.2.bn2.running_mean",
        "long_skips.1.weight",
        "upsampler.1.conv.weight",
        "tail.weight",
    ):
        assert key in keys


@pytest.mark.parametrize("scale, features, blocks", [(4, 8, 2), (2, 16, 3), (4, 12, 1)])
def test_safetensors_round_trip_rebuilds_the_architecture(tmp_path, scale: int, features: int, blocks: int) -> None:
    generator = SRFeatGenerator(scale=scale, num_features=features, num_blocks=blocks).eval()
    path = tmp_path / "g.safetensors"
    save_generator(generator, path)
    loaded = load_generator(path)
    assert (loaded.scale, loaded.num_features, loaded.num_blocks) == (scale, features, blocks)
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), generator(x))


def test_foreign_state_dict_fails_with_a_message() -> None:
    from srfeat.errors import WeightsError

    with pytest.raises(WeightsError, match="not an SRFeat generator"):
        generator_from_state({"conv.weight": torch.zeros(3, 3, 3, 3)})
    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["tail.weight"] = torch.zeros(1, 8, 3, 3)
    with pytest.raises(WeightsError, match="does not match"):
        generator_from_state(state)


def test_pixels_of_the_wrong_kind_and_empty_networks_are_refused() -> None:
    """uint8 pixels were promoted to 0..255 floats and gave garbage; 0 features built an empty network."""
    generator = SRFeatGenerator(scale=4, num_features=8, num_blocks=1)
    with pytest.raises(TypeError, match=r"float pixels in \[0, 1\], got torch.uint8: use x.float\(\) / 255"):
        generator(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) batches, got \(1, 1, 4, 4\)"):
        generator(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="num_features must be at least 1, got 0"):
        SRFeatGenerator(num_features=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scale": 4.0}, "scale must be a whole number, got float 4.0"),
        ({"num_blocks": 2.5}, "num_blocks must be a whole number"),
        ({"num_features": "8"}, "num_features must be a whole number, got str '8'"),
        ({"scale": 3}, "scale must be 2 or 4, got 3"),
    ],
)
def test_constructor_arguments_of_the_wrong_kind_are_srfeat_errors(arguments: dict, message: str) -> None:
    """4.0 or "8" failed inside torch (TypeError: 'float' object cannot be interpreted as an integer);
    a wrong value was a plain ValueError, not the `SRFeatError` every input error of the API is."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=message):
        SRFeatGenerator(**arguments)


def test_a_tensor_given_as_a_size_is_quoted_on_one_line() -> None:
    """The message quoted the value's repr, which for a tensor spans lines: "got Tensor tensor([[1., 1.],\n..."."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError) as refused:
        SRFeatGenerator(num_features=torch.ones(3, 3))  # pyright: ignore[reportArgumentType]
    assert str(refused.value).startswith("num_features must be a whole number, got Tensor tensor([[1., 1., 1.],")
    assert "\n" not in str(refused.value)


def test_pixels_of_the_wrong_kind_are_srfeat_errors_of_the_builtin_kinds() -> None:
    from srfeat.errors import InvalidImageError, NotAnImageError

    generator = SRFeatGenerator(num_features=4, num_blocks=1)
    with pytest.raises(NotAnImageError, match="float pixels"):  # a TypeError, as before
        generator(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(InvalidImageError, match=r"takes \(N, 3, H, W\) batches"):  # a ValueError
        generator(torch.zeros(3, 4, 4))
    # numpy's integers are accepted as Python's are, though the annotation says int.
    assert SRFeatGenerator(scale=np.int64(2), num_features=4, num_blocks=1).scale == 2  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("shape", [(1, 3, 0, 8), (2, 3, 5, 0), (1, 3, 0, 0)])
def test_an_empty_image_is_a_one_line_error_not_the_head_convs(shape: tuple[int, ...]) -> None:
    """It was the 9x9 head conv's "Calculated padded input size per channel: (8 x 16). Kernel size: (9 x 9)."""
    from srfeat.errors import InvalidImageError

    generator = SRFeatGenerator(num_features=8, num_blocks=1).eval()
    with pytest.raises(InvalidImageError, match=r"takes images of at least 1x1 pixels, got \(") as refused:
        generator(torch.rand(shape))
    assert str(tuple(shape)) in str(refused.value)
    assert generator(torch.rand(0, 3, 2, 2)).shape == (0, 3, 8, 8)  # an empty batch of images is no error
