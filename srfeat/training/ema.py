"""An exponential moving average (EMA) of the generator's weights, for `train.ema_decay`.

After every optimizer step, `ema = decay * ema + (1 - decay) * weights` for every parameter and
buffer (BatchNorm's running statistics too: `use_buffers=True`), by torch's own
`AveragedModel` with `get_ema_multi_avg_fn`. The average starts as the generator's weights at
the first update. Averaged weights are smoother than the last step's and usually score a little
higher (EDSR, ESRGAN and SwinIR report them); they never feed back into training.

The average is part of the training state (`state_dict`), so a resumed run continues it exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

logger = logging.getLogger(__name__)


class GeneratorEMA:
    """The averaged copy of a generator (on its device), updated with `update` after each step."""

    def __init__(self, generator: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        # the copy is only ever evaluated: no autograd bookkeeping for its parameters
        self.averaged.requires_grad_(False)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged generator (same class as the trained one; what validation and saving use)."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged.item())

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        self.averaged.update_parameters(generator)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("decay") != self.decay:
            logger.info(
                "EMA decay changed from %s to %s on resume; the average continues", state.get("decay"), self.decay
            )
        self.averaged.load_state_dict(state["averaged"])


Validate = Callable[[nn.Module], tuple[dict[str, float], list[torch.Tensor]]]


def validate_generators(
    validate: Validate, generator: nn.Module, ema: GeneratorEMA | None
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Metrics and sample images of what the run ships: the averaged generator when EMA is on
    (with the raw generator's metrics added as raw_<name>, to see what averaging gives), else
    the generator itself."""
    if ema is None:
        return validate(generator)
    metrics, samples = validate(ema.module)
    raw, _ = validate(generator)
    return {**metrics, **{f"raw_{name}": value for name, value in raw.items()}}, samples


def shipped_generator(generator: nn.Module, ema: GeneratorEMA | None) -> nn.Module:
    """The generator that validation scores and generator_best.safetensors holds."""
    return ema.module if ema is not None else generator


def build_ema(generator: nn.Module, decay: float | None, saved: dict[str, Any] | None) -> GeneratorEMA | None:
    """The run's average (None when train.ema_decay is null or 0), restored from a saved state."""
    if not decay:
        if saved is not None and "ema" in saved:
            logger.warning(
                "the run being resumed kept an EMA of the generator; train.ema_decay is off now, so it stops"
            )
        return None
    ema = GeneratorEMA(generator, decay)
    if saved is not None:
        if "ema" in saved:  # checked with the state (resume.check_state, check_saved_networks): it fits, finite
            ema.load_state_dict(saved["ema"])
        else:
            logger.info("the run being resumed had no EMA: the average starts from its step-%d weights", saved["step"])
    return ema
