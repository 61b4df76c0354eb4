"""Figures of an evaluation: the same crop of every model's output side by side, and the
all-or-nothing saving of a matplotlib figure that `srfeat eval --figure` and `--plane` share."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srfeat.errors import SRFeatError, check_flag, printable
from srfeat.evaluation import GROUND_TRUTH, FigureSample, format_score
from srfeat.files import write_file_atomically
from srfeat.metrics.psnr_ssim import rgb_to_y

__all__ = ["comparison_figure", "most_detailed_crop", "save_figure"]


def most_detailed_crop(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window of `hr` with the most edge energy.

    A flat patch of sky shows no difference between methods; the busiest patch shows most.
    """
    y = rgb_to_y(hr)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    # Window sums from an integral image, evaluated on a coarse grid of positions.
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    limit_h, limit_w = energy.shape[0] - size + 1, energy.shape[1] - size + 1
    if limit_h <= 0 or limit_w <= 0:
        return 0, 0
    step = max(1, size // 8)
    tops, lefts = np.arange(0, limit_h, step), np.arange(0, limit_w, step)
    top, left = np.meshgrid(tops, lefts, indexing="ij")
    bottom, right = top + size, left + size
    sums = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    best = np.unravel_index(np.argmax(sums), sums.shape)
    return int(tops[best[0]]), int(lefts[best[1]])


def figure_text(name: str) -> str:
    """A model, folder or image name as matplotlib draws it as written: a name that is not UTF-8 (a
    Latin-1 system's `caf\\xe9`, held with a surrogate) was a traceback from FreeType, so its bytes
    are shown as a file manager does (`caf\ufffd`); a control character is escaped (`printable`),
    and a `$` too, which started mathtext (`a$b$.png` drawn in italics, or a parse error)."""
    shown = printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return shown.replace("$", "\\$")


def save_figure(figure: Any, path: str | Path, replace: bool = True, *, command_line: bool = False) -> None:
    """Save a matplotlib figure all or nothing (rendered in memory, then a temporary renamed over `path`;
    with `replace` False an existing file is kept, naming replace=True, or --overwrite with `command_line`)
    in the format its suffix names, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    buffer = io.BytesIO()
    try:
        replace = check_flag(replace, "replace")  # "no" replaced the file: a string is true
        figure.savefig(buffer, dpi=100, format=path.suffix.lstrip(".").lower())
    finally:
        plt.close(figure)
    data = buffer.getvalue()
    write_file_atomically(path, lambda handle: handle.write(data), len(data), replace, command_line=command_line)


def comparison_figure(
    path: str | Path,
    samples: Sequence[FigureSample],
    crop_size: int = 96,
    replace: bool = True,
    *,
    command_line: bool = False,
) -> None:
    """A PNG: one row per dataset, the same crop of bicubic, each model and HR, labelled with scores.
    `replace` is True or False (else `srfeat.errors.InvalidOptionError`, before anything is drawn);
    `command_line` as `save_figure`'s."""
    check_flag(replace, "replace")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise SRFeatError("nothing to draw: no images were evaluated")
    columns = max(len(sample.outputs) + 1 for sample in samples)
    figure, axes = plt.subplots(len(samples), columns, figsize=(2.6 * columns, 2.9 * len(samples)), squeeze=False)
    for row, sample in enumerate(samples):
        size = min(crop_size, *sample.hr.shape[:2])
        top, left = most_detailed_crop(sample.hr, size)
        panels = [*sample.outputs.items(), (GROUND_TRUTH.upper(), sample.hr)]
        for column, axis in enumerate(axes[row]):
            axis.set_axis_off()
            if column >= len(panels):
                continue
            label, image = panels[column]
            axis.imshow(image[top : top + size, left : left + size], interpolation="nearest")
            scores = sample.scores.get(label, {})
            detail = [
                f"{format_score(metric, scores.get(metric))} {unit}".strip()
                for metric, unit in (("psnr", "dB"), ("ssim", ""))
                if scores.get(metric) is not None
            ]
            title = figure_text(label) if not detail else f"{figure_text(label)}\n{' / '.join(detail)}"
            axis.set_title(title, fontsize=9)
        axes[row][0].text(
            -0.08,
            0.5,
            figure_text(f"{sample.dataset}: {sample.image}"),
            transform=axes[row][0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=9,
        )
    figure.tight_layout()
    save_figure(figure, path, replace, command_line=command_line)
