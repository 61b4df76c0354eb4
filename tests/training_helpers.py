"""Tiny training configs on synthetic folders, shared by the training tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from srfeat.archs.generator import SRFeatGenerator
from srfeat.training import checkpoint, trainer
from srfeat.training.config import TrainingConfig, config_from_dict
from srfeat.weights import save_generator


def write_image_folders(root: Path) -> tuple[Path, Path]:
    """Train folder (3 crops of a scikit-image photo) and validation folder (1 crop)."""
    from skimage import data

    photo = data.astronaut()
    train, validation = root / "train", root / "validation"
    train.mkdir(parents=True, exist_ok=True)
    validation.mkdir(parents=True, exist_ok=True)
    for i, (top, left) in enumerate(((40, 180), (200, 60), (300, 300))):
        Image.fromarray(np.ascontiguousarray(photo[top : top + 64, left : left + 80])).save(train / f"crop{i}.png")
    Image.fromarray(np.ascontiguousarray(photo[100:148, 200:248])).save(validation / "face.png")
    return train, validation


def tiny_generator_file(path: Path) -> Path:
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=2), path)
    return path


def tiny_values(train: Path, validation: Path | None, out_dir: Path, stage: int = 1) -> dict[str, Any]:
    """A YAML-shaped config of tiny networks (8 features, 2 blocks, 32 px HR patches)."""
    return {
        "stage": stage,
        "out_dir": str(out_dir),
        "model": {"num_features": 8, "num_blocks": 2, "discriminator_channels": 8, "discriminator_dense_features": 16},
        "data": {
            "kind": "random_crop",
            "train_dirs": [str(train)],
            "hr_patch_size": 32,
            "repeat": 2,
            "num_workers": 0,
            "pin_memory": False,
        },
        "optim": {"lr": 1e-3, "lr_milestones": []},
        "train": {
            "device": "cpu",
            "batch_size": 2,
            "epochs": 100,
            "max_steps": 4,
            "log_every": 1,
            "checkpoint_every": 2,
            "deterministic": True,
        },
        "validation": {"dir": str(validation) if validation else None, "every": 2, "max_images": 1, "sample_images": 1},
    }


def tiny_config(
    train: Path, validation: Path | None, out_dir: Path, stage: int = 1, overrides: list[str] | None = None
) -> TrainingConfig:
    return config_from_dict(tiny_values(train, validation, out_dir, stage), overrides)


def wait_for_logged_steps(child: subprocess.Popen[Any], out: Path, steps: int) -> None:
    """Until a training child process's metrics.jsonl in `out` holds `steps` training records."""
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count('"kind": "train"') >= steps:
            return
        time.sleep(0.01)
    raise AssertionError(f"the child logged fewer than {steps} steps (exit code {child.poll()})")


def train_in_process(config: TrainingConfig, out: Path, resume: bool = False) -> trainer.RunResult:
    return trainer.train(config, out_dir=out, resume=resume, show_progress=False)


def state_tensors(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor a run folder's state.pt holds (the generator, each discriminator, the EMA
    average if any) and its generator_ema.safetensors if there is one, under prefixed names."""
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    tensors = {f"generator.{k}": v for k, v in state["generator"].items()}
    for name, discriminator in state["discriminators"].items():
        tensors.update({f"{name}.{k}": v for k, v in discriminator.items()})
    if "ema" in state:
        tensors.update({f"ema.{k}": v for k, v in state["ema"]["averaged"].items()})
    if (out / checkpoint.EMA_GENERATOR).is_file():
        tensors.update({f"ema_file.{k}": v for k, v in load_file(str(out / checkpoint.EMA_GENERATOR)).items()})
    return tensors


def assert_resume_matches_an_uninterrupted_run(train: Path, root: Path, stage: int, overrides: list[str]) -> None:
    """Four steps in one go (root/whole) and two, then a resume to four (root/split), end in
    the same tensors, bit for bit. With the tiny folders' 3 steps per epoch, the resume crosses
    an epoch boundary."""
    if stage == 2:
        init = tiny_generator_file(root / "stage1.safetensors")
        overrides = [f"train.init_generator={init}", "data.hr_patch_size=16", *overrides]
    whole, split = root / "whole", root / "split"
    train_in_process(tiny_config(train, None, whole, stage, [*overrides, "train.max_steps=4"]), whole)
    assert train_in_process(tiny_config(train, None, split, stage, [*overrides, "train.max_steps=2"]), split).step == 2
    torch.manual_seed(1234)  # resuming must restore every random state itself
    second = tiny_config(train, None, split, stage, [*overrides, "train.max_steps=4"])
    assert train_in_process(second, split, resume=True).step == 4

    expected, resumed = state_tensors(whole), state_tensors(split)
    assert expected.keys() == resumed.keys()
    different = [key for key in expected if not torch.equal(expected[key], resumed[key])]
    assert not different, different[:5]
