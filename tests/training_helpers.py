"""Tiny training configs on synthetic folders, shared by the training tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from srfeat.archs.generator import SRFeatGenerator
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


def wait_for_logged_steps(child: subprocess.Popen[str], out: Path, steps: int) -> None:
    """Until a training child process's metrics.jsonl in `out` holds `steps` training records."""
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count('"kind": "train"') >= steps:
            return
        time.sleep(0.01)
    raise AssertionError(f"the child logged fewer than {steps} steps (exit code {child.poll()})")
