"""The training loop: step, log, validate and save until the run's step or time budget is spent.

In the spirit of BasicSR's `train.py`: the loop is a few flat methods over two small state
objects, `Progress` (the counters a resume restores) and `LoopState` (what one process carries
from step to step), and hands off to the trainer (the training step, checkpoints), the
`Validator` and the `RunLog`.

Each step, in this order: the training step and the EMA update (train.ema_decay); the clock
(every step, or every 10 under DDP, where rank 0's clock decides for all); the log every
`train.log_every` steps; validation every `validation.every` (and at the run's last step); a checkpoint every
`train.checkpoint_every`; then the stop test. Logging
comes before validation and saving, so that a NaN loss stops the run before its weights are
validated or written; and the weights themselves are checked before either. Ctrl-C,
SIGTERM or SIGHUP is one more stop test, read with the clock: the step in flight ends, a checkpoint is
saved, and `TrainingInterrupted` says how to resume (`srfeat.training.interrupt`). When loading
a batch fails (a DataLoader worker killed for memory, a training file gone), the weights are whole
between two steps: the steps since the last checkpoint are saved before the error goes on. A step
or validation that runs out of memory is one line saying what to lower; its half-made step is not saved.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from srfeat.errors import TrainingDiverged
from srfeat.hardware import one_line_if_out_of_memory
from srfeat.training import checkpoint
from srfeat.training.config import train_option
from srfeat.training.distributed import barrier, broadcast_object, mean_across_processes
from srfeat.training.ema import validate_generators
from srfeat.training.interrupt import StopRequest, TrainingInterrupted, signal_name, stop_on_signals
from srfeat.training.run_folder import logged_steps, saved_a_generator
from srfeat.training.run_log import METRICS_FILE, RunLog
from srfeat.training.sampling import ResumableSampler
from srfeat.training.schedule import lr_factor, planned_steps, unreached_milestones
from srfeat.training.validation import Validator, better_than_best

if TYPE_CHECKING:
    from srfeat.training.trainer import Trainer

__all__ = ["LoopState", "Progress", "TrainingLoop", "lr_factor", "planned_steps", "unreached_milestones"]

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counters that a resume restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_seconds: float = 0.0
    best_psnr: float = -math.inf
    validated_step: int = -1  # the last step validated (a resume of a finished run validates it once only)
    best_ssim: float = -math.inf  # the SSIM of the best validation: of equal PSNRs (inf) the higher is the best


@dataclass
class LoopState:
    """What the loop carries from step to step in this process (not saved: a resume starts afresh)."""

    started: float  # time.monotonic() at which the run would have started had it never stopped
    saved_at: int  # step of the last checkpoint on disk
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # since the last log
    summed_steps: int = 0
    data_wait: float = 0.0  # seconds spent waiting for the DataLoader since the last log
    logged_at: float = field(default_factory=time.monotonic)
    lr: float = 0.0  # the generator's learning rate in the last step (the log's; the schedule may have moved on)
    last_validation: dict[str, float] | None = None
    out_of_time: bool = False
    signals: StopRequest = field(default_factory=StopRequest)  # what this process received
    stop_signal: int | None = None  # the signal the run stops for (rank 0's under DDP)


class TrainingLoop:
    """One pass of a run from its current `Progress` to its end."""

    def __init__(
        self,
        trainer: Trainer,
        loader: DataLoader,
        sampler: ResumableSampler,
        planned_steps: int,
        validator: Validator | None,
        log: RunLog,
    ) -> None:
        self.trainer = trainer
        self.config = trainer.config
        self.context = trainer.context
        self.progress = trainer.progress
        self.loader = loader
        self.sampler = sampler
        self.planned_steps = planned_steps
        self.validator = validator
        self.log = log
        # Under DDP all ranks must stop at the same step: rank 0's clock decides, every few steps and after
        # each validation.
        self.clock_every = 1 if not self.context.enabled else 10
        self.state = LoopState(started=time.monotonic() - self.progress.elapsed_seconds, saved_at=self.progress.step)
        self.bar: Any = None

    def run(self) -> dict[str, float] | None:
        """Train to the end; returns the last validation's metrics (None without validation)."""
        progress, train = self.progress, self.config.train
        if progress.step >= self.planned_steps and self.context.is_main:  # a finished run resumed as it was
            limits, larger = (
                ("train.epochs, train.max_steps, --max-steps", "--max-steps")
                if self.trainer.command_line
                else ("train.epochs, train.max_steps", "train.max_steps")
            )
            logger.warning(
                "the run is already at step %d of its %d (%s): no step is trained; give a larger %s to continue it",
                progress.step,
                self.planned_steps,
                limits,
                larger,
            )
        elif progress.epoch >= train.epochs and self.context.is_main:  # its epochs spent, steps left (more data now)
            logger.warning(
                "the run is already at epoch %d of its %d: no step is trained; give a larger train.epochs to "
                "continue it",
                progress.epoch,
                train.epochs,
            )
        with stop_on_signals(self.context.enabled, self._say) as self.state.signals:
            self._open_bar()
            # a resumed run that had spent its steps or its minutes trains no step more
            self.state.out_of_time = self._out_of_time(progress.elapsed_seconds)
            done = progress.step >= self.planned_steps or self.state.out_of_time
            while not done and progress.epoch < train.epochs:
                done = self._train_epoch()
            self._finish()
        stop_signal = self.state.stop_signal
        if stop_signal is not None:
            raise TrainingInterrupted(
                f"interrupted ({signal_name(stop_signal)}) at step {progress.step}: checkpoint saved in "
                f"{self.trainer.out_dir}; {self._resume_command()}",
                stop_signal,
            )
        return self.state.last_validation

    def _out_of_memory(self, where: str, advice: str) -> str:
        """The one line for an allocation that failed in `where`: what to do, and what the run folder
        keeps (the step in flight is lost: its weights may be half updated, so nothing is saved now)."""
        out_dir = self.trainer.out_dir
        kept = checkpoint.last_good_checkpoint(out_dir, self.state.saved_at)
        if self.state.saved_at:
            then = self._resume_command()
        elif saved_a_generator(out_dir):  # a best generator, before the first checkpoint: kept
            then = f"run again with {self._option('overwrite')}"
        elif self._replacing():
            kept, then = self._put_back(), f"run again with {self._option('overwrite')}"
        else:  # a new run that saved no generator removes its files as it stops (`run_folder.discarded_unless_saved`)
            then = "run again"
        return f"out of memory on {self.trainer.device} in {where}: {advice}; {kept}: once changed, {then}"

    def _after_divergence(self) -> str:
        """The end of a divergence's one line: what the run folder keeps, and what to do. A new run that
        logged some steps keeps its log, the only record of how the losses went
        (`run_folder.discarded_unless_saved`)."""
        out_dir, saved_at = self.trainer.out_dir, self.state.saved_at
        # stage 2's discriminators have a rate of their own, and the adversarial terms weights: with
        # optim.discriminator_lr 1e300 the losses became NaN at the first step, and the advice was optim.lr alone
        rates = ["optim.lr"]
        if self.config.stage == 2:
            rates += [
                "optim.discriminator_lr",
                *(f"model.{d}_adversarial_weight" for d in self.config.model.discriminators),
            ]
        lower = f"lower {', '.join(rates[:-1])} or {rates[-1]}," if len(rates) > 1 else "lower optim.lr"
        if self._replacing():  # the log goes with the rest: the replaced run takes the folder back
            return f"{self._put_back()} ({lower} or check the data)"
        if saved_at or saved_a_generator(out_dir) or not logged_steps(out_dir):
            return f"{checkpoint.last_good_checkpoint(out_dir, saved_at)} ({lower} or check the data)"
        return (
            f"no checkpoint was saved in {out_dir}, which keeps the log of the steps before ({METRICS_FILE}): "
            f"{lower} or check the data, then run again with {self._option('overwrite')}"
        )

    def _replacing(self) -> bool:
        """Whether the run that --overwrite replaces waits aside, put back if this one stops now: it has saved
        no generator yet (`run_folder.ReplacedRun`)."""
        replaced = self.trainer.replaced_run
        return replaced is not None and replaced.folder is not None

    def _put_back(self) -> str:
        return f"no checkpoint was saved in {self.trainer.out_dir}, where the run it was to replace is put back"

    def _step_advice(self) -> str:
        config = self.config
        patch, batch_size = config.data.hr_patch_size, config.train.batch_size
        # the patch size is the prepared folder's (data.kind patches) and sizes stage 2's discriminators
        patch_too = config.stage == 1 and config.data.kind != "patches"
        lower = "train.batch_size or data.hr_patch_size" if patch_too else "train.batch_size"
        return f"{batch_size} patches of {patch}x{patch} a step is too many here; lower {lower}"

    def _option(self, keyword: str) -> str:
        return train_option(keyword, command_line=self.trainer.command_line)

    def _resume_command(self) -> str:
        out_dir = self.trainer.out_dir
        if not self.trainer.command_line:  # a Python caller: the call that continues the run
            config_file, folder = str(out_dir / checkpoint.CONFIG_FILE), str(out_dir)
            return f"continue with train(load_config({config_file!r}), out_dir={folder!r}, resume=True)"
        config_file, folder = shlex.quote(str(out_dir / checkpoint.CONFIG_FILE)), shlex.quote(str(out_dir))
        return f"continue with `srfeat train {config_file} --out {folder} --resume`"

    # -- one epoch, one step ----------------------------------------------------------

    def _train_epoch(self) -> bool:
        """The rest of the current epoch; True when the run is over before its end."""
        progress, batch_size = self.progress, self.config.train.batch_size
        self.sampler.set_epoch(progress.epoch)
        self.sampler.start = progress.batch_in_epoch * batch_size
        self._set_scheduled_lr()
        waited_since = time.monotonic()
        for batch in self._batches():
            self.state.data_wait += time.monotonic() - waited_since
            with one_line_if_out_of_memory(
                lambda: self._out_of_memory(f"training step {progress.step + 1}", self._step_advice())
            ):
                self._step(batch)
            if self._after_step():
                return True
            waited_since = time.monotonic()
        progress.epoch += 1
        progress.batch_in_epoch = 0
        return False

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The loader's batches; if loading one fails, the steps trained since the last checkpoint
        are saved first (between steps the weights, optimizers and counters agree)."""
        batches = iter(self.loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:
                if self.progress.step > self.state.saved_at:
                    self._save(shared=False)  # the other ranks are not logging now
                    if self.context.is_main:
                        logger.error(
                            "loading a batch failed after step %d (%s): checkpoint saved; once the cause is fixed, %s",
                            self.progress.step,
                            type(error).__name__,
                            self._resume_command(),
                        )
                raise
            yield batch

    def _step(self, batch: dict[str, torch.Tensor]) -> None:
        trainer, state, progress = self.trainer, self.state, self.progress
        lr = batch["lr"].to(trainer.device, non_blocking=True, memory_format=trainer.memory_format)
        hr = batch["hr"].to(trainer.device, non_blocking=True, memory_format=trainer.memory_format)
        state.lr = trainer.generator_optimizer.param_groups[0]["lr"]
        losses = trainer.step_fn(lr, hr)
        if trainer.ema is not None:
            trainer.ema.update(trainer.generator)
        for key, value in losses.items():
            state.loss_sums[key] = state.loss_sums[key] + value if key in state.loss_sums else value.clone()
        state.summed_steps += 1
        progress.step += 1
        progress.batch_in_epoch += 1
        if self.bar is not None:
            self.bar.update(1)

    def _after_step(self) -> bool:
        """Clock, log, validation and checkpoint as due; True when the run should stop."""
        config, step = self.config, self.progress.step
        if step % self.clock_every == 0 or step >= self.planned_steps:
            self._tick_clock()
        stopping = step >= self.planned_steps or self.state.out_of_time or self.state.stop_signal is not None
        if step % config.train.log_every == 0:
            self._flush_log()
        # the run's last validation comes before its checkpoint, which records it (Progress.validated_step)
        last = stopping and self.state.stop_signal is None
        if config.validation.dir and (step % config.validation.every == 0 or last):
            self._flush_log()
            self._validate()
            if not stopping:  # a signal (or the time budget) during the validation stops here, not a step later
                self._tick_clock()
                stopping = self.state.out_of_time or self.state.stop_signal is not None
        if step % config.train.checkpoint_every == 0:
            self._save()
        return stopping

    # -- what the steps hand off ------------------------------------------------------

    def _set_scheduled_lr(self) -> None:
        fraction = self.progress.step / self.planned_steps
        max_minutes = self.config.train.max_minutes
        if max_minutes:
            fraction = max(fraction, self.progress.elapsed_seconds / (60.0 * max_minutes))
        self.trainer.set_lr(lr_factor(self.config, self.progress.epoch, min(fraction, 1.0)))

    def _tick_clock(self) -> None:
        state = self.state
        # One broadcast for both: every rank stops at rank 0's time and signal, at the same step.
        shared = (time.monotonic() - state.started, state.signals.signal_number)
        elapsed, state.stop_signal = broadcast_object(shared, self.context)
        self.progress.elapsed_seconds = elapsed
        self.state.out_of_time = self._out_of_time(elapsed)
        if self.config.optim.lr_schedule == "progress":
            self._set_scheduled_lr()

    def _out_of_time(self, elapsed: float) -> bool:
        max_minutes = self.config.train.max_minutes
        return max_minutes is not None and elapsed >= 60.0 * max_minutes

    def _flush_log(self, shared: bool = True) -> None:
        """Average the losses since the last log and write them; stops the run on a NaN.

        Under DDP the values are those of the global batch, averaged over the ranks (each rank's are
        of its share: rank 0's alone were logged, unlike one process's with the same batch), so every
        rank also stops on a NaN at the same step. `shared` False: this rank alone flushes (a failed
        batch load), with its own values.
        """
        state, progress = self.state, self.progress
        if not state.summed_steps:
            return
        now = time.monotonic()
        # Low data_wait means the loader keeps up; the GPU is the bottleneck then.
        timing = {
            "steps_per_second": state.summed_steps / max(now - state.logged_at, 1e-9),
            "data_wait": state.data_wait / max(now - state.logged_at, 1e-9),
        }
        means = {key: total / state.summed_steps for key, total in state.loss_sums.items()}
        if shared:
            means = mean_across_processes(means, self.context)
        values = {key: mean.item() for key, mean in means.items()}
        bad = [key for key, value in values.items() if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(
                f"{', '.join(bad)} became {values[bad[0]]} by step {progress.step}: training stopped; "
                f"{self._after_divergence()}"
            )
        record = {
            "kind": "train",
            "step": progress.step,
            "epoch": progress.epoch + 1,
            **values,
            "lr": state.lr,
            "seconds": round(progress.elapsed_seconds, 2),
        }
        record.update({key: round(value, 4) for key, value in timing.items()})
        self.log.write(record)
        state.data_wait, state.logged_at = 0.0, time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix(
                {"loss": f"{values['loss/generator']:.4g}", "lr": f"{record['lr']:.1e}"}, refresh=False
            )
        else:  # without the bar (--no-progress, a batch job's log) this line is how the run is seen to advance
            self._say(
                f"step {progress.step}/{self.planned_steps}: loss {values['loss/generator']:.4g}, "
                f"lr {record['lr']:.1e}, {timing['steps_per_second']:.3g} steps/s"
            )
        state.loss_sums, state.summed_steps = {}, 0

    def _stop_if_diverged(self) -> None:
        trainer = self.trainer
        networks = {
            "generator": trainer.generator,
            **{f"{n} discriminator": d for n, d in trainer.discriminators.items()},
        }
        problem = checkpoint.diverged_weights(networks)
        if problem is not None:  # a finite loss can come before weights that exploded in its step
            raise TrainingDiverged(
                f"{problem} at step {self.progress.step}: training stopped without saving them; "
                f"{self._after_divergence()}"
            )

    def _validate(self) -> None:
        state, progress = self.state, self.progress
        progress.validated_step = progress.step
        self._stop_if_diverged()
        if self.validator is not None:
            advice = f"the images of validation.dir ({self.config.validation.dir}) are upscaled whole: use smaller ones"
            try:
                with one_line_if_out_of_memory(
                    lambda: self._out_of_memory(f"the validation at step {progress.step}", advice)
                ):
                    metrics, samples = validate_generators(self.validator, self.trainer.generator, self.trainer.ema)
            except TrainingDiverged as error:  # finite weights whose output overflows: diverged all the same
                raise TrainingDiverged(
                    f"{error} at step {progress.step}: training stopped without saving these weights; "
                    f"{self._after_divergence()}"
                ) from error
            state.last_validation = metrics
            improved = better_than_best(metrics["psnr"], metrics["ssim"], progress.best_psnr, progress.best_ssim)
            if improved:
                progress.best_psnr, progress.best_ssim = metrics["psnr"], metrics["ssim"]
                self.trainer.save_best_generator()
            self.log.write({"kind": "validation", "step": progress.step, "epoch": progress.epoch + 1, **metrics})
            self.log.images("validation/sr", samples, progress.step)
            self.log.plot()
            text = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self._say(f"step {progress.step}: validation {text}{' (best)' if improved else ''}")
        barrier(self.context)
        state.logged_at = time.monotonic()  # the next log's steps per second count training, not this pause

    def _say(self, message: str) -> None:
        """A line for the user (from rank 0): above the progress bar when there is one, else logged; on
        standard error either way (tqdm writes to stdout unless told: under `srfeat train ... > log` a Ctrl-C's
        "finishing this step" went to the file, not the terminal, and stdout is for the run's one-line result)."""
        if not self.context.is_main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            logger.info("%s", message)

    def _save(self, shared: bool = True) -> None:
        self._flush_log(shared)  # never save weights from after a NaN
        self._stop_if_diverged()
        self.trainer.save_checkpoint()
        self.state.saved_at = self.progress.step
        self.state.logged_at = time.monotonic()  # as after a validation

    # -- start and end ----------------------------------------------------------------

    def _open_bar(self) -> None:
        if self.trainer.show_progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.planned_steps,
                initial=self.progress.step,
                unit="step",
                dynamic_ncols=True,
                desc=f"stage {self.config.stage}",
            )

    def _finish(self) -> None:
        """The last log, validation and checkpoint of the run, unless its last step made them."""
        config, state, step = self.config, self.state, self.progress.step
        if self.bar is not None:
            self.bar.close()
        self._flush_log()
        # Interrupted: the user is waiting, and a resume validates at the next due step anyway.
        validated = bool(config.validation.dir) and self.progress.validated_step != step and state.stop_signal is None
        if validated:
            self._validate()
        # a validation here (a resumed run that had no step left) is saved too, so none repeats it
        if validated or state.saved_at != step or not (self.trainer.out_dir / checkpoint.STATE_FILE).is_file():
            self._save()
        if state.out_of_time and self.context.is_main:
            logger.info("time budget of %g minutes reached at step %d", config.train.max_minutes, step)
        if self.context.is_main:
            self.log.plot()
