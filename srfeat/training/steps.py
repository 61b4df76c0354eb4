"""What one training step does, for each stage (the trainer only loops, logs and saves).

Stage 2 is written once for any number of adversarial terms: SRFeat has two, the image
discriminator (on pixels) and the feature discriminator (on scaled VGG19 conv5_4 features),
each an `AdversarialTerm` that picks its input from the step's `Views`. The paper's variants
use one or both (SRFeat_I, SRFeat_F, SRFeat_IF).

Steps return detached loss tensors, never Python floats, so a step forces no host-device
synchronisation; the trainer reads them when it logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from srfeat.archs.vgg import VGG19FeatureExtractor
from srfeat.losses import (
    ADVERSARIAL_WEIGHT,
    FEATURE_SCALE,
    adversarial_loss,
    discriminator_loss,
    perceptual_loss,
    pixel_loss,
)

AutocastFactory = Callable[[], contextlib.AbstractContextManager[object]]
UpdateOrder = Literal["discriminators_first", "generator_first"]


def no_autocast() -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass
class Views:
    """The tensors of one stage-2 step that discriminators may judge."""

    sr: torch.Tensor
    hr: torch.Tensor
    sr_features: torch.Tensor  # VGG19 conv5_4 of SR, times FEATURE_SCALE
    hr_features: torch.Tensor  # the same for HR, computed once per step

    def pair(self, kind: Literal["image", "feature"]) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, fake) inputs for a discriminator of `kind`.

        The image discriminator sees images in [-1, 1], as in the authors' code, where HR
        patches and the generator's output both live in that range.
        """
        if kind == "image":
            return self.hr * 2.0 - 1.0, self.sr * 2.0 - 1.0
        return self.hr_features, self.sr_features


@dataclass
class AdversarialTerm:
    """One discriminator with its optimizer and its weight in the generator's loss."""

    name: str
    kind: Literal["image", "feature"]
    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    weight: float = ADVERSARIAL_WEIGHT


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    clip: tuple[nn.Module, float] | None = None,
) -> torch.Tensor | None:
    """Backward and step; with `clip` = (network, max_norm), the network's gradient norm is
    clipped to max_norm first, and the norm before clipping is returned (a tensor: no sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = None
    if clip is not None:
        network, max_norm = clip
        norm = torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm)
    optimizer.step()
    return norm


class PretrainStep:
    """Stage 1: the generator learns the pixel loss (the paper's MSE, or `distance`'s)."""

    def __init__(
        self,
        generator: nn.Module,
        optimizer: torch.optim.Optimizer,
        autocast: AutocastFactory = no_autocast,
        grad_clip_norm: float | None = None,
        luma_weight: float = 0.0,
        distance: str = "mse",
    ) -> None:
        self.generator = generator
        self.optimizer = optimizer
        self.autocast = autocast
        self.grad_clip_norm = grad_clip_norm
        self.luma_weight = luma_weight
        self.distance = distance

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        self.generator.train()
        with self.autocast():
            sr = self.generator(lr)
        loss = pixel_loss(sr.float(), hr, self.luma_weight, self.distance)
        clip = (self.generator, self.grad_clip_norm) if self.grad_clip_norm is not None else None
        norm = optimizer_step(self.optimizer, loss, clip)
        losses = {"loss/pixel": loss.detach(), "loss/generator": loss.detach()}
        if norm is not None:
            losses["grad_norm/generator"] = norm.detach()
        return losses


class GANStep:
    """Stage 2: every discriminator learns to tell HR from this step's (detached) SR, and the
    generator learns perceptual + weighted adversarial losses.

    `update_order` "discriminators_first" (the authors' code) updates the discriminators
    first and then the generator against the updated discriminators; "generator_first" the
    other way round. Either way the SR images are computed once: the generator has not moved
    when the discriminators learn from them. The generator's update cannot move a
    discriminator: their parameters are frozen while the generator's loss is backpropagated,
    and only the generator's optimizer steps then.
    """

    def __init__(
        self,
        generator: nn.Module,
        generator_optimizer: torch.optim.Optimizer,
        vgg: VGG19FeatureExtractor,
        adversarial_terms: list[AdversarialTerm],
        generator_bn_eval: bool = True,
        autocast: AutocastFactory = no_autocast,
        update_order: UpdateOrder = "discriminators_first",
        grad_clip_norm: float | None = None,
    ) -> None:
        self.generator = generator
        self.generator_optimizer = generator_optimizer
        self.vgg = vgg
        self.terms = adversarial_terms
        # The official code keeps the generator's BatchNorm on its running statistics in stage 2.
        self.generator_bn_eval = generator_bn_eval
        self.autocast = autocast
        self.update_order = update_order
        # clips the generator's gradient only: the discriminators' losses are the paper's as they are
        self.grad_clip_norm = grad_clip_norm

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        self.generator.train(not self.generator_bn_eval)
        with self.autocast():
            sr = self.generator(lr)
            with torch.no_grad():
                hr_features = self.vgg(hr) * FEATURE_SCALE
            sr_features = self.vgg(sr) * FEATURE_SCALE
        views = Views(sr=sr.float(), hr=hr, sr_features=sr_features.float(), hr_features=hr_features.float())

        losses: dict[str, torch.Tensor] = {}
        if self.update_order == "discriminators_first":
            self._discriminators_learn(views, losses)
            self._generator_learns(views, losses)
        else:
            self._generator_learns(views, losses)
            self._discriminators_learn(views, losses)
        return losses

    def _generator_learns(self, views: Views, losses: dict[str, torch.Tensor]) -> None:
        generator_loss = perceptual_loss(views.sr_features, views.hr_features)
        losses["loss/perceptual"] = generator_loss.detach()
        for term in self.terms:
            term.discriminator.requires_grad_(False)
            term.discriminator.train()
            with self.autocast():
                fake_logits = term.discriminator(views.pair(term.kind)[1])
            term_loss = adversarial_loss(fake_logits.float(), is_real=True)
            losses[f"loss/adversarial_{term.name}"] = term_loss.detach()
            generator_loss = generator_loss + term.weight * term_loss
        clip = (self.generator, self.grad_clip_norm) if self.grad_clip_norm is not None else None
        norm = optimizer_step(self.generator_optimizer, generator_loss, clip)
        losses["loss/generator"] = generator_loss.detach()
        if norm is not None:
            losses["grad_norm/generator"] = norm.detach()

    def _discriminators_learn(self, views: Views, losses: dict[str, torch.Tensor]) -> None:
        for term in self.terms:
            term.discriminator.requires_grad_(True)
            term.discriminator.train()
            real, fake = views.pair(term.kind)
            with self.autocast():
                real_logits = term.discriminator(real)
                fake_logits = term.discriminator(fake.detach())
            loss = discriminator_loss(real_logits.float(), fake_logits.float())
            optimizer_step(term.optimizer, loss)
            losses[f"loss/discriminator_{term.name}"] = loss.detach()
            losses[f"discriminator_{term.name}/real_prob"] = torch.sigmoid(real_logits.detach().float()).mean()
            losses[f"discriminator_{term.name}/fake_prob"] = torch.sigmoid(fake_logits.detach().float()).mean()
