"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATASETS = Path(os.environ.get("SRFEAT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The benchmark/training sets (Set5, Set14, BSD100, T91, BSDS200), or a skip."""
    if not (DATASETS / "Set5").is_dir():
        pytest.skip(f"benchmark datasets not found at {DATASETS} (set SRFEAT_DATASETS to their folder)")
    return DATASETS


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
