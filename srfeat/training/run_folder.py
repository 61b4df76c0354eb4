"""The run folder of `srfeat train`: checked before anything is written, so a run never takes
over what a user had.

A new run (no `--resume`) refuses a folder that already holds a run's files unless
`overwrite` is given, and then replaces only those files: after the run's networks and data
were built, so a start that fails (a typo in a path, a checkpoint of another architecture)
keeps the old run, and only once it saved a generator (`ReplacedRun`). A new run that fails or
is stopped before it saved any generator removes the files it wrote (`discarded_unless_saved`;
one that diverged keeps its log), then the folders it made (`srfeat.files.folder_made_for`).
Files of a run's common names (config.yaml, training.png) that no run wrote are the user's: their
folder is refused, `overwrite` or not. A folder that is a file, lies under one, or is one of the
run's image folders, is refused: checkpoints and logs would mix with the images (and be read as
images next time).
While a run trains, it holds a lock on its folder, so that a second `srfeat train` on it (a
second terminal, a job started twice) is refused instead of writing over the first one's files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from srfeat.errors import ConfigError, TrainingDiverged
from srfeat.locks import hold_lock, let_go_lock
from srfeat.training import checkpoint
from srfeat.training.config import TrainingConfig, train_option
from srfeat.training.run_log import METRICS_FILE, PLOT_FILE
from srfeat.training.typed_yaml import config_text, load_yaml

logger = logging.getLogger(__name__)

__all__ = [
    "RUN_FILES",
    "ReplacedRun",
    "check_run_folder",
    "discarded_unless_saved",
    "existing_run_files",
    "logged_steps",
    "remove_previous_run",
    "replaced_run_kept_until_saved",
    "run_folder_lock",
    "saved_a_generator",
]

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # what SummaryWriter writes there
# Everything a run writes into its folder; nothing else there is ever touched.
RUN_FILES = (
    checkpoint.CONFIG_FILE,
    checkpoint.STATE_FILE,
    checkpoint.LATEST_GENERATOR,
    checkpoint.BEST_GENERATOR,
    checkpoint.EMA_GENERATOR,
    METRICS_FILE,
    PLOT_FILE,
    TENSORBOARD_DIR,
)


# Names that only a run gives its files; the others (config.yaml, metrics.jsonl, training.png,
# tensorboard/) are common ones, which a user's own files may have.
_RUN_ONLY_NAMES = (
    checkpoint.STATE_FILE,
    checkpoint.LATEST_GENERATOR,
    checkpoint.BEST_GENERATOR,
    checkpoint.EMA_GENERATOR,
)


def _present(out_dir: Path) -> list[str]:
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def existing_run_files(out_dir: Path) -> list[str]:
    """The names of RUN_FILES present in `out_dir`, where a run wrote them: a run writes its
    config.yaml before anything else, so files of common names are a run's only beside one that a
    run wrote, or beside a checkpoint; else they are the user's, and none is a run's."""
    present = _present(out_dir)
    if any(name in _RUN_ONLY_NAMES for name in present) or (
        checkpoint.CONFIG_FILE in present and _run_config(out_dir / checkpoint.CONFIG_FILE)
    ):
        return present
    return []  # check_run_folder refuses the folder: the run would write over them


def _run_config(path: Path) -> bool:
    """Whether `path` is a config.yaml that a run wrote: TrainingConfig.to_yaml names every key of every
    section; one written by hand (a copy of configs/dev/stage1.yaml, with the user's comments) does not."""
    full = TrainingConfig().to_dict()
    try:
        values = load_yaml(config_text(path), str(path)) if path.is_file() else None
    except (OSError, yaml.YAMLError, ConfigError):
        return False
    if not isinstance(values, dict) or set(values) != set(full):
        return False
    sections = [field.name for field in dataclasses.fields(TrainingConfig) if isinstance(full[field.name], dict)]
    return all(isinstance(values[name], dict) and set(values[name]) == set(full[name]) for name in sections)


def check_run_folder(
    config: TrainingConfig, out_dir: Path, resume: bool, overwrite: bool, *, command_line: bool = False
) -> None:
    """One line if `out_dir` cannot be this run's folder; writes nothing. It names `train`'s keywords
    (resume=True, overwrite=True, out_dir), or with `command_line` `srfeat train`'s flags (`train_option`)."""
    resume_option, overwrite_option = (
        train_option(name, command_line=command_line) for name in ("resume", "overwrite")
    )
    out_option = train_option("out_dir", command_line=command_line)
    if resume and overwrite:
        raise ConfigError(
            f"{resume_option} continues the run in the folder and {overwrite_option} replaces it: give one of them"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"run folder {out_dir} exists and is not a folder: choose another {out_option}")
    # checked here, not left to the mkdir after the networks and data were built (a traceback, and
    # a dry run that passed): a link to nowhere, or a file where a folder above it should be
    if out_dir.is_symlink() and not out_dir.exists():
        raise ConfigError(
            f"run folder {out_dir} is a link to {os.readlink(out_dir)}, which is missing: choose another {out_option}"
        )
    if not out_dir.exists():
        above = next((parent for parent in out_dir.absolute().parents if parent.exists()), None)
        if above is not None and not above.is_dir():
            raise ConfigError(
                f"run folder {out_dir} cannot be made: {above} is a file, not a folder; choose another {out_option}"
            )
    image_folders = [*config.data.train_dirs, *([config.validation.dir] if config.validation.dir else [])]
    for folder in image_folders:
        path = config.resolve_path(folder)
        if path.exists() and path.resolve() == out_dir.resolve():
            raise ConfigError(
                f"run folder {out_dir} is the image folder {folder}: checkpoints and logs would mix with the "
                f"images; choose another {out_option}"
            )
    if resume:
        existing = existing_run_files(out_dir) if out_dir.is_dir() else []
        if existing and not (out_dir / checkpoint.STATE_FILE).exists():
            # the state's own refusal says to run without resuming, which this folder refuses in turn
            raise ConfigError(
                f"run folder {out_dir} holds no {checkpoint.STATE_FILE} to resume, only {', '.join(existing)} "
                f"(a run stopped before its first checkpoint): start it again with {overwrite_option}"
            )
        return  # the state is read next; a missing one is refused there
    existing = existing_run_files(out_dir) if out_dir.is_dir() else []
    others = _present(out_dir) if out_dir.is_dir() and not existing else []
    if others:
        raise ConfigError(
            f"run folder {out_dir} holds {', '.join(others)}, which no run wrote (yours?), where the run writes its "
            f"own: move them, or choose another {out_option}"
        )
    if existing and not overwrite:
        raise ConfigError(
            f"run folder {out_dir} already holds a run ({', '.join(existing)}): continue it with {resume_option}, "
            f"replace it with {overwrite_option}, or choose another {out_option}"
        )
    init = config.resolve_path(config.train.init_generator) if config.train.init_generator else None
    if existing and init is not None and init.is_file():
        doomed = [out_dir / name for name in existing if (out_dir / name).is_file()]
        if any(init.resolve() == path.resolve() for path in doomed):
            raise ConfigError(
                f"train.init_generator {init} is a file of the run that {overwrite_option} replaces: copy it out of "
                f"{out_dir} first (the new run would delete the generator it starts from)"
            )


def _run_paths(out_dir: Path) -> list[Path]:
    """The files of an earlier run in `out_dir` (its RUN_FILES), and nothing else: in a tensorboard/ the user
    keeps other logs in, the run's event files only."""
    paths = []
    for name in existing_run_files(out_dir):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            paths += [events for events in path.glob(TENSORBOARD_EVENTS) if events.is_file() or events.is_symlink()]
        else:
            paths.append(path)
    return paths


def _remove_empty_tensorboard(out_dir: Path) -> None:
    folder = out_dir / TENSORBOARD_DIR
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()


def remove_previous_run(out_dir: Path) -> None:
    """Remove the files of an earlier run in `out_dir` (`_run_paths`), and then its tensorboard/ if empty."""
    for path in _run_paths(out_dir):
        path.unlink()
    _remove_empty_tensorboard(out_dir)


REPLACED_RUN_PREFIX = ".replaced-run-"  # a hidden folder in the run folder: `ReplacedRun`


@dataclasses.dataclass
class ReplacedRun:
    """The run that --overwrite replaces, kept until the new run has saved a generator.

    Its files are moved (renamed: the same file system, no copy) into a hidden folder of the run folder
    as the new run starts (`set_aside`), deleted once the new run saves a checkpoint or a best generator
    (`drop`), and moved back if the new run fails or is stopped before that (`put_back`, after the new
    run's own files are removed). They were deleted as the run started: a first step out of memory, a bad
    patch in the first batch or a Ctrl-C lost the run it was to replace, and left nothing in its place.
    A folder left by a killed run (`kill -9` before its first save) is set aside with the rest next time.
    """

    out_dir: Path
    folder: Path | None = None

    def set_aside(self) -> None:
        paths = _run_paths(self.out_dir)
        paths += [path for path in self.out_dir.glob(f"{REPLACED_RUN_PREFIX}*") if path.is_dir()]
        if not paths:
            return
        folder = Path(tempfile.mkdtemp(prefix=REPLACED_RUN_PREFIX, dir=self.out_dir))
        self.folder = folder
        for path in paths:
            there = folder / path.relative_to(self.out_dir)
            there.parent.mkdir(exist_ok=True)  # tensorboard/, for its event files
            os.rename(path, there)
        _remove_empty_tensorboard(self.out_dir)

    def drop(self) -> None:
        """Delete the replaced run (the new one has saved a generator); once."""
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():  # a file it could not delete: the new run goes on all the same
                logger.warning("could not delete all of the replaced run in %s: delete it yourself", folder)

    def put_back(self) -> None:
        """Move the replaced run back where it was, in place of whatever the new run left."""
        if self.folder is None:
            return
        remove_previous_run(self.out_dir)
        _move_into(self.folder, self.out_dir)
        self.folder.rmdir()
        self.folder = None


def _move_into(source: Path, target: Path) -> None:
    """Each entry of `source` renamed into `target`; a folder there already (a tensorboard/ that holds
    files of yours beside the run's events) takes the entries of the moved one."""
    for path in source.iterdir():
        there = target / path.name
        if path.is_dir() and not path.is_symlink() and there.is_dir() and not there.is_symlink():
            _move_into(path, there)
            path.rmdir()
        else:
            os.rename(path, there)


@contextmanager
def replaced_run_kept_until_saved(out_dir: Path) -> Iterator[ReplacedRun]:
    """--overwrite's block (`ReplacedRun`): the run in `out_dir` set aside as it starts, put back if the block
    fails before the new run saved a generator; the new run calls `drop` as it saves one."""
    replaced = ReplacedRun(out_dir)
    replaced.set_aside()
    try:
        yield replaced
    except BaseException:
        try:
            replaced.put_back()  # nothing to do once the new run saved a generator: `drop` went first
        except OSError as error:  # the run's own error is the one to report
            logger.warning("could not move the replaced run back from %s: %s", replaced.folder, error)
        raise
    replaced.drop()


def saved_a_generator(out_dir: Path) -> bool:
    """Whether `out_dir` holds weights a run saved: a checkpoint (state.pt, generator_latest) or the best
    generator so far (validated before the first checkpoint)."""
    return any((out_dir / name).exists() for name in _RUN_ONLY_NAMES)


@contextmanager
def discarded_unless_saved(out_dir: Path) -> Iterator[None]:
    """A new run's block: if it fails or is stopped before the run saved any generator (`saved_a_generator`),
    the files it wrote (config.yaml, metrics.jsonl, training.png, its TensorBoard events) are removed as
    `remove_previous_run` removes a run's. They were all that run left (a first step out of memory, a bad
    patch in the first batch, a second Ctrl-C), and the same command then had to be told --overwrite.
    A run that saved a generator keeps everything, to be resumed or used; one that diverged after it logged
    some steps keeps its files too: the log (metrics.jsonl, training.png, TensorBoard) is how the losses went,
    which the user needs to choose a lower learning rate or find the bad data."""
    try:
        yield
    except BaseException as error:
        diverged_with_a_log = isinstance(error, TrainingDiverged) and logged_steps(out_dir)
        if not saved_a_generator(out_dir) and not diverged_with_a_log:
            try:
                remove_previous_run(out_dir)
            except OSError as error:  # the run's own error is the one to report
                logger.warning("could not remove the files of the failed run in %s: %s", out_dir, error)
        raise


def logged_steps(out_dir: Path) -> bool:
    """Whether the run in `out_dir` has logged a step (metrics.jsonl holds a record): a new run that
    diverged then keeps its files (`discarded_unless_saved`), and its one line says so."""
    try:
        return (out_dir / METRICS_FILE).stat().st_size > 0
    except OSError:
        return False


@contextmanager
def run_folder_lock(out_dir: Path, *, command_line: bool = False) -> Iterator[None]:
    """An exclusive lock on the run folder while the block runs; one line if another process holds it
    (naming out_dir, or --out with `command_line`).

    flock on the folder itself: nothing is written, and the lock goes with its process, so a
    killed run leaves none behind. Where there is no flock (Windows), nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    descriptor = os.open(out_dir, os.O_RDONLY)
    hold_lock(descriptor)  # a DataLoader worker closes its copy (`locks.close_inherited_locks`)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"run folder {out_dir} is in use by another srfeat train: wait for it to end, or choose another "
                f"{train_option('out_dir', command_line=command_line)}"
            ) from None
        except OSError as error:  # a file system without locks (some network ones)
            logger.warning(
                "run folder %s cannot be locked (%s): a second run on it would not be stopped", out_dir, error
            )
        yield
    finally:
        let_go_lock(descriptor)
