"""What `srfeat.evaluation.evaluate` gives back, and the reports made of it.

The results' types (`EvaluationResult`: a `DatasetScore` per model and folder, each with its
`ImageScore`s; `FigureSample`s for the comparison figure), the means a row holds
(`dataset_score`), and the reports: the Markdown table `srfeat eval` prints (`markdown_table`)
and the JSON records `--json` writes (`json_records`, `write_json`), which `srfeat.plane` reads.
`srfeat.evaluation` re-exports all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srfeat.errors import check_flag
from srfeat.errors import printable as printable_name
from srfeat.evaluation_inputs import GROUND_TRUTH, REFERENCE_METRICS
from srfeat.files import write_file_atomically

__all__ = [
    "DatasetScore",
    "EvaluationResult",
    "FigureSample",
    "ImageScore",
    "dataset_score",
    "format_score",
    "json_records",
    "markdown_table",
    "write_json",
]


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


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def dataset_score(model: str, dataset: str, rows: list[ImageScore], metrics: Sequence[str]) -> DatasetScore:
    """One model's row for one folder: each metric's mean over the images where it is defined, and over how many."""
    values = {metric: [row.scores[metric] for row in rows] for metric in metrics}
    means = {metric: _mean(values[metric]) for metric in metrics}
    counts = {metric: sum(value is not None for value in values[metric]) for metric in metrics}
    return DatasetScore(model, dataset, len(rows), means, rows, counts)


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
    per_image = check_flag(per_image, "per_image")  # "no" added the per-image table
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


def _json_text(name: str) -> str:
    """A name as UTF-8 text: a file name that is not UTF-8 (Latin-1's `caf\\xe9`, held with a lone surrogate)
    with its odd bytes written as `\\xe9`, as `ls -b` shows them. JSON's `\\udce9` escape for it was a lone
    surrogate, which strict readers (and Python's own `str.encode`) refuse."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name holds, from Python: its code point, written out
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def json_records(result: EvaluationResult, per_image: bool = False) -> list[dict]:
    """One record per (model, dataset): the means, and the per-image scores if asked. Names are UTF-8
    (`_json_text`)."""
    per_image = check_flag(per_image, "per_image")
    records = []
    for row in result.results:
        record: dict = {
            "model": _json_text(row.model),
            "dataset": _json_text(row.dataset),
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
                {
                    "image": _json_text(image.image),
                    **{metric: _json_number(image.scores[metric]) for metric in result.metrics},
                }
                for image in row.per_image
            ]
        records.append(record)
    return records


def write_json(
    path: str | Path,
    result: EvaluationResult,
    per_image: bool = False,
    replace: bool = True,
    *,
    command_line: bool = False,
) -> None:
    """The records as JSON, written all or nothing (a temporary renamed over `path`; with `replace`
    False an existing file is kept: `srfeat.files.OutputExistsError`, naming replace=True, or --overwrite
    with `command_line`; both flags are True or False)."""
    replace = check_flag(replace, "replace")  # "no" replaced the file
    data = (json.dumps(json_records(result, per_image), indent=2) + "\n").encode()
    write_file_atomically(Path(path), lambda handle: handle.write(data), len(data), replace, command_line=command_line)
