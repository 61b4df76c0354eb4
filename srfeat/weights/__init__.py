"""Generator weights: the bundled models and checkpoint files, loaded without running pickles.

A generator file is a safetensors state dict of `SRFeatGenerator`; its architecture (scale,
width, depth) is read off the tensor shapes, so any checkpoint `srfeat train` writes loads
here. `.pt`/`.pth` files are read with `torch.load(weights_only=True)`, and a training state
holding a `generator` entry works too.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import WeightsError

GENERATOR_FORMAT = "srfeat-generator"


def bundled_dir() -> Path:
    return Path(str(resources.files("srfeat.weights")))


def bundled_names() -> list[str]:
    """Names of the generators that ship with the package (`default`, `gan`, ...)."""
    return sorted(path.stem for path in bundled_dir().glob("*.safetensors"))


def save_generator(
    generator: SRFeatGenerator, path: str | os.PathLike[str], dtype: torch.dtype = torch.float32
) -> None:
    """Write the generator's state dict as safetensors, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.to(dtype) if value.is_floating_point() else value).detach().cpu().contiguous()
        for key, value in generator.state_dict().items()
    }
    metadata = {
        "format": GENERATOR_FORMAT,
        "scale": str(generator.scale),
        "num_features": str(generator.num_features),
        "num_blocks": str(generator.num_blocks),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(
            f"generator weights not found: {path} "
            f"(give a bundled name: {', '.join(bundled_names()) or 'none installed'}, or a checkpoint path)"
        )
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise their own types
        raise WeightsError(
            f"cannot read {path}: expected an SRFeat generator as .safetensors or a .pt state dict ({error})"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("generator"), dict):
        state = state["generator"]  # a full training state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors: expected an SRFeat generator checkpoint")
    return state


def generator_from_state(state: dict[str, torch.Tensor], source: str = "state dict") -> SRFeatGenerator:
    """Build the generator the tensors describe and load them; a foreign state dict fails clearly."""
    state = {key.removeprefix("module."): value for key, value in state.items()}  # DDP-wrapped saves
    try:
        num_features, in_channels = state["head.weight"].shape[:2]
        num_blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k)))
        stages = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"upsampler\.(\d+)\.", k)))
    except (KeyError, ValueError) as error:
        raise WeightsError(
            f"{source} is not an SRFeat generator (no head/body/upsampler weights): wrong architecture"
        ) from error
    try:
        generator = SRFeatGenerator(
            scale=2**stages, num_features=num_features, num_blocks=num_blocks, in_channels=in_channels
        )
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise WeightsError(f"{source} does not match the SRFeat generator architecture: {first_line}") from error
    return generator


def load_generator(spec: str | os.PathLike[str], device: str | torch.device = "cpu") -> SRFeatGenerator:
    """A bundled name (`default`, `gan`) or a checkpoint path -> eval-mode generator on `device`."""
    spec = str(spec)
    path = bundled_dir() / f"{spec}.safetensors" if spec in bundled_names() else Path(spec).expanduser()
    generator = generator_from_state(_read_state(path), source=str(path))
    return generator.to(device).eval()
