"""`srfeat train CONFIG [--out OUT] [--resume | --overwrite] [--max-steps N] [--dry-run] [key=value ...]`

Trains stage 1 (MSE pretraining) or stage 2 (GAN) from a YAML config (configs/paper,
configs/dev). Several GPUs or CPUs: `torchrun --nproc_per_node=W -m srfeat.cli train CONFIG`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from srfeat.commands.arguments import OUTPUT_FLAGS, OUTPUT_METAVAR, OneLineErrorParser, path_argument

if TYPE_CHECKING:
    from srfeat.training.config import TrainingConfig


class _IntermixedParser(OneLineErrorParser):
    """Lets `key=value` overrides follow options (`CONFIG --max-steps 3 optim.lr=2e-4`).

    Plain argparse binds all positionals at their first run, so overrides after an option
    would be rejected; intermixed parsing collects them wherever they stand.
    """

    _intermixing = False

    # typeshed spells this as three overloads keyed on the namespace's type; one plain signature
    # covers how argparse calls it (the override check is made once, on the base parser in arguments.py).
    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace = argparse.Namespace() if namespace is None else namespace  # as argparse itself does
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def config_argument(text: str) -> str:
    """The config file's path (`path_argument`), whose emptiness is said as such: "a file or folder" asked
    for a folder, which is no config."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a YAML config file (e.g. configs/dev/stage1.yaml)")
    return path_argument(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.__class__ = _IntermixedParser
    parser.add_argument("config", type=config_argument, help="YAML training config (e.g. configs/dev/stage1.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],  # optional: without a default argparse counts a "*" positional as required, in its error
        metavar="key=value",
        help="override config fields by dotted name, e.g. optim.lr=2e-4 train.batch_size=8",
    )
    parser.add_argument(
        *OUTPUT_FLAGS,  # --out was its first name; `srfeat train CONFIG -o runs/x` was "unrecognized arguments"
        dest="out",
        type=path_argument,
        metavar=OUTPUT_METAVAR,
        help="run folder for checkpoints and logs (default: the config's out_dir)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run saved in the run folder (state.pt)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds a run, replacing its checkpoints and logs once the new run "
        "saves its first (kept if it fails before; without it such a folder is refused)",
    )
    parser.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after N optimizer steps in total (sets train.max_steps)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, its data paths and that the folders hold usable images (from their headers), "
        "that train.init_generator loads and fits the model, with --resume that the run folder's state.pt is "
        "readable and of the config's networks, print the resolved config, train nothing",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: a log line (step, loss, lr) every train.log_every steps instead",
    )


def _check_resumable(config: TrainingConfig) -> None:
    """The run folder's state.pt is there, readable, whole, of the config's stage and of the config's
    networks (the resume's one line if not); the config keys that the resume changes are warned of, as
    the resume warns."""
    import torch

    from srfeat.training import checkpoint, networks, resume

    out_dir = config.resolve_path(config.out_dir)
    saved = resume.read_resumable_state(config, out_dir, command_line=True)
    with torch.device("meta"):  # the networks' shapes, nothing allocated (a paper-size discriminator is 0.8 GB)
        generator, discriminators = networks.new_generator(config), networks.build_discriminators(config)
    resume.check_saved_networks(saved, generator, discriminators, str(out_dir / checkpoint.STATE_FILE))
    resume.warn_of_config_changes(saved, config, out_dir)


def run(args: argparse.Namespace) -> int:
    from srfeat.cli import write_output
    from srfeat.errors import ConfigError
    from srfeat.training.config import check_paths, load_config
    from srfeat.training.config_checks import check_run_length

    config = load_config(args.config, list(args.overrides))
    if args.max_steps is not None:
        if args.max_steps <= 0:
            raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
        check_run_length("--max-steps", args.max_steps)
        config.train.max_steps = args.max_steps
    if args.out is not None:  # never empty (the working directory): `path_argument` refuses it
        config.out_dir = args.out
    if args.dry_run:
        from srfeat.training.run_folder import check_run_folder

        check_paths(config, resuming=args.resume, dry_run=True)
        check_run_folder(config, config.resolve_path(config.out_dir), args.resume, args.overwrite, command_line=True)
        if args.resume:  # what the resume reads first: a folder without a usable state passed the dry run
            _check_resumable(config)
        from srfeat.training.sampling import check_data
        from srfeat.training.schedule import planned_steps, unreached_milestones

        epoch_steps = check_data(config)  # the images are there: a run would refuse no usable one only now
        unreached = unreached_milestones(config, planned_steps(config, epoch_steps), epoch_steps)
        if unreached:
            logging.getLogger("srfeat").warning("%s", unreached)
        write_output(config.to_yaml())  # the checked config is the dry run's output
        return 0

    from srfeat.training.trainer import train

    result = train(
        config,
        out_dir=config.out_dir,
        resume=args.resume,
        show_progress=not args.no_progress,
        overwrite=args.overwrite,
        command_line=True,
    )
    if not result.is_main:  # under torchrun: rank 0 reports the run
        return 0
    summary = f"stage {config.stage}: {result.step} steps, run folder {result.out_dir}"
    if result.last_validation:
        summary += ", " + ", ".join(f"{key} {value:.4f}" for key, value in result.last_validation.items())
    write_output(summary + "\n")  # the run's one-line result, for scripts that call the command
    return 0
