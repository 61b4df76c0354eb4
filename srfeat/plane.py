"""The perception-distortion plane (Blau and Michaeli, CVPR 2018) of evaluation records.

Distortion (PSNR, faithfulness to the original) and perceptual quality (NIQE, how natural the
picture looks) cannot both be optimal: the best reachable points form a curve. The detail dial
(`strength`, the default/gan network interpolation) walks along it, and this figure shows
where: one panel per dataset, PSNR across, NIQE up (lower is better), the `strength=S` models
joined as a curve, every other model a labelled point and the HR images' own NIQE a line.

The input is what `srfeat eval --json` writes (`srfeat.evaluation.json_records`), so a figure
can be drawn from the evaluation that just ran (`srfeat eval --plane`) or from saved records
of several runs (`scripts/plot_plane.py`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srfeat.errors import SRFeatError, check_flag

__all__ = ["check_plane_metrics", "plane_figure", "plane_table"]

logger = logging.getLogger(__name__)

Record = dict[str, Any]
STRENGTH_PREFIX = "strength="
GROUND_TRUTH = "hr"
# Why a measured model may have no point on the plane.
UNDRAWN = (
    "NIQE is undefined under 96 px or on a flat image, PSNR infinite for an output identical to HR; "
    "the table has the numbers"
)


def check_plane_metrics(metrics: Sequence[str] | None, models: Sequence[str] = ()) -> None:
    """The plane needs PSNR and NIQE, and a model that has a PSNR (not only `hr`): fail before the
    evaluation runs, not after."""
    if metrics is not None and not {"psnr", "niqe"} <= set(metrics):
        raise SRFeatError("--plane draws NIQE against PSNR: include both in --metrics (e.g. --metrics psnr ssim niqe)")
    if models and all(model == GROUND_TRUTH for model in models):
        raise SRFeatError(
            "--plane draws NIQE against PSNR, and hr (the ground truth) has no PSNR: add a model "
            "(e.g. --model bicubic hr strength=0:1:0.1)"
        )


def _strength(model: str) -> float | None:
    """S of a `strength=S` row, else None (`strength=S+tta` rows form a curve of their own)."""
    if not model.startswith(STRENGTH_PREFIX):
        return None
    try:
        return float(model.removeprefix(STRENGTH_PREFIX).removesuffix("+tta"))
    except ValueError:
        return None


def _number(record: Record, metric: str) -> float | None:
    value = record.get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _by_dataset(records: Sequence[Record]) -> dict[str, dict[str, Record]]:
    """dataset -> model -> record, in the order they first appear; a later record replaces an earlier one."""
    datasets: dict[str, dict[str, Record]] = {}
    for record in records:
        datasets.setdefault(str(record["dataset"]), {})[str(record["model"])] = record
    return datasets


def _curves(models: dict[str, Record]) -> dict[str, list[tuple[float, Record]]]:
    """The strength=S rows grouped into curves (plain, +tta), each sorted by S."""
    curves: dict[str, list[tuple[float, Record]]] = {}
    for model, record in models.items():
        strength = _strength(model)
        if strength is not None:
            name = "strength" + ("+tta" if model.endswith("+tta") else "")
            curves.setdefault(name, []).append((strength, record))
    return {name: sorted(points, key=lambda point: point[0]) for name, points in curves.items()}


def plane_figure(
    path: str | Path, records: Sequence[Record], replace: bool = True, *, command_line: bool = False
) -> None:
    """Write the PNG: one panel per dataset with PSNR and NIQE in `records`. `replace` is True or False
    (else `srfeat.errors.InvalidOptionError`, before anything is drawn); `command_line` as `save_figure`'s."""
    check_flag(replace, "replace")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srfeat.figures import figure_text, save_figure

    datasets = {
        name: models
        for name, models in _by_dataset(records).items()
        if any(_number(r, "psnr") is not None and _number(r, "niqe") is not None for r in models.values())
    }
    if not datasets:
        # Both measured, none drawable (small images, flat ones): asking for them again would not help.
        measured = any("psnr" in r and "niqe" in r for r in records if r.get("model") != GROUND_TRUTH)
        raise SRFeatError(
            "nothing to draw on the perception-distortion plane: no model has both "
            + (f"a finite PSNR and NIQE ({UNDRAWN})" if measured else "PSNR and NIQE")
            + ("" if measured else " (evaluate with --metrics psnr niqe and a model other than hr)")
        )
    # A point that is not drawn is said, or the plane reads as if the model had not been evaluated.
    left_out = [
        f"{model} on {dataset}"
        for dataset, models in _by_dataset(records).items()
        for model, record in models.items()
        if _number(record, "niqe") is None or (model != GROUND_TRUTH and _number(record, "psnr") is None)
    ]
    if left_out:
        logger.warning(
            "the plane leaves out %s: no finite PSNR and NIQE (%s)",
            ", ".join(left_out),
            UNDRAWN,
        )
    # `srfeat eval --rgb` measures PSNR on RGB (about 1.5 dB below Y's): the axis says which.
    channels = " and ".join(sorted({str(record.get("channel", "y")).upper() for record in records}))
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.4), squeeze=False)
    for axis, (dataset, models) in zip(axes[0], datasets.items(), strict=True):
        for name, points in _curves(models).items():
            xy = [(_number(r, "psnr"), _number(r, "niqe")) for _, r in points]
            kept = [(s, x, y) for (s, _), (x, y) in zip(points, xy, strict=True) if x is not None and y is not None]
            axis.plot(
                [x for _, x, _ in kept],
                [y for _, _, y in kept],
                "o-",
                color="tab:blue",
                ms=4,
                label=f"detail dial ({figure_text(name)})",
            )
            for strength, x, y in kept:
                axis.annotate(f"{strength:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for model, record in models.items():
            x, y = _number(record, "psnr"), _number(record, "niqe")
            if _strength(model) is not None or x is None or y is None:
                continue
            axis.plot([x], [y], "s", color="tab:red" if model == "bicubic" else "tab:green", ms=5)
            axis.annotate(figure_text(model), (x, y), textcoords="offset points", xytext=(5, -9), fontsize=8)
        hr_niqe = _number(models.get(GROUND_TRUTH, {}), "niqe")
        if hr_niqe is not None:
            axis.axhline(hr_niqe, color="grey", linestyle="--", linewidth=1)
            axis.annotate(
                f"HR images: NIQE {hr_niqe:.2f}",
                (0.02, hr_niqe),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 3),
                fontsize=8,
                color="grey",
            )
        axis.margins(x=0.1, y=0.08)  # room for the labels of the points at the edges
        axis.set_title(figure_text(dataset))
        axis.set_xlabel(f"PSNR (dB, {channels}): more faithful ->")
        axis.set_ylabel("NIQE: lower looks more natural")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right", fontsize=8, title="default (0) .. gan (1)", title_fontsize=8)
    figure.tight_layout()

    save_figure(figure, path, replace, command_line=command_line)


def plane_table(records: Sequence[Record]) -> str:
    """A Markdown table: one row per model (bicubic, the blends by strength, the rest, hr),
    PSNR and NIQE of each dataset side by side."""
    datasets = _by_dataset(records)
    models: list[str] = list(dict.fromkeys(model for per_model in datasets.values() for model in per_model))

    def order(model: str) -> tuple[int, float, str]:
        strength = _strength(model)
        if model == "bicubic":
            return (0, 0.0, model)
        if strength is not None:
            return (1 + model.endswith("+tta"), strength, model)
        return (4 if model == GROUND_TRUTH else 3, 0.0, model)

    header = "| model | " + " | ".join(f"{name} PSNR (dB) | {name} NIQE" for name in datasets) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(datasets)]
    for model in sorted(models, key=order):
        cells = []
        for per_model in datasets.values():
            record = per_model.get(model, {})
            psnr, niqe = _number(record, "psnr"), _number(record, "niqe")
            cells += ["-" if psnr is None else f"{psnr:.2f}", "-" if niqe is None else f"{niqe:.3f}"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
