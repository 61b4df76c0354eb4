"""The learning-rate schedule and the length of a run, from its config alone.

`lr_factor` is the multiplier optim.lr_milestones give a step (by epoch, or by the fraction of the
run done: optim.lr_schedule); `planned_steps` the steps train.epochs and train.max_steps allow;
`unreached_milestones` says which milestones the run ends before, for a warning as it starts.
"""

from __future__ import annotations

from srfeat.errors import ConfigError
from srfeat.training.config import TrainingConfig
from srfeat.training.config_checks import LARGEST_STEP_COUNT

__all__ = ["lr_factor", "planned_steps", "unreached_milestones"]


def lr_factor(config: TrainingConfig, epoch: int, progress: float) -> float:
    """Learning-rate multiplier in `epoch` (counted from 0) at `progress` (0..1) of the run."""
    optim = config.optim
    if optim.lr_schedule == "epoch":
        passed = sum(1 for milestone in optim.lr_milestones if epoch + 1 >= milestone)
    else:
        passed = sum(1 for milestone in optim.lr_milestones if progress >= milestone)
    return optim.lr_gamma**passed


def planned_steps(config: TrainingConfig, steps_per_epoch: int) -> int:
    """The steps the run is to take: train.epochs of `steps_per_epoch`, or train.max_steps if fewer.

    At most 2**53, as train.max_steps: 2**53 epochs without train.max_steps planned more, past the step
    counts its own resume takes, and past what the progress schedule's float division counts exactly."""
    train = config.train
    steps = train.epochs * steps_per_epoch
    planned = steps if train.max_steps is None else min(steps, train.max_steps)
    if planned > LARGEST_STEP_COUNT:
        raise ConfigError(
            f"train.epochs {train.epochs:,} of {steps_per_epoch:,} step(s) each plan {planned:,} steps, past 2**53 "
            f"({LARGEST_STEP_COUNT:,}), the most a run may take: give train.epochs at most "
            f"{LARGEST_STEP_COUNT // steps_per_epoch:,} or set train.max_steps (train.max_minutes ends a run by time)"
        )
    return planned


def unreached_milestones(config: TrainingConfig, planned_steps: int, steps_per_epoch: int) -> str | None:
    """Why some of optim.lr_milestones change no step's learning rate: the run ends first (None if
    all are reached). A time budget (train.max_minutes) may end it sooner still: that is not known."""
    optim, train = config.optim, config.train
    if optim.lr_schedule == "epoch":  # milestone M: from the first step of epoch M
        last_epoch = -(-planned_steps // steps_per_epoch)
        late = [m for m in optim.lr_milestones if m > last_epoch]
        length = f"the run's last epoch is {last_epoch} " + (
            f"(train.max_steps {train.max_steps}, {steps_per_epoch} step(s) per epoch)"
            if last_epoch < train.epochs
            else "(train.epochs)"
        )
    else:  # milestone m: from the step after the one at which step / planned_steps >= m (or time / max_minutes)
        late = [m for m in optim.lr_milestones if m * planned_steps > planned_steps - 1 and not train.max_minutes]
        length = (
            f"the run has {planned_steps} steps; milestone m sets the rate of the steps after step m x {planned_steps}"
        )
    if not late:
        return None
    return f"optim.lr_milestones {', '.join(f'{m:g}' for m in late)} never reached: {length}"
