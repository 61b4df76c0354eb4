"""The stage-1 and stage-2 steps: who learns what, and from which loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator
from srfeat.archs.generator import SRFeatGenerator
from srfeat.archs.vgg import VGG19FeatureExtractor
from srfeat.training.steps import AdversarialTerm, GANStep, PretrainStep

HR_PATCH = 32


@pytest.fixture(scope="module")
def vgg() -> VGG19FeatureExtractor:
    return VGG19FeatureExtractor()


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def make_gan_step(vgg: VGG19FeatureExtractor) -> GANStep:
    generator = SRFeatGenerator(num_features=8, num_blocks=2)
    terms = []
    for name, cls in (("image", ImageDiscriminator), ("feature", FeatureDiscriminator)):
        discriminator = cls(HR_PATCH, base_channels=8, dense_features=16)
        terms.append(AdversarialTerm(name, name, discriminator, torch.optim.Adam(discriminator.parameters(), 1e-3)))  # type: ignore[arg-type]
    return GANStep(generator, torch.optim.Adam(generator.parameters(), 1e-3), vgg, terms)


def test_gan_step_updates_all_three_and_generator_update_leaves_discriminators(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg)
    generator_before = params(step.generator)
    initial = {term.name: params(term.discriminator) for term in step.terms}
    at_own_step: dict[str, bool] = {}
    for term in step.terms:
        # When a discriminator's optimizer steps, the generator has already been updated:
        # its weights must still be the initial ones then.
        original_step = term.optimizer.step

        def record_then_step(*args, _term=term, _original=original_step, **kwargs):  # type: ignore[no-untyped-def]
            at_own_step[_term.name] = not changed(initial[_term.name], _term.discriminator)
            assert changed(generator_before, step.generator), "generator must step before discriminators"
            return _original(*args, **kwargs)

        term.optimizer.step = record_then_step  # type: ignore[method-assign]

    losses = step(torch.rand(2, 3, HR_PATCH // 4, HR_PATCH // 4), torch.rand(2, 3, HR_PATCH, HR_PATCH))
    assert at_own_step == {"image": True, "feature": True}
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


def test_generator_loss_is_perceptual_plus_weighted_adversarial(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg)
    losses = step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, HR_PATCH, HR_PATCH))
    expected = losses["loss/perceptual"] + 1e-3 * (
        losses["loss/adversarial_image"] + losses["loss/adversarial_feature"]
    )
    torch.testing.assert_close(losses["loss/generator"], expected)


def test_generator_batchnorm_uses_running_statistics_in_stage_2_by_default(vgg: VGG19FeatureExtractor) -> None:
    step = make_gan_step(vgg)
    running_mean = step.generator.body[0].bn1.running_mean.clone()
    step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, HR_PATCH, HR_PATCH))
    assert torch.equal(step.generator.body[0].bn1.running_mean, running_mean)
    step.generator_bn_eval = False
    step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, HR_PATCH, HR_PATCH))
    assert not torch.equal(step.generator.body[0].bn1.running_mean, running_mean)


def test_pretrain_step_lowers_mse_on_a_fixed_batch() -> None:
    generator = SRFeatGenerator(num_features=8, num_blocks=2)
    step = PretrainStep(generator, torch.optim.Adam(generator.parameters(), 1e-3))
    lr, hr = torch.rand(4, 3, 6, 6), torch.rand(4, 3, 24, 24)
    first = step(lr, hr)["loss/pixel"]
    for _ in range(20):
        last = step(lr, hr)["loss/pixel"]
    assert last < first
