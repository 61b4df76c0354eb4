"""The standard evaluation protocol: run models on benchmark folders and score their outputs.

For every image of a folder: HR mod-cropped to the scale, LR = MATLAB bicubic x1/scale
rounded to uint8, SR = model(LR) rounded to uint8, then PSNR/SSIM on the Y channel with
`scale` pixels shaved (see `srfeat.metrics.psnr_ssim`) and, on request, NIQE (no reference).

Models are given as strings: `bicubic` (MATLAB bicubic upscaling of the LR image, the
baseline every paper reports), `hr` (the ground truth itself, so that no-reference metrics
can score it; its PSNR/SSIM are left empty, and `hr` alone with only those is refused),
anything `srfeat.weights.load_generator` accepts (a bundled name or a checkpoint path), or a
blend (`strength=0.5`, `strength=0:1:0.1`, `blend=A,B,0.3`: see `srfeat.weights.blend`).
With `tta` the networks run as self-ensembles and their rows are labelled `<model>+tta`.
The arguments are checked, and the rows named, by `srfeat.evaluation_inputs` before any work;
the results' types, their Markdown table and JSON are `srfeat.evaluation_results` (re-exported here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from srfeat.data.benchmark import BenchmarkDataset
from srfeat.data.datasets import bicubic_upscale, distinct_folders
from srfeat.errors import MetricInputError, ModelOutputError, SRFeatError, TileOutOfMemoryError
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
    figure_index,
    model_identity,
    model_labels,
    network_names,
    niqe_available,
    once_each,
    option_named,
    resolve_metrics,
    warn_reduced,
    warn_subfolders,
)
from srfeat.evaluation_results import (
    DatasetScore,
    EvaluationResult,
    FigureSample,
    ImageScore,
    dataset_score,
    format_score,
    json_records,
    markdown_table,
    write_json,
)
from srfeat.hardware import one_line_if_out_of_memory
from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim
from srfeat.weights import load_generator
from srfeat.weights.blend import expand_blend_specs

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
    "evaluation_tile_advice",
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


def make_upscaler(
    spec: str, scale: int, device: torch.device, tta: bool = False, *, command_line: bool = False
) -> Upscaler:
    """`bicubic`, or a generator by bundled name, checkpoint path or blend spec (`hr` is handled
    by the caller); `tta`: the generator as a self-ensemble (bicubic is symmetric: no change).
    A generator of another scale is refused saying to pass scale= (--scale with `command_line`)."""
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
    upscaler = InferenceUpscaler(spec, device=device, tta=tta, command_line=command_line)  # a blend spec too
    if upscaler.scale != scale:
        raise SRFeatError(
            f"model {spec} upscales x{upscaler.scale}, but the evaluation is at x{scale}: "
            f"pass {option_named('scale', upscaler.scale, command_line=command_line)}"
        )

    def upscale_generator(lr: np.ndarray) -> np.ndarray:
        try:
            sr = upscaler(torch.from_numpy(lr.transpose(2, 0, 1).copy()).float().div_(255.0))
        except TileOutOfMemoryError as error:  # its advice names the Upscaler's tile size, which eval does not take
            advice = evaluation_tile_advice(device, command_line=command_line)
            raise TileOutOfMemoryError(error.problem, advice) from error
        return sr.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()

    return upscale_generator


def evaluation_tile_advice(device: torch.device, *, command_line: bool) -> str:
    """What the evaluation's caller can do for a tile out of memory. It has no tile size to give: the size was
    planned from the memory free then, which others took since. Free it, or on a GPU evaluate on the CPU
    (`--device cpu` with `command_line`, else `device='cpu'`)."""
    from srfeat.inference.devices import on_the_cpu
    from srfeat.inference.tiling import FREE_MEMORY

    if device.type == "cpu":
        return FREE_MEMORY
    return f"{FREE_MEMORY}, or evaluate on the CPU ({on_the_cpu(command_line=command_line)})"


def check_models(specs: Sequence[str], scale: int, *, command_line: bool = False) -> None:
    """Build each network a spec names (blend ends included) once, run it on a small test image and
    drop it, before any image is scored: a missing, broken or wrong-scale file, or weights whose output
    is NaN or inf (a diverged run's), fail in one line at the start, not after the models before them."""
    probe = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    for name in network_names(specs):
        load_generator(name, "cpu")  # an .onnx file is refused in eval's words (the Upscaler would run it)
        try:
            make_upscaler(name, scale, torch.device("cpu"), command_line=command_line)(probe)
        except ModelOutputError as error:
            raise ModelOutputError(
                f"model {name} is broken: its output for a test image is not finite (NaN or inf), as a diverged "
                "run's would be; nothing was scored"
            ) from error


# ----------------------------------------------------------------------------- scoring


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
            "wrong scale for this model?"
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
    *,
    command_line: bool = False,
) -> EvaluationResult:
    """Evaluate each model on each folder by the protocol (`tta`: networks as self-ensembles).

    Models and folders are lists of names or paths (str, bytes, path-like; `~` expanded); each
    network is built and run on a test image before any folder is read. With `keep_figure_samples`,
    one image per folder (`figure_image` if it has it, else its first) is kept with every model's
    output and the bicubic baseline.

    Messages name these keywords (`models`, `scale=2`, `figure_image`); `command_line` (`srfeat eval`'s)
    names its flags instead (`--model`, `--scale 2`, `--figure-image`)."""
    models, folders, metrics, scale = check_arguments(
        models,
        folders,
        metrics,
        scale,
        figure_image,
        test_y_channel,
        tta,
        keep_figure_samples,
        command_line=command_line,
    )
    metrics = resolve_metrics(metrics, command_line=command_line)
    check_metrics_apply(models, metrics, command_line=command_line)
    from srfeat.inference.upscaler import resolve_device

    torch_device = resolve_device(device, command_line=command_line)
    models = once_each(
        expand_blend_specs(models), option_named("models", command_line=command_line), key=model_identity
    )
    labels = model_labels(models, tta=tta)
    check_models(models, scale, command_line=command_line)
    folder_paths = distinct_folders(folders, option_named("folders", command_line=command_line), "evaluated once")
    datasets: list[tuple[str, BenchmarkDataset]] = []
    for label, folder in zip(dataset_labels(folder_paths, command_line=command_line), folder_paths, strict=True):
        warn_subfolders(folder, command_line=command_line)
        with single_threaded():
            dataset = BenchmarkDataset(folder, scale=scale)
        logger.info(
            "%s: %d image(s)%s",
            printable_name(label),
            len(dataset),
            f", {len(dataset.skipped)} file(s) skipped" if dataset.skipped else "",
        )
        datasets.append((label, dataset))
    warn_reduced(datasets)
    figure_indices = {name: figure_index(name, dataset, figure_image) for name, dataset in datasets}
    per_model: dict[tuple[str, str], list[ImageScore]] = {}
    figure_outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name, _ in datasets}
    figure_scores: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name, _ in datasets}
    # One model at a time: a strength=0:1:0.01 range is 101 networks, too many to hold at once.
    for label, spec in zip(labels, models, strict=True):
        upscaler = (
            None if spec == GROUND_TRUTH else make_upscaler(spec, scale, torch_device, tta, command_line=command_line)
        )
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
            results.append(dataset_score(label, name, per_model[label, name], metrics))
        if keep_figure_samples:
            _, image_name, hr, lr = dataset.items[figure_indices[name]]
            outputs, image_scores = figure_outputs[name], figure_scores[name]
            if BICUBIC not in outputs:
                with (
                    single_threaded(),
                    one_line_if_out_of_memory(
                        lambda image_name=image_name: (
                            f"{printable_name(image_name)}: out of memory upscaling it by bicubic for the figure: "
                            f"choose a smaller image for it ({option_named('figure_image', command_line=command_line)})"
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
