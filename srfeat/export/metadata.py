"""What an exported model's metadata says of where it came from: `ModelInfo`, the bundled models'
cards (`BUNDLED_INFO`), and `model_info`, which makes one for a bundled name, a default/gan blend, or
a checkpoint. Its text is checked as ONNX metadata needs it (UTF-8) when it is made, before the
export's work."""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, InitVar, dataclass
from pathlib import Path

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, OptionNames, WeightsError, bytes_shown, given
from srfeat.weights import as_path

__all__ = ["BUNDLED_INFO", "MODEL_INFO_OPTIONS", "PROJECT_LICENSE", "ModelInfo", "model_info"]

PROJECT_LICENSE = "MIT"

# `ModelInfo`'s fields in a message: the field from Python, the flag of `srfeat export` that gave it
# (the name comes from --model)
MODEL_INFO_OPTIONS = OptionNames(
    {"name": "--model", "training_data": "--training-data", "license": "--license"},
    {"name": "the model's name", "training_data": "the model's training_data", "license": "the model's license"},
)


@dataclass(frozen=True)
class ModelInfo:
    """What the model's metadata says about where it came from. `command_line=True` (a command built it
    from its flags) names the flags in its refusals, else the fields."""

    name: str
    training_data: str
    license: str
    _: KW_ONLY
    command_line: InitVar[bool] = False

    def __post_init__(self, command_line: bool) -> None:
        # ONNX metadata is UTF-8. Text from a terminal in another encoding comes to Python with its bytes
        # as surrogates (--license $'\xa9 M\xfcller' in Latin-1): protobuf's UnicodeEncodeError, a
        # traceback, after the export's seconds of work.
        for field in ("name", "training_data", "license"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise InvalidOptionError(f"the model's {field} must be text, got {given(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidOptionError(
                    bytes_shown(
                        f"{MODEL_INFO_OPTIONS(field, command_line=command_line)} {value[:60]!r} holds bytes that "
                        "are not UTF-8, which ONNX metadata must be: give it in UTF-8 (e.g. set a UTF-8 locale, "
                        "LANG=C.UTF-8)"
                    )
                ) from None


BUNDLED_INFO: dict[str, ModelInfo] = {
    "default": ModelInfo(
        "default",
        "T91 + BSDS200 (random crops of the 291 images, of T91 + 80 BSDS200 images in its GPU run, of the 291 "
        "shrunk by 0.9 to 0.4 as well in its last runs; flips and rotations; colours permuted in one run), LR by "
        "MATLAB bicubic x1/4; MSE, then the mean absolute error in its last three runs (srfeat stage 1)",
        f"{PROJECT_LICENSE} (weights trained by the srfeat project)",
    ),
    "gan": ModelInfo(
        "gan",
        "T91 + 80 BSDS200 images (192x192 crops), LR by MATLAB bicubic x1/4; VGG19 conv5_4 perceptual loss "
        "plus image and feature discriminators (srfeat stage 2, from default)",
        f"{PROJECT_LICENSE} (weights trained by the srfeat project)",
    ),
}


def model_info(
    model: str | bytes | os.PathLike[str] | SRFeatGenerator,
    strength: float | None = None,
    training_data: str | None = None,
    license: str | None = None,
    *,
    command_line: bool = False,
) -> ModelInfo:
    """Metadata for a bundled name (its model card), a default/gan blend (`strength`), or a
    checkpoint or generator (what the caller says, else 'not recorded'). `command_line=True`
    (`srfeat export`) names its flags in a refusal."""
    from srfeat.weights.blend import is_blend_spec

    if isinstance(model, str) and is_blend_spec(model):  # `strength=0.3`, `blend=A,B,ALPHA`, as eval takes them
        return blend_info(model, strength, training_data, license, command_line=command_line)
    if isinstance(model, SRFeatGenerator):
        name = "generator"
    else:
        name = model if isinstance(model, str) else str(as_path(model, "the model"))  # 5 was the model "5"
        if name.lower().endswith(".onnx"):
            raise WeightsError(f"{name} is already an ONNX model; export takes a bundled name or a srfeat checkpoint")
    if strength is not None and name in BUNDLED_INFO:
        from srfeat.weights.blend import DETAIL_MODELS, check_alpha

        # 2 was written as "-1 x default + 2 x gan"; -0 is 0 (check_alpha's): not `strength--0` in the name
        # named as upscale names it: export's refusal said "strength must be", upscale's "--strength must be"
        strength = check_alpha(strength, "--strength" if command_line else "strength", InvalidOptionError)

        low, high = (BUNDLED_INFO[each] for each in DETAIL_MODELS)
        blend = ModelInfo(
            f"{low.name}-{high.name}-strength-{strength:g}",
            f"network interpolation {1 - strength:g} x {low.name} + {strength:g} x {high.name}; "
            f"{low.name}: {low.training_data}; {high.name}: {high.training_data}",
            high.license,
        )
        return ModelInfo(
            blend.name, training_data or blend.training_data, license or blend.license, command_line=command_line
        )
    if name in BUNDLED_INFO:
        bundled = BUNDLED_INFO[name]
        return ModelInfo(
            bundled.name, training_data or bundled.training_data, license or bundled.license, command_line=command_line
        )
    # A file name in another encoding than UTF-8 (its bytes as surrogates) is named as best it can be.
    stem = os.fsencode(Path(name).stem).decode("utf-8", "replace")
    return ModelInfo(stem, training_data or "not recorded", license or "not recorded", command_line=command_line)


def blend_info(
    spec: str, strength: float | None, training_data: str | None, license: str | None, *, command_line: bool = False
) -> ModelInfo:
    """Metadata for a model spec: `strength=S` (and `blend=default,gan,S`) as `--strength S` gives it; another
    blend named by its two models' names and alpha, with both models' training data and licences."""
    from srfeat.weights.blend import DETAIL_MODELS, one_blend

    blend = one_blend(spec, strength, command_line=command_line)
    if (blend.model_a, blend.model_b) == DETAIL_MODELS:
        return model_info(blend.model_a, blend.alpha, training_data, license, command_line=command_line)
    low, high = (model_info(each, command_line=command_line) for each in (blend.model_a, blend.model_b))
    alpha = blend.alpha
    mixed = f"network interpolation {1 - alpha:g} x {low.name} + {alpha:g} x {high.name}"
    both_licenses = (
        low.license if low.license == high.license else f"{low.name}: {low.license}; {high.name}: {high.license}"
    )
    return ModelInfo(
        f"{low.name}-{high.name}-blend-{alpha:g}",
        training_data or f"{mixed}; {low.name}: {low.training_data}; {high.name}: {high.training_data}",
        license or both_licenses,
        command_line=command_line,
    )
