"""The stage-1 and stage-2 steps: who learns what, and from which loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator
from srfeat.archs.generator import SRFeatGenerator
from srfeat.archs.vgg import VGG19FeatureExtractor
from srfeat.losses import adversarial_loss
from srfeat.training.networks import DiscriminatorKind, freeze_batchnorm_affine
from srfeat.training.steps import AdversarialTerm, GANStep, PretrainStep, UpdateOrder

HR_PATCH = 32


@pytest.fixture(scope="module")
def vgg() -> VGG19FeatureExtractor:
    return VGG19FeatureExtractor()


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def make_gan_step(
    vgg: VGG19FeatureExtractor,
    kinds: tuple[DiscriminatorKind, ...] = ("image", "feature"),
    weights: dict[str, float] | None = None,
    update_order: UpdateOrder = "discriminators_first",
) -> GANStep:
    generator = SRFeatGenerator(num_features=8, num_blocks=2)
    classes = {"image": ImageDiscriminator, "feature": FeatureDiscriminator}
    terms = []
    for name in kinds:
        discriminator = classes[name](HR_PATCH, base_channels=8, dense_features=16)
        optimizer = torch.optim.Adam(discriminator.parameters(), 1e-3)
        terms.append(AdversarialTerm(name, name, discriminator, optimizer, (weights or {}).get(name, 1e-3)))
    return GANStep(generator, torch.optim.Adam(generator.parameters(), 1e-3), vgg, terms, update_order=update_order)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(2, 3, HR_PATCH // 4, HR_PATCH // 4), torch.rand(2, 3, HR_PATCH, HR_PATCH)


@pytest.mark.parametrize("update_order", ["discriminators_first", "generator_first"])
def test_gan_step_updates_all_three_in_the_configured_order(
    vgg: VGG19FeatureExtractor, update_order: UpdateOrder
) -> None:
    step = make_gan_step(vgg, update_order=update_order)
    generator_before = params(step.generator)
    initial = {term.name: params(term.discriminator) for term in step.terms}
    # For each optimizer step: which networks had already moved when it ran.
    seen: dict[str, dict[str, bool]] = {}

    def recording(name: str, optimizer: torch.optim.Optimizer) -> None:
        original = optimizer.step

        def record_then_step(*args, **kwargs):
            seen[name] = {"generator": changed(generator_before, step.generator)}
            seen[name].update({t.name: changed(initial[t.name], t.discriminator) for t in step.terms})
            return original(*args, **kwargs)

        optimizer.step = record_then_step

    recording("generator", step.generator_optimizer)
    for term in step.terms:
        recording(term.name, term.optimizer)

    losses = step(*batch())
    if update_order == "discriminators_first":
        # the authors' order: both discriminators learn first, then the generator against them
        assert seen["image"] == {"generator": False, "image": False, "feature": False}
        assert seen["feature"] == {"generator": False, "image": True, "feature": False}
        assert seen["generator"] == {"generator": False, "image": True, "feature": True}
    else:
        assert seen["generator"] == {"generator": False, "image": False, "feature": False}
        # each discriminator steps after the generator, and the generator's step left it alone
        assert seen["image"] == {"generator": True, "image": False, "feature": False}
        assert seen["feature"] == {"generator": True, "image": True, "feature": False}
    assert changed(generator_before, step.generator)
    for term in step.terms:
        assert changed(initial[term.name], term.discriminator), f"{term.name} discriminator did not learn"
    for key in (
        "loss/perceptual",
        "loss/adversarial_image",
        "loss/adversarial_feature",
        "loss/discriminator_image",
        "loss/discriminator_feature",
        "loss/generator",
    ):
        assert torch.isfinite(losses[key])


def test_discriminators_first_generator_learns_against_the_updated_discriminators(
    vgg: VGG19FeatureExtractor,
) -> None:
    step = make_gan_step(vgg, kinds=("image",))
    outputs: list[torch.Tensor] = []
    step.generator.register_forward_hook(lambda module, args, output: outputs.append(output.detach()))
    losses = step(*batch())
    discriminator = step.terms[0].discriminator  # as the step left it: updated, before the generator learned
    with torch.no_grad():
        against_updated = adversarial_loss(discriminator(outputs[0] * 2 - 1), is_real=True)
    torch.testing.assert_close(losses["loss/adversarial_image"], against_updated)


def test_image_discriminator_sees_images_in_minus_one_to_one(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg, kinds=("image",))
    seen: list[torch.Tensor] = []
    step.terms[0].discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    lr, hr = batch()
    step(lr, hr)
    torch.testing.assert_close(seen[0], hr * 2 - 1)  # the first input is the real batch
    assert seen[0].min() < -0.9 and seen[0].max() > 0.9


def test_perceptual_loss_and_feature_discriminator_see_conv5_4_over_12_75(vgg: VGG19FeatureExtractor) -> None:
    """docs/fidelity.md: the perceptual loss is the MSE of conv5_4 / 12.75, the feature discriminator's input
    conv5_4 / 12.75, as in the authors' code."""
    step = make_gan_step(vgg, kinds=("feature",))
    outputs: list[torch.Tensor] = []
    step.generator.register_forward_hook(lambda module, args, output: outputs.append(output.detach()))
    seen: list[torch.Tensor] = []
    step.terms[0].discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    lr, hr = batch()
    losses = step(lr, hr)
    with torch.no_grad():
        hr_features, sr_features = vgg(hr) / 12.75, vgg(outputs[0]) / 12.75
    torch.testing.assert_close(seen[0], hr_features)  # the first input is the real batch
    torch.testing.assert_close(losses["loss/perceptual"], torch.nn.functional.mse_loss(sr_features, hr_features))


@pytest.mark.parametrize("kinds", [("image",), ("feature",), ("image", "feature")], ids=["I", "F", "IF"])
def test_generator_loss_is_perceptual_plus_each_weighted_adversarial_term(
    vgg: VGG19FeatureExtractor, kinds: tuple[DiscriminatorKind, ...]
) -> None:
    weights = {"image": 2e-3, "feature": 5e-4}
    step = make_gan_step(vgg, kinds=kinds, weights=weights)
    losses = step(*batch())
    expected = losses["loss/perceptual"] + sum(weights[k] * losses[f"loss/adversarial_{k}"] for k in kinds)
    torch.testing.assert_close(losses["loss/generator"], expected)
    assert {key.split("_")[-1] for key in losses if key.startswith("loss/discriminator_")} == set(kinds)


def test_frozen_batchnorm_keeps_gamma_and_beta_while_the_rest_learns(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg)
    generator = step.generator
    assert isinstance(generator, SRFeatGenerator)
    assert freeze_batchnorm_affine(generator) == 4  # 2 blocks x 2 BatchNorms
    batchnorm = {k: v.clone() for k, v in generator.state_dict().items() if ".bn" in k}
    convs = params(generator.body)
    for _ in range(2):
        step(*batch())
    after = generator.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in batchnorm.items())
    assert changed(convs, generator.body)


def test_generator_batchnorm_uses_running_statistics_in_stage_2_by_default(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg)
    assert isinstance(step.generator, SRFeatGenerator)
    batchnorm = step.generator.body[0].bn1
    assert batchnorm.running_mean is not None
    running_mean = batchnorm.running_mean.clone()
    step(*batch())
    assert torch.equal(batchnorm.running_mean, running_mean)
    step.generator_bn_eval = False
    step(*batch())
    assert not torch.equal(batchnorm.running_mean, running_mean)


def test_pretrain_step_lowers_mse_on_a_fixed_batch() -> None:
    generator = SRFeatGenerator(num_features=8, num_blocks=2)
    step = PretrainStep(generator, torch.optim.Adam(generator.parameters(), 1e-3))
    lr, hr = torch.rand(4, 3, 6, 6), torch.rand(4, 3, 24, 24)
    first = step(lr, hr)["loss/pixel"]
    later = [step(lr, hr)["loss/pixel"] for _ in range(20)]
    assert later[-1] < first
