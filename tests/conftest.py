"""Shared test fixtures: the official-parity fixture folder, a tiny model config, and a tiny
random-weight checkpoint at small inference sizes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.config import Config, load_config
from mask2anomaly.model import build_model

FIXTURE_DIR = Path(
    os.environ.get(
        "MASK2ANOMALY_FIXTURES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official-parity",
    )
)

SMALL = ["inference.min_size=32", "inference.max_size=64"]  # tiny checkpoints predict fast


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def official_fixture() -> tuple[ModuleType, dict]:
    """(make_weights module, expected tensors) of the official-parity fixture."""
    if not (FIXTURE_DIR / "make_weights.py").exists():
        if os.environ.get("CI"):  # CI always has shared/ beside the checkout
            pytest.fail(f"official-parity fixture not found at {FIXTURE_DIR}")
        pytest.skip(f"official-parity fixture not found at {FIXTURE_DIR}")
    spec = importlib.util.spec_from_file_location("make_weights", FIXTURE_DIR / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = torch.load(FIXTURE_DIR / "expected_seed1_256x512.pt", weights_only=True)
    return module, expected


@pytest.fixture()
def tiny_config() -> Config:
    return load_config("tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model with random weights (seed 0) saved with the SMALL inference sizes."""
    torch.manual_seed(0)
    cfg = load_config("tiny", SMALL)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, build_model(cfg.model), cfg)
    return path
