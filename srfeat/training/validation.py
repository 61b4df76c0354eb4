"""Validation during training: PSNR/SSIM of the generator on a benchmark folder, NIQE in stage 2.

Scored as `srfeat eval` scores (SR rounded to uint8, Y channel, `scale` pixels shaved), so the
numbers in a run's log are the numbers of the evaluation protocol.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from srfeat.errors import SRFeatError, TrainingDiverged
from srfeat.metrics.psnr_ssim import SSIM_WINDOW
from srfeat.training.config import TrainingConfig

__all__ = ["Validator", "better_than_best"]

logger = logging.getLogger(__name__)


def better_than_best(psnr: float, ssim: float, best_psnr: float, best_ssim: float) -> bool:
    """Whether a validation of mean `psnr` and `ssim` beats the best one so far: a higher PSNR, or an equal
    PSNR and a higher SSIM. Equal PSNRs are inf, mostly: once a validation image is matched exactly (a flat
    one, clamped) the mean is inf at every validation, and `>` alone kept the first generator to match it as
    generator_best for good. NaN is never the best (it compares false)."""
    return psnr > best_psnr or (psnr == best_psnr and ssim > best_ssim)


class Validator:
    """PSNR/SSIM (and NIQE in stage 2, when available) of the generator on a benchmark folder."""

    def __init__(self, config: TrainingConfig, device: torch.device) -> None:
        from srfeat.data.benchmark import BenchmarkDataset

        assert config.validation.dir is not None
        self.config = config
        self.device = device
        self.dataset = BenchmarkDataset(
            config.resolve_path(config.validation.dir), scale=config.model.scale, limit=config.validation.max_images
        )
        # SSIM is undefined for an image under its window once the border is shaved: such an image
        # stopped the run at its first validation (hours in, nothing saved since the last checkpoint)
        scale = config.model.scale
        self.indices: list[int] = []
        small: list[str] = []
        for index, (_, name, hr, _) in enumerate(self.dataset.items):
            if min(hr.shape[:2]) - 2 * scale >= SSIM_WINDOW:
                self.indices.append(index)
            else:
                small.append(name)
        if not self.indices:
            raise SRFeatError(
                f"validation.dir {config.validation.dir}: every image is under {SSIM_WINDOW + 2 * scale} px, too small "
                "for SSIM once the border is shaved: give larger images (e.g. Set5)"
            )
        if small:
            logger.warning(
                "validation leaves out %s: under %d px, too small for SSIM once the border is shaved",
                ", ".join(small),
                SSIM_WINDOW + 2 * scale,
            )
        self.count = len(self.indices)
        self.niqe_warned = False
        self.niqe = None
        if config.stage == 2 and config.validation.niqe:
            try:
                from srfeat.metrics.niqe import niqe

                self.niqe = niqe
            except ImportError:
                logger.info("NIQE is not available; validation reports PSNR/SSIM only")

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> tuple[dict[str, float], list[torch.Tensor]]:
        from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim

        was_training = generator.training
        generator.eval()
        scale = self.config.model.scale
        totals: dict[str, float] = {"psnr": 0.0, "ssim": 0.0}
        niqe_values: list[float] = []
        niqe_skipped: dict[str, str] = {}  # image name -> why NIQE is undefined for it
        samples: list[torch.Tensor] = []
        memory_format = torch.channels_last if self.config.train.channels_last else torch.contiguous_format
        for index in self.indices:
            item = self.dataset[index]
            lr = item["lr"].unsqueeze(0).to(self.device, memory_format=memory_format)
            sr = generator(lr).float()[0]
            if not bool(torch.isfinite(sr).all()):  # clamped and rounded, NaN scored as a plain number
                generator.train(was_training)
                raise TrainingDiverged(f"the generator's output for validation image {item['name']} holds NaN or inf")
            sr = sr.clamp_(0.0, 1.0)
            sr_uint8 = sr.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            totals["psnr"] += psnr(sr_uint8, item["hr_uint8"], crop_border=scale)
            totals["ssim"] += ssim(sr_uint8, item["hr_uint8"], crop_border=scale)
            if self.niqe is not None:
                try:
                    niqe_values.append(self.niqe(rgb_to_y(sr_uint8), crop_border=scale))
                except SRFeatError as error:  # too small or flat: NIQE undefined for this image
                    niqe_skipped[item["name"]] = str(error)
            if len(samples) < self.config.validation.sample_images:
                samples.append(sr.cpu())
        generator.train(was_training)
        metrics = {key: value / self.count for key, value in totals.items()}
        if niqe_values:
            metrics["niqe"] = float(np.mean(niqe_values))
        if niqe_skipped and not self.niqe_warned:  # the same images every time: said once per run
            self.niqe_warned = True
            (first, reason), *_ = niqe_skipped.items()
            logger.warning(
                "validation NIQE is the mean over %d of %d images: it is undefined for %s (%s: %s)",
                len(niqe_values),
                self.count,
                ", ".join(niqe_skipped),
                first,
                reason,
            )
        return metrics, samples
