"""What `srfeat.evaluation.evaluate` is given, checked and named before any work.

The arguments' types (`check_arguments`), the metrics asked for (`resolve_metrics`) and that one
applies (`check_metrics_apply`: not `hr` alone with PSNR/SSIM), each model and metric once
(`once_each`; `model_identity`: a file under two names, or two specs of one blend, is one model), and the
names of the tables' rows (`model_labels`, `dataset_labels`). Nothing here builds a network or
reads an image: `srfeat.evaluation.check_models` runs each network once on a test image. What the
folders hold that the protocol leaves out or changes is said in a warning (`warn_subfolders`,
`warn_reduced`, `figure_index`). Messages name the options as the caller gave them (`option_named`):
`evaluate`'s keywords from Python, `srfeat eval`'s flags for the command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from srfeat.errors import InvalidOptionError, OptionNames, SRFeatError, check_flag, is_whole_number, printable, shown
from srfeat.weights import generator_path
from srfeat.weights.blend import BLEND_PREFIX, is_blend_spec, parse_blend_spec

if TYPE_CHECKING:
    from srfeat.data.benchmark import BenchmarkDataset

logger = logging.getLogger(__name__)

BICUBIC = "bicubic"
GROUND_TRUTH = "hr"
KNOWN_METRICS = ("psnr", "ssim", "niqe")
# Metrics that compare with the ground truth, meaningless for the `hr` model.
REFERENCE_METRICS = ("psnr", "ssim")


# `evaluate`'s keywords, and the flags of `srfeat eval` that give them.
_OPTIONS = OptionNames(
    {
        "models": "--model",
        "folders": "--data",
        "metrics": "--metrics",
        "scale": "--scale",
        "figure_image": "--figure-image",
    }
)


def option_named(keyword: str, value: object = None, *, command_line: bool) -> str:
    """One of `evaluate`'s options as its caller gives it, for a message: the keyword from Python (`models`,
    `models=['bicubic', 'hr']`, `scale=2`), `srfeat eval`'s flag for the command line (`--model`,
    `--model bicubic hr`, `--scale 2`). A Python caller has no flags, a command-line user no keywords."""
    name = _OPTIONS(keyword, command_line=command_line)
    if value is None:
        return name
    if not command_line:
        return f"{name}={value!r}"
    return " ".join([name, *map(str, value)]) if isinstance(value, list) else f"{name} {value}"


def niqe_available() -> bool:
    return importlib.util.find_spec("srfeat.metrics.niqe") is not None


def default_metrics() -> list[str]:
    """psnr, ssim, and niqe when its module is installed."""
    return ["psnr", "ssim", "niqe"] if niqe_available() else ["psnr", "ssim"]


def check_arguments(
    models: object,
    folders: object,
    metrics: object,
    scale: object,
    figure_image: object,
    *flags: object,
    command_line: bool = False,
) -> tuple[list[str], list[Path], list[str] | None, int]:
    """`evaluate`'s arguments checked before any work (not a traceback from inside, an empty result, or
    every score left out): models as strings, folders (str, bytes, path-like) as paths, `~` expanded.
    The scale is named as its caller gives it (`option_named`: scale=4, or `srfeat eval`'s --scale 4).

    The other refusals name the keywords alone: only a Python caller can meet them. `srfeat eval`'s parser
    already gives non-empty lists of strings (--model and --data, required; --metrics, None or of its
    choices; each `nargs="+"`), a string or None (--figure-image) and True or False (--rgb, --tta, --figure),
    and refuses anything else itself, naming the flag (tests/test_eval_messages.py); and --rgb and --figure
    are not test_y_channel and keep_figure_samples but their opposite and a file: no flag is theirs to name."""
    lists: dict[str, list[str]] = {}
    for name, value in (("models", models), ("folders", folders), ("metrics", metrics)):
        if isinstance(value, (str, bytes, os.PathLike)):  # its characters were taken one by one
            raise InvalidOptionError(f"{name} is a list: give [{os.fsdecode(value)!r}], not {os.fsdecode(value)!r}")
        if value is None and name == "metrics":
            continue
        if not (items := list(value) if isinstance(value, Iterable) else []):  # a tuple or a generator will do
            raise InvalidOptionError(f"{name} must be a non-empty list, got {type(value).__name__} {shown(value)}")
        kinds, what = ((str,), "names") if name == "metrics" else ((str, bytes, os.PathLike), "names or paths")
        if wrong := [item for item in items if not isinstance(item, kinds)]:
            raise InvalidOptionError(f"{name} must hold {what}, got {type(wrong[0]).__name__} {shown(wrong[0])}")
        lists[name] = [item if name == "metrics" else os.fsdecode(item) for item in items]
    if not is_whole_number(scale) or scale < 2:
        raise InvalidOptionError(
            f"{option_named('scale', command_line=command_line)} must be a whole number of at least 2 "
            f"(e.g. {option_named('scale', 4, command_line=command_line)}), got {shown(scale)}"
        )
    for name, flag in zip(("test_y_channel", "tta", "keep_figure_samples"), flags, strict=True):
        check_flag(flag, name)  # test_y_channel="no" left every PSNR out, image by image
    if figure_image is not None and not isinstance(figure_image, str):  # 5 was looked for, then warned of, per set
        raise InvalidOptionError(f"figure_image must be an image's name or None, got {shown(figure_image)}")
    return lists["models"], [Path(folder).expanduser() for folder in lists["folders"]], lists.get("metrics"), int(scale)


def resolve_metrics(metrics: Sequence[str] | None, *, command_line: bool = False) -> list[str]:
    """The metrics to score, each once (the default ones for None), or a one-line error for an unknown
    one or NIQE where it is missing; NIQE's pristine model is read now (a damaged file is one line, not
    a warning for every image). `command_line`: messages name --metrics, not metrics (`option_named`)."""
    option = option_named("metrics", command_line=command_line)
    metrics = once_each(metrics, option) if metrics is not None else default_metrics()
    unknown = [metric for metric in metrics if metric not in KNOWN_METRICS]
    if unknown:
        raise SRFeatError(f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(KNOWN_METRICS)}")
    if "niqe" in metrics and not niqe_available():
        raise SRFeatError(f"NIQE is not available here (srfeat.metrics.niqe missing): drop it from {option}")
    if "niqe" in metrics:
        importlib.import_module("srfeat.metrics.niqe").pristine_model()
    return metrics


def check_metrics_apply(models: Sequence[str], metrics: Sequence[str], *, command_line: bool = False) -> None:
    """Refuse, before any work, models for which no metric asked for is defined: `hr` alone with PSNR
    and SSIM (the ground truth scored against itself) would be a table of dashes. `command_line`: the
    advice names --model and --metrics, not models= and metrics= (`option_named`)."""
    if all(model == GROUND_TRUTH for model in models) and all(metric in REFERENCE_METRICS for metric in metrics):
        by_niqe = option_named("metrics", ["niqe"], command_line=command_line)
        niqe = f" or score it by NIQE ({by_niqe})" if niqe_available() else ""
        example = option_named("models", [BICUBIC, GROUND_TRUTH], command_line=command_line)
        raise InvalidOptionError(
            f"hr (the ground truth) has no {' or '.join(metric.upper() for metric in metrics)}, which would compare "
            f"it with itself: add a model to compare (e.g. {example}){niqe}"
        )


def once_each(values: Sequence[str], option: str, key: Callable[[str], object] = str) -> list[str]:
    """The values in order, one given twice (or two of one `key`: a file under two names) kept once,
    with a warning (a column or a model's run twice would say nothing new)."""
    first: dict[object, str] = {}
    aliases: dict[str, list[str]] = {}  # value kept -> its other names
    for value in values:
        if (kept := first.setdefault(key(value), value)) != value or values.count(value) > 1:
            others = aliases.setdefault(kept, [])
            others += [value] if kept != value and value not in others else []
    if aliases:
        named = [kept + (f" (also as {', '.join(others)})" if others else "") for kept, others in aliases.items()]
        logger.warning("%s names %s more than once: each is evaluated once", option, ", ".join(named))
    return list(first.values())


def model_identity(spec: str) -> object:
    """What a model spec runs: the file it loads (`x.safetensors` is `./x.safetensors`), a blend's ends
    and alpha (`strength=0.5` is `strength=0.50` and `blend=default,gan,0.5`), or the spec (bicubic, hr, none)."""
    blend = parse_blend_spec(spec)
    if blend is not None:
        return BLEND_PREFIX, model_identity(blend.model_a), model_identity(blend.model_b), blend.alpha
    path = None if spec in (BICUBIC, GROUND_TRUTH) else generator_path(spec)
    return (path.stat().st_dev, path.stat().st_ino) if path is not None and os.path.isfile(path) else spec


def _short_name(spec: str) -> str:
    if spec in (BICUBIC, GROUND_TRUTH) or not Path(spec).suffix:
        return spec
    path = Path(spec)
    # `hr` and `bicubic` name the references' rows (and the plane's lines): hr.safetensors keeps its suffix
    return path.name if path.stem in (BICUBIC, GROUND_TRUTH) else path.stem


def model_labels(specs: Sequence[str], tta: bool = False) -> list[str]:
    """Short, unique names for table rows: a checkpoint path becomes its file stem (in a blend
    spec too), and with `tta` a network's name gets `+tta`."""
    labels = []
    for spec in specs:
        blend = parse_blend_spec(spec) if spec.startswith(BLEND_PREFIX) else None
        if blend is not None:
            label = f"{BLEND_PREFIX}{_short_name(blend.model_a)},{_short_name(blend.model_b)},{blend.alpha:g}"
        else:
            label = spec if is_blend_spec(spec) else _short_name(spec)
        if tta and spec not in (BICUBIC, GROUND_TRUTH):
            label += "+tta"
        base, count = label, 2
        while label in labels:
            label, count = f"{base}#{count}", count + 1
        labels.append(label)
    return labels


def network_names(specs: Sequence[str]) -> list[str]:
    """The generators (bundled names or checkpoint paths) that the specs load, blend ends included,
    each once; `bicubic` and `hr` load none. Ranges (`strength=0:1:0.1`) must be expanded first."""
    names: list[str] = []
    for spec in specs:
        if spec in (BICUBIC, GROUND_TRUTH):
            continue
        blend = parse_blend_spec(spec)
        names += [spec] if blend is None else [blend.model_a, blend.model_b]
    return list(dict.fromkeys(names))


def dataset_labels(folders: Sequence[Path], *, command_line: bool = False) -> list[str]:
    """Each folder's name, made unique (`Set5`, `Set5#2`) so that two folders of one name (a/Set5,
    b/Set5) keep separate rows in the tables and the JSON; said in a warning (of two --data folders
    with `command_line`)."""
    folders_named = "--data folders" if command_line else "folders"
    labels: list[str] = []
    for folder in folders:
        label, count = folder.name or str(folder), 2
        while label in labels:
            label, count = f"{folder.name}#{count}", count + 1
        if label != (folder.name or str(folder)):
            logger.warning("two %s are named %s: %s is labelled %s", folders_named, folder.name, folder, label)
        labels.append(label)
    return labels


def warn_subfolders(folder: Path, *, command_line: bool = False) -> None:
    """A warning naming a folder's subfolders, which are not searched: their images were left out without a
    word (Set5/image_SRF_4/ beside Set5's own images). It says to give a subfolder in `folders` (as a --data
    folder with `command_line`)."""
    try:
        names = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    except OSError:  # not a folder, or unreadable: BenchmarkDataset says so in one line
        return
    if names and any(path.is_file() for path in folder.iterdir()):  # only subfolders: the error says so
        named = ", ".join(map(printable, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        logger.warning(
            "%s: its subfolder(s) %s are not searched, only its own files: give a subfolder %s to score its images",
            printable(str(folder)),
            named,
            "as a --data folder" if command_line else "in folders",
        )


def warn_reduced(datasets: Sequence[tuple[str, BenchmarkDataset]]) -> None:
    """One warning for the run that names the files whose transparency or bit depth the protocol left out:
    it scores 8-bit RGB (the scores are those of the files saved so), which a user's own set did silently."""
    parts = []
    for what, said in (("alpha", "with transparency, alpha dropped"), ("depth", "of 16-bit or float, reduced to 8")):
        names = [
            f"{name}/{path.name}" for name, data in datasets for path, lost in data.reduced.items() if what in lost
        ]
        if names:
            listed = ", ".join(map(printable, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} image(s) {said} ({listed})")
    if parts:
        logger.warning("scored as 8-bit RGB, as the protocol reads every image: %s", "; ".join(parts))


def figure_index(name: str, dataset: BenchmarkDataset, figure_image: str | None) -> int:
    """The index of `figure_image` (an image's name, or its file's: `baby` or `baby.png`) in the dataset,
    or 0 (its first image), said in a warning when asked for another."""
    if figure_image is None:
        return 0
    if figure_image in dataset.names:
        return dataset.names.index(figure_image)
    files = [path.name for path in dataset.files]
    if figure_image in files:  # `baby.png` was not found, `baby` shown in its place
        return files.index(figure_image)
    logger.warning(
        "figure image %s is not in %s (give an image's file name, with or without its extension): "
        "its first image, %s, is shown",
        *map(printable, (figure_image, name, dataset.names[0])),
    )
    return 0
