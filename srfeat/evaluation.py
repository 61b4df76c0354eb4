"""The standard evaluation protocol: run models on benchmark folders, score, tabulate, picture.

For every image of a folder: HR mod-cropped to the scale, LR = MATLAB bicubic x1/scale
rounded to uint8, SR = model(LR) rounded to uint8, then PSNR/SSIM on the Y channel with
`scale` pixels shaved (see `srfeat.metrics.psnr_ssim`) and, on request, NIQE (no reference).

Models are given as strings: `bicubic` (MATLAB bicubic upscaling of the LR image, the
baseline every paper reports), `hr` (the ground truth itself, so that no-reference metrics
can score it; its PSNR/SSIM are left empty, and `hr` alone with only those is refused),
anything `srfeat.weights.load_generator` accepts (a bundled name or a checkpoint path), or a
blend (`strength=0.5`, `strength=0:1:0.1`, `blend=A,B,0.3`: see `srfeat.weights.blend`).
With `tta` the networks run as self-ensembles and their rows are labelled `<model>+tta`.
The arguments are checked, and the rows named, by `srfeat.evaluation_inputs` before any work.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from srfeat.data.datasets import BenchmarkDataset, bicubic_upscale, distinct_folders
from srfeat.errors import MetricInputError, ModelOutputError, SRFeatError
from srfeat.errors import printable as printable_name
from srfeat.evaluation_inputs import (
    BICUBIC,
    GROUND_TRUTH,
    KNOWN_METRICS,
    REFERENCE_METRICS,
    check_arguments,
    check_metrics_apply,
    dataset_labels,
    default_metrics,
    model_identity,
    model_labels,
    network_names,
    niqe_available,
    once_each,
    resolve_metrics,
)
from srfeat.files import write_file_atomically
from srfeat.hardware import one_line_if_out_of_memory
from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim
from srfeat.weights import load_generator
from srfeat.weights.blend import expand_blend_specs, parse_blend_spec

__all__ = [
    "BICUBIC",
    "GROUND_TRUTH",
    "KNOWN_METRICS",
    "REFERENCE_METRICS",
    "DatasetScore",
    "EvaluationResult",
    "FigureSample",
    "ImageScore",
    "Upscaler",
    "check_models",
    "default_metrics",
    "evaluate",
    "format_score",
    "json_records",
    "make_upscaler",
    "markdown_table",
    "model_labels",
    "network_names",
    "niqe_available",
    "printable_name",
    "score_image",
    "single_threaded",
    "write_json",
]

logger = logging.getLogger(__name__)

# An upscaler maps a uint8 HxWx3 LR image to a uint8 (scale*H)x(scale*W)x3 SR image.
Upscaler = Callable[[np.ndarray], np.ndarray]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread for a while (the protocol's resizes and rounding: many small operations
    whose intra-op threads gain nothing, and cost several times the work on a busy machine; not models)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- models


def make_upscaler(spec: str, scale: int, device: torch.device, tta: bool = False) -> Upscaler:
    """`bicubic`, or a generator by bundled name, checkpoint path or blend spec (`hr` is handled
    by the caller); `tta`: the generator as a self-ensemble (bicubic is symmetric: no change)."""
    if spec == BICUBIC:

        def upscale_bicubic(lr: np.ndarray) -> np.ndarray:
            with single_threaded():
                return bicubic_upscale(lr, scale)

        return upscale_bicubic
    from srfeat.inference import Upscaler as InferenceUpscaler

    # The inference path users get (folded BatchNorm, fast convolutions), tiled as `srfeat upscale`
    # tiles: a benchmark image is smaller than a tile (the CPU's 1 GiB budget gives 320 x 320 input
    # pixels; no input of Set5, Set14 or BSD100 is over 192 a side), so it is scored whole, and a large
    # photo of a user's own set no longer needs gigabytes (tiling is exact up to float rounding).
    blend = parse_blend_spec(spec)
    upscaler = InferenceUpscaler(spec if blend is None else blend.build(), device=device, tta=tta)
    if upscaler.scale != scale:
        raise SRFeatError(
            f"model {spec} upscales x{upscaler.scale}, but the evaluation is at x{scale}: "
            f"pass --scale {upscaler.scale} (scale={upscaler.scale})"
        )

    def upscale_generator(lr: np.ndarray) -> np.ndarray:
        sr = upscaler(torch.from_numpy(lr.transpose(2, 0, 1).copy()).float().div_(255.0))
        return sr.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()

    return upscale_generator


def check_models(specs: Sequence[str], scale: int) -> None:
    """Build each network a spec names (blend ends included) once, run it on a small test image and
    drop it, before any image is scored: a missing, broken or wrong-scale file, or weights whose output
    is NaN or inf (a diverged run's), fail in one line at the start, not after the models before them."""
    probe = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    for name in network_names(specs):
        load_generator(name, "cpu")  # an .onnx file is refused in eval's words (the Upscaler would run it)
        try:
            make_upscaler(name, scale, torch.device("cpu"))(probe)
        except ModelOutputError as error:
            raise ModelOutputError(
                f"model {name} is broken: its output for a test image is not finite (NaN or inf), as a diverged "
                "run's would be; nothing was scored"
            ) from error


# ----------------------------------------------------------------------------- scoring


@dataclass
class ImageScore:
    model: str
    dataset: str
    image: str
    scores: dict[str, float | None]


@dataclass
class DatasetScore:
    """Means over a folder for one model; `per_image` holds the individual scores."""

    model: str
    dataset: str
    images: int
    scores: dict[str, float | None]
    per_image: list[ImageScore] = field(default_factory=list)
    # How many images each mean covers: fewer than `images` where a metric was undefined for some.
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class FigureSample:
    """One image of a dataset with every model's output, kept for the comparison figure."""

    dataset: str
    image: str
    hr: np.ndarray
    outputs: dict[str, np.ndarray]
    scores: dict[str, dict[str, float | None]]


@dataclass
class EvaluationResult:
    metrics: list[str]
    scale: int
    channel: str
    results: list[DatasetScore]
    figure_samples: list[FigureSample]


def _niqe_or_none(image: np.ndarray, scale: int, name: str) -> float | None:
    """NIQE, or None where it is undefined (image under 96x96 px, no texture): one such image
    must not stop an evaluation; it is left out of the mean and logged."""
    from srfeat.metrics.niqe import niqe

    try:
        return float(niqe(rgb_to_y(image), crop_border=scale))
    except MetricInputError as error:  # not a damaged pristine model (an SRFeatError): that stops the run
        logger.warning("NIQE left out for %s: %s", name or "an image", error)
        return None


def _reference_metric_or_none(
    metric: str, sr: np.ndarray, hr: np.ndarray, scale: int, test_y_channel: bool, name: str
) -> float | None:
    """PSNR or SSIM, or None where the image is too small for it after the border shave (logged,
    left out of the mean, and the table says over how many images the mean is)."""
    function = psnr if metric == "psnr" else ssim
    try:
        return function(sr, hr, crop_border=scale, test_y_channel=test_y_channel)
    except MetricInputError as error:
        logger.warning("%s left out for %s: %s", metric.upper(), name or "an image", error)
        return None


def score_image(
    sr: np.ndarray | None, hr: np.ndarray, metrics: Sequence[str], scale: int, test_y_channel: bool, name: str = ""
) -> dict[str, float | None]:
    """The requested metrics of one SR image (`sr=None` scores the HR image itself: no PSNR/SSIM)."""
    image = hr if sr is None else sr
    if sr is not None and sr.shape != hr.shape:
        raise SRFeatError(
            f"model output is {sr.shape[1]}x{sr.shape[0]} but the HR image is {hr.shape[1]}x{hr.shape[0]}: "
            "wrong --scale (scale=) for this model?"
        )
    scores: dict[str, float | None] = {}
    for metric in metrics:
        if metric in REFERENCE_METRICS and sr is None:
            scores[metric] = None
        elif metric in REFERENCE_METRICS:
            scores[metric] = _reference_metric_or_none(metric, image, hr, scale, test_y_channel, name)
        elif metric == "niqe":
            scores[metric] = _niqe_or_none(image, scale, name)
        else:
            raise SRFeatError(f"unknown metric {metric!r}: choose from {', '.join(KNOWN_METRICS)}")
    return scores


def _out_of_memory(name: str, shape: tuple[int, ...]) -> str:
    return (
        f"out of memory evaluating {name}, {shape[1]}x{shape[0]} pixels: its output and scores are computed "
        "whole; leave the largest images out of the folder (or downscale them), or free memory"
    )


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def _warn_subfolders(folder: Path) -> None:
    """A warning naming a --data folder's subfolders, which are not searched: their images were left out
    without a word (Set5/image_SRF_4/ beside Set5's own images)."""
    try:
        names = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    except OSError:  # not a folder, or unreadable: BenchmarkDataset says so in one line
        return
    if names and any(path.is_file() for path in folder.iterdir()):  # only subfolders: the error says so
        shown = ", ".join(map(printable_name, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        logger.warning(
            "%s: its subfolder(s) %s are not searched, only its own files: give a subfolder as a --data folder "
            "to score its images",
            printable_name(str(folder)),
            shown,
        )


def _warn_reduced(datasets: Sequence[tuple[str, BenchmarkDataset]]) -> None:
    """One warning for the run that names the files whose transparency or bit depth the protocol left out:
    it scores 8-bit RGB (the scores are those of the files saved so), which a user's own set did silently."""
    parts = []
    for what, said in (("alpha", "with transparency, alpha dropped"), ("depth", "of 16-bit or float, reduced to 8")):
        names = [
            f"{name}/{path.name}" for name, data in datasets for path, lost in data.reduced.items() if what in lost
        ]
        if names:
            listed = ", ".join(map(printable_name, names[:5])) + (
                f" and {len(names) - 5} more" if len(names) > 5 else ""
            )
            parts.append(f"{len(names)} image(s) {said} ({listed})")
    if parts:
        logger.warning("scored as 8-bit RGB, as the protocol reads every image: %s", "; ".join(parts))


def _figure_index(name: str, dataset: BenchmarkDataset, figure_image: str | None) -> int:
    """The index of `figure_image` in the dataset, or 0 (its first image), said in a warning when asked for another."""
    if figure_image is None:
        return 0
    if figure_image in dataset.names:
        return dataset.names.index(figure_image)
    logger.warning(
        "--figure-image %s is not in %s: its first image, %s, is shown",
        *map(printable_name, (figure_image, name, dataset.names[0])),
    )
    return 0


def evaluate(
    models: Sequence[str | bytes | os.PathLike[str]],
    folders: Sequence[str | bytes | os.PathLike[str]],
    metrics: Sequence[str] | None = None,
    scale: int = 4,
    device: str = "auto",
    test_y_channel: bool = True,
    figure_image: str | None = None,
    keep_figure_samples: bool = False,
    tta: bool = False,
) -> EvaluationResult:
    """Evaluate each model on each folder by the protocol (`tta`: networks as self-ensembles).

    Models and folders are lists of names or paths (str, bytes, path-like; `~` expanded); each
    network is built and run on a test image before any folder is read. With `keep_figure_samples`,
    one image per folder (`figure_image` if it has it, else its first) is kept with every model's
    output and the bicubic baseline."""
    models, folders, metrics, scale = check_arguments(
        models, folders, metrics, scale, test_y_channel, tta, keep_figure_samples
    )
    metrics = resolve_metrics(metrics)
    check_metrics_apply(models, metrics)
    from srfeat.inference.upscaler import resolve_device

    torch_device = resolve_device(device)
    models = once_each(expand_blend_specs(models), "--model", key=model_identity)
    labels = model_labels(models, tta=tta)
    check_models(models, scale)
    folder_paths = distinct_folders(folders, "--data", "evaluated once")
    datasets: list[tuple[str, BenchmarkDataset]] = []
    for label, folder in zip(dataset_labels(folder_paths), folder_paths, strict=True):
        _warn_subfolders(folder)
        with single_threaded():
            dataset = BenchmarkDataset(folder, scale=scale)
        logger.info(
            "%s: %d image(s)%s",
            printable_name(label),
            len(dataset),
            f", {len(dataset.skipped)} file(s) skipped" if dataset.skipped else "",
        )
        datasets.append((label, dataset))
    _warn_reduced(datasets)
    figure_indices = {name: _figure_index(name, dataset, figure_image) for name, dataset in datasets}
    per_model: dict[tuple[str, str], list[ImageScore]] = {}
    figure_outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name, _ in datasets}
    figure_scores: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name, _ in datasets}
    # One model at a time: a strength=0:1:0.01 range is 101 networks, too many to hold at once.
    for label, spec in zip(labels, models, strict=True):
        upscaler = None if spec == GROUND_TRUTH else make_upscaler(spec, scale, torch_device, tta=tta)
        for name, dataset in datasets:
            rows = per_model[label, name] = []
            for index in tqdm(
                range(len(dataset)), desc=printable_name(f"{label} {name}"), unit="img", disable=None, leave=False
            ):
                _, image_name, hr, lr = dataset.items[index]
                shown = printable_name(f"{name}/{image_name} ({label})")
                # The network runs tiled (its tiles say so themselves), but the image around it, the
                # output and the metrics are whole: an allocation that fails there was a traceback.
                with one_line_if_out_of_memory(lambda shown=shown, hr=hr: _out_of_memory(shown, hr.shape)):
                    sr = None if upscaler is None else upscaler(lr)
                    with single_threaded():
                        scores = score_image(sr, hr, metrics, scale, test_y_channel, name=shown)
                rows.append(ImageScore(label, name, image_name, scores))
                if keep_figure_samples and index == figure_indices[name]:
                    if sr is not None:
                        figure_outputs[name][label] = sr
                    figure_scores[name][label] = scores
        del upscaler
    results: list[DatasetScore] = []
    samples: list[FigureSample] = []
    for name, dataset in datasets:
        for label in labels:
            rows = per_model[label, name]
            values = {metric: [row.scores[metric] for row in rows] for metric in metrics}
            means = {metric: _mean(values[metric]) for metric in metrics}
            counts = {metric: sum(value is not None for value in values[metric]) for metric in metrics}
            results.append(DatasetScore(label, name, len(rows), means, rows, counts))
        if keep_figure_samples:
            _, image_name, hr, lr = dataset.items[figure_indices[name]]
            outputs, image_scores = figure_outputs[name], figure_scores[name]
            if BICUBIC not in outputs:
                with (
                    single_threaded(),
                    one_line_if_out_of_memory(
                        lambda image_name=image_name: (
                            f"{printable_name(image_name)}: out of memory upscaling it by bicubic for the figure: "
                            "choose a smaller image for it (--figure-image)"
                        )
                    ),
                ):
                    bicubic = bicubic_upscale(lr, scale)
                outputs = {BICUBIC: bicubic, **outputs}
                image_scores = {
                    BICUBIC: score_image(
                        bicubic, hr, REFERENCE_METRICS, scale, test_y_channel, name=printable_name(image_name)
                    ),
                    **image_scores,
                }
            samples.append(FigureSample(name, image_name, hr, outputs, image_scores))
    return EvaluationResult(metrics, scale, "y" if test_y_channel else "rgb", results, samples)


# ----------------------------------------------------------------------------- reports

METRIC_HEADERS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "niqe": "NIQE"}
METRIC_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}", "niqe": "{:.3f}"}


def format_score(metric: str, value: float | None) -> str:
    """A score as tables and figures print it: `-` for none, `inf` for identical images."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return METRIC_FORMATS[metric].format(value)


def _mean_cell(row: DatasetScore, metric: str) -> str:
    """The mean, with `(k/n)` when it covers only k of the row's n images (the others were logged)."""
    text = format_score(metric, row.scores[metric])
    count = row.counts.get(metric, row.images)
    not_applicable = row.model == GROUND_TRUTH and metric in REFERENCE_METRICS  # hr has no PSNR/SSIM by design
    return f"{text} ({count}/{row.images})" if count < row.images and not not_applicable else text


def _text(name: str) -> str:
    """A model, folder or image name as a table cell, on one line (`printable_name`), and a `|` in it
    (`a|b.safetensors`) escaped, not a column."""
    return printable_name(name).replace("|", "\\|")


def markdown_table(result: EvaluationResult, per_image: bool = False) -> str:
    """Per-dataset means as a Markdown table, followed by a per-image table if asked."""
    headers = [METRIC_HEADERS[metric] for metric in result.metrics]
    lines = [
        "| model | dataset | images | " + " | ".join(headers) + " |",
        "|---|---|---:|" + "---:|" * len(headers),
    ]
    for row in result.results:
        cells = [_mean_cell(row, metric) for metric in result.metrics]
        lines.append(f"| {_text(row.model)} | {_text(row.dataset)} | {row.images} | " + " | ".join(cells) + " |")
    if per_image:
        lines += [
            "",
            "| dataset | image | model | " + " | ".join(headers) + " |",
            "|---|---|---|" + "---:|" * len(headers),
        ]
        datasets = list(dict.fromkeys(row.dataset for row in result.results))
        for dataset in datasets:
            rows = [row for row in result.results if row.dataset == dataset]
            for image_index in range(rows[0].images):
                for row in rows:
                    image = row.per_image[image_index]
                    cells = [format_score(metric, image.scores[metric]) for metric in result.metrics]
                    names = f"| {_text(dataset)} | {_text(image.image)} | {_text(row.model)} | "
                    lines.append(names + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def json_records(result: EvaluationResult, per_image: bool = False) -> list[dict]:
    """One record per (model, dataset): the means, and the per-image scores if asked."""
    records = []
    for row in result.results:
        record: dict = {
            "model": row.model,
            "dataset": row.dataset,
            "images": row.images,
            "scale": result.scale,
            "crop_border": result.scale,
            "channel": result.channel,
        }
        record.update({metric: _json_number(row.scores[metric]) for metric in result.metrics})
        # How many images each mean covers (fewer than "images" where a metric was undefined for some).
        record.update({f"{metric}_images": row.counts.get(metric, row.images) for metric in result.metrics})
        if per_image:
            record["per_image"] = [
                {"image": image.image, **{metric: _json_number(image.scores[metric]) for metric in result.metrics}}
                for image in row.per_image
            ]
        records.append(record)
    return records


def write_json(path: str | Path, result: EvaluationResult, per_image: bool = False, replace: bool = True) -> None:
    """The records as JSON, written all or nothing (a temporary renamed over `path`; with `replace`
    False an existing file is kept: `srfeat.files.OutputExistsError`)."""
    data = (json.dumps(json_records(result, per_image), indent=2) + "\n").encode()
    write_file_atomically(Path(path), lambda handle: handle.write(data), len(data), replace)
